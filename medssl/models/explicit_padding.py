"""A 3D convolution that pads its input itself: the workaround for a oneDNN bug in CPU torch.

With torch 2.13.0 on CPU, the weight gradient of a ``Conv3d`` with kernel 7, stride 2 and padding
3 (the ResNet stem) is computed from uninitialised memory when the input is 5 to 7 voxels along an
axis: the gradient changes from call to call, is NaN or ~1e35 in some calls, and an input of 5
corrupts the heap ("corrupted double-linked list", the process aborts). 2D convolutions, other
kernel/stride/padding combinations and the non-oneDNN path (``torch.backends.mkldnn.flags(
enabled=False)`` around forward *and* backward) are exact. Pretext tasks that cut a 3D patch into
small tiles (jigsaw's 2x2x2 grid of a 16^3 patch: 6^3 tiles) hit it; the jigsaw cohort test
diverged at step 2 in about a third of its runs.

The same convolution computed as ``conv3d(pad(x, p), weight, stride, padding=0)`` gives the same
result (zero padding is zero padding) through an unpadded call, which is exact at every size
(checked 7-38 voxels). :class:`ExplicitPaddingConv3d` keeps the module's parameters and names, so
state dicts and transfer are unchanged.

Example::

    >>> import torch
    >>> stem = torch.nn.Conv3d(1, 4, 7, stride=2, padding=3, bias=False)
    >>> safe = ExplicitPaddingConv3d.replacing(stem)
    >>> x = torch.rand(2, 1, 6, 6, 6)
    >>> torch.allclose(safe(x), stem(x), atol=1e-5) and safe.weight is stem.weight
    True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ExplicitPaddingConv3d(nn.Conv3d):
    """``nn.Conv3d`` whose zero padding is applied with ``F.pad`` before an unpadded convolution."""

    @classmethod
    def replacing(cls, conv: nn.Conv3d) -> "ExplicitPaddingConv3d":
        """A module computing ``conv`` that shares its parameters (same ``weight``/``bias`` objects)."""
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError(f"only explicit zero padding can be moved out of the convolution, got "
                             f"padding={conv.padding!r}, padding_mode={conv.padding_mode!r}")
        module = cls.__new__(cls)
        module.__dict__.update(conv.__dict__)  # parameters, buffers, hooks and hyper-parameters as they are
        return module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads: list[int] = []
        for p in reversed(self.padding):  # F.pad: last axis first
            pads += [p, p]
        return F.conv3d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)
