"""Slice-order prediction: cut the patch into slabs along one axis, shuffle them; predict the order.

The volumetric analogue of temporal order verification for video (Misra, Zitnick & Hebert,
"Shuffle and learn", ECCV 2016; Lee et al., "Unsupervised representation learning by sorting
sequences", ICCV 2017), applied to the slice axis of CT and MR: restoring the cranio-caudal order
of slabs needs knowledge of how anatomy changes along the body. A special case of Zhuang et al.'s
Rubik's cube (MICCAI 2019) along one axis.

With ``k`` slabs there are ``k!`` orders: all of them are classes when ``k! <= 24`` (``k <= 4``),
otherwise ``num_permutations`` of maximal Hamming distance (:mod:`medssl.pretext.permutations`).
The patch is cropped (centred) to a multiple of ``k`` along the axis.

Example:
    >>> import torch
    >>> task = SliceOrderPrediction(spatial_dims=3, num_slabs=4)
    >>> shuffled, label = task(torch.rand(1, 8, 8, 16), torch.Generator().manual_seed(0))
    >>> shuffled.shape, task.spec.num_classes
    (torch.Size([1, 8, 8, 16]), 24)
"""

from __future__ import annotations

import math

import torch

from medssl.errors import ConfigError
from medssl.pretext.base import PretextSpec, PretextTask
from medssl.pretext.permutations import maximal_hamming_permutations

__all__ = ["SliceOrderPrediction"]


class SliceOrderPrediction(PretextTask):
    """Shuffle ``num_slabs`` slabs along ``axis`` with permutation ``k``; the target is ``k``.

    Position ``i`` of the input holds original slab ``perm[k][i]``.

    Args:
        spatial_dims: 2 or 3.
        num_slabs: number of slabs (>= 2).
        axis: the spatial axis cut into slabs (default the last one: ``z`` in 3D, ``y`` in 2D).
        num_permutations: classes when ``num_slabs! > 24`` (default 100); otherwise all orders.
        separate: return the slabs as ``(k, C, *slab)`` (each embedded on its own,
            ``spec.num_patches = k``) instead of one reassembled patch.
        permutation_seed: seed of the permutation set.

    Output: ``input`` the reassembled patch ``(C, *S')`` (``S'`` = ``S`` cropped to a multiple of
    ``num_slabs`` along ``axis``) or the slabs ``(k, C, *slab)``; ``target`` int64 scalar.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        num_slabs: int = 4,
        axis: int | None = None,
        num_permutations: int = 100,
        separate: bool = False,
        permutation_seed: int = 0,
    ) -> None:
        if spatial_dims not in (2, 3):
            raise ConfigError(f"slice_order: spatial_dims must be 2 or 3, got {spatial_dims}")
        if int(num_slabs) < 2:
            raise ConfigError(f"slice_order: num_slabs={num_slabs} must be >= 2")
        self.num_slabs = int(num_slabs)
        self.axis = spatial_dims - 1 if axis is None else int(axis)
        if not 0 <= self.axis < spatial_dims:
            raise ConfigError(f"slice_order: axis={axis} is not a spatial axis of a {spatial_dims}D patch")
        count = math.factorial(self.num_slabs) if math.factorial(self.num_slabs) <= 24 else int(num_permutations)
        self.permutation_seed = int(permutation_seed)
        self.permutations = torch.from_numpy(
            maximal_hamming_permutations(self.num_slabs, count, seed=self.permutation_seed).copy()
        )
        self.separate = bool(separate)
        patches = self.num_slabs if self.separate else 1
        self.spec = PretextSpec("slice_order", "class", count, patches, "cross_entropy", spatial_dims)

    def slabs(self, patch: torch.Tensor) -> torch.Tensor:
        """The patch's slabs in their original order, ``(k, C, *slab)``."""
        length = patch.shape[1 + self.axis]
        thickness = length // self.num_slabs
        if thickness < 1:
            raise ValueError(
                f"slice_order: a patch with {length} voxels along axis {self.axis} cannot be cut into "
                f"{self.num_slabs} slabs"
            )
        start = (length - thickness * self.num_slabs) // 2
        kept = patch.narrow(1 + self.axis, start, thickness * self.num_slabs)
        return torch.stack(torch.split(kept, thickness, dim=1 + self.axis))

    def make_pair(self, patch, generator):
        slabs = self.slabs(patch)
        label = torch.randint(len(self.permutations), (), generator=generator, dtype=torch.int64)
        shuffled = slabs[self.permutations[int(label)]]
        if self.separate:
            return shuffled.contiguous(), label
        return torch.cat(list(shuffled), dim=1 + self.axis).contiguous(), label
