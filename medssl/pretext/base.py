"""What every pretext task shares: its :class:`PretextSpec` and the :class:`PretextTask` call contract.

A pretext task turns one unlabeled patch into an ``(input, target)`` pair whose target the image
itself provides (the rotation applied, the order of shuffled tiles, the original intensities).
The method side (``medssl.methods``) reads the task's :class:`PretextSpec` to build the matching
head and loss:

=============  ==============================================  =========================
target_kind    target                                          head and loss
=============  ==============================================  =========================
``class``      int64 scalar in ``[0, num_classes)``            linear head, cross-entropy
``image``      float tensor shaped like the (single) input     decoder, ``mse`` or ``l1``
``mask``       {0, 1} float tensor shaped like the input       decoder, ``bce``
=============  ==============================================  =========================

With ``num_patches > 1`` the input is ``(N, C, *s)``: ``N`` small patches, each embedded by the
encoder on its own, the embeddings concatenated in order for the class head (jigsaw, relative
position, separated slabs), as in Noroozi & Favaro 2016 and Doersch et al. 2015.

Example:
    >>> spec = PretextSpec("rotation", "class", num_classes=10, num_patches=1, loss="cross_entropy")
    >>> spec.target_kind, spec.num_classes
    ('class', 10)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal

import torch

from medssl.errors import ConfigError

__all__ = ["PretextSpec", "PretextTask", "TargetKind"]

TargetKind = Literal["class", "image", "mask"]
_LOSSES = {"class": ("cross_entropy",), "image": ("mse", "l1"), "mask": ("bce",)}


@dataclass(frozen=True)
class PretextSpec:
    """The shape of a pretext task's output, enough to build a head and a loss.

    Attributes:
        name: the task's registry name.
        target_kind: ``class``, ``image`` or ``mask`` (see the module table).
        num_classes: number of classes for ``class`` targets, 0 otherwise.
        num_patches: 1 for one input patch; ``N > 1`` when the input is ``(N, C, *s)``.
        loss: ``cross_entropy`` (class), ``mse`` or ``l1`` (image), ``bce`` (mask).
        spatial_dims: 2 or 3, the patches the task was built for.
    """

    name: str
    target_kind: TargetKind
    num_classes: int = 0
    num_patches: int = 1
    loss: str = "cross_entropy"
    spatial_dims: int = 3

    def __post_init__(self) -> None:
        if self.target_kind not in _LOSSES:
            raise ConfigError(f"pretext {self.name!r}: target_kind={self.target_kind!r} is not class, image or mask")
        if self.loss not in _LOSSES[self.target_kind]:
            raise ConfigError(
                f"pretext {self.name!r}: loss={self.loss!r} does not fit {self.target_kind} targets "
                f"(use one of {_LOSSES[self.target_kind]})"
            )
        if self.target_kind == "class" and self.num_classes < 2:
            raise ConfigError(f"pretext {self.name!r}: a class target needs num_classes >= 2")
        if self.target_kind != "class" and self.num_classes != 0:
            raise ConfigError(f"pretext {self.name!r}: num_classes must be 0 for {self.target_kind} targets")
        if self.num_patches < 1:
            raise ConfigError(f"pretext {self.name!r}: num_patches must be >= 1")
        if self.spatial_dims not in (2, 3):
            raise ConfigError(f"pretext {self.name!r}: spatial_dims must be 2 or 3")


class PretextTask(ABC):
    """Base class: ``task(patch (C, *S), generator) -> (input, target)``, described by ``spec``.

    Subclasses set ``self.spec`` in ``__init__`` and implement :meth:`make_pair`; ``__call__``
    checks the patch (a float tensor with ``spec.spatial_dims`` spatial axes, channel first) and
    the generator (a CPU ``torch.Generator``: every random draw of the task comes from it, so a
    pair depends only on the patch and the generator state).
    """

    spec: PretextSpec
    #: whether the dataset should apply the modality preset's intensity augmentation to the patch
    #: before the task (read by ``medssl.data.datasets``); the tasks here build their own inputs
    wants_intensity_augmentation: bool = False

    @abstractmethod
    def make_pair(self, patch: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Build ``(input, target)`` from a checked patch."""

    def __call__(self, patch: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        name = self.spec.name
        if not isinstance(patch, torch.Tensor):
            raise TypeError(f"pretext {name!r}: expected a torch.Tensor patch, got {type(patch).__name__}")
        if patch.ndim != self.spec.spatial_dims + 1:
            raise ValueError(
                f"pretext {name!r} was built for {self.spec.spatial_dims}D patches (C, *spatial) but got "
                f"shape {tuple(patch.shape)}; pass spatial_dims={patch.ndim - 1} to build_pretext or drop the batch axis"
            )
        if not patch.is_floating_point():
            patch = patch.to(torch.float32)
        if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
            raise ValueError(f"pretext {name!r}: pass a CPU torch.Generator (medssl.utils.seeding.make_torch_generator)")
        return self.make_pair(patch, generator)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_") and k != "spec")
        return f"{type(self).__name__}({fields})"
