"""Labeled cases for fine-tuning and evaluation: image, mask, case-level label, geometry.

A :class:`LabeledCase` is what fine-tuning and evaluation see of one labeled study: the preprocessed
image ``(C, X, Y, Z)`` (read-only, possibly a memory map of the preprocessing cache), its mask
``(1, X, Y, Z)`` of integer labels, a case-level class and the voxel spacing in mm (for distances).

:func:`remap_mask` turns the label values of a mask into training classes (a study of the liver only
uses ``mask_labels=[1]``: label 1 becomes class 1, every other label background).
:func:`whole_volume_input` is how a whole volume becomes a classifier input: resized so its longest
side fits ``size`` (keeping the proportions of the anatomy), then zero-padded to ``size``
(MONAI ``Resize(size_mode="longest")`` and ``SpatialPad``).

Example:
    >>> import torch
    >>> mask = torch.tensor([[[[0, 1, 2, 4]]]])
    >>> remap_mask(mask, [4, 1]).tolist()
    [[[[0, 2, 0, 1]]]]
    >>> tuple(whole_volume_input(torch.rand(1, 40, 20, 10), (16, 16, 16)).shape)
    (1, 16, 16, 16)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch


@dataclass
class LabeledCase:
    """One labeled case: ``image (C, X, Y, Z)``, ``mask (1, X, Y, Z)`` or None, ``label`` or None."""

    case_id: str
    image: np.ndarray | torch.Tensor
    mask: np.ndarray | torch.Tensor | None = None
    label: int | None = None
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    meta: dict = field(default_factory=dict)

    def image_tensor(self) -> torch.Tensor:
        """The image as a float32 tensor (a writable copy: cached arrays are read-only memory maps)."""
        if isinstance(self.image, torch.Tensor):
            return self.image.detach().to(torch.float32, copy=True)
        return torch.from_numpy(np.array(self.image, dtype=np.float32))

    def mask_tensor(self) -> torch.Tensor:
        """The mask as an int64 tensor (a copy)."""
        if self.mask is None:
            raise ValueError(f"case {self.case_id} has no mask")
        if isinstance(self.mask, torch.Tensor):
            return self.mask.detach().to(torch.int64, copy=True)
        return torch.from_numpy(np.array(self.mask, dtype=np.int64))


def remap_mask(mask: torch.Tensor, mask_labels: Sequence[int] | None) -> torch.Tensor:
    """Mask label values -> classes: ``mask_labels[i]`` becomes class ``i + 1``, the rest 0.

    ``None`` keeps the mask as it is.
    """
    if mask_labels is None:
        return mask.long()
    mask = mask.long()
    table_size = max(int(mask.max()) if mask.numel() else 0, max(mask_labels)) + 1
    lookup = torch.zeros(table_size, dtype=torch.long, device=mask.device)
    for class_index, value in enumerate(mask_labels, start=1):
        lookup[int(value)] = class_index
    return lookup[mask.clamp(min=0)]


def whole_volume_input(image: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``(C, X, Y, Z)`` -> ``(C, *size)``: longest side resized to fit, proportions kept, zero padding.

    ``size`` of length 2 gives a 2D input ``(C, X, Y)`` (the volume must have ``Z == 1``).
    """
    from monai.transforms import Resize, SpatialPad

    image = torch.as_tensor(image, dtype=torch.float32)
    size = tuple(int(s) for s in size)
    if len(size) == 2:
        if image.shape[-1] != 1:
            raise ValueError(f"a 2D input size {size} needs a 2D image (Z == 1), got shape {tuple(image.shape)}")
        image = image[..., 0]
    elif len(size) == 3 and size[2] == 1 and image.shape[-1] == 1:
        image = image[..., 0]
        size = size[:2]
    spatial = image.shape[1:]
    scale = min(s / n for s, n in zip(size, spatial))
    target = tuple(max(1, min(s, int(round(n * scale)))) for s, n in zip(size, spatial))
    mode = "bilinear" if len(size) == 2 else "trilinear"
    resized = Resize(spatial_size=target, mode=mode, align_corners=False, anti_aliasing=scale < 1)(image)
    padded = SpatialPad(spatial_size=size)(resized)
    if hasattr(padded, "as_tensor"):  # MONAI MetaTensor -> plain tensor
        padded = padded.as_tensor()
    return torch.as_tensor(padded, dtype=torch.float32).contiguous()


class WholeVolumeDataset(torch.utils.data.Dataset):
    """Classification training items ``{"image": (C, *size), "label": int}`` from whole volumes.

    Each volume is resized once (:func:`whole_volume_input`) and kept in memory (a few kB per case at
    classifier input sizes). With ``flip_prob`` > 0, item ``i`` of epoch ``e`` is mirrored along each
    axis of ``flip_axes`` with that probability, drawn from ``(seed, e, i)`` only (the cheap
    augmentation that a few labeled cases need; left-right anatomy is mirror-plausible).

    Example:
        >>> import torch
        >>> cases = [LabeledCase("a", torch.rand(1, 20, 20, 10), label=1)]
        >>> ds = WholeVolumeDataset(cases, (16, 16, 16), seed=0)
        >>> item = ds[0]; tuple(item["image"].shape), int(item["label"])
        ((1, 16, 16, 16), 1)
    """

    def __init__(self, cases: Sequence[LabeledCase], size: Sequence[int], *, seed: int,
                 flip_prob: float = 0.5, flip_axes: Sequence[int] = (0,), unlabeled: bool = False):
        missing = [c.case_id for c in cases if c.label is None]
        if missing and not unlabeled:
            raise ValueError(f"classification cases without a label: {missing[:5]}")
        self.images = [whole_volume_input(c.image_tensor(), size) for c in cases]
        self.labels = [-1 if c.label is None else int(c.label) for c in cases]
        self.unlabeled = bool(unlabeled)  # the label travels as "truth" (diagnostics only), -1 if unknown
        self.seed = int(seed)
        self.flip_prob = float(flip_prob)
        self.flip_axes = tuple(int(a) for a in flip_axes)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        from medssl.utils.seeding import make_torch_generator

        image = self.images[index]
        if self.flip_prob > 0:
            generator = make_torch_generator(self.seed, "whole-volume", self.epoch, index)
            draws = torch.rand(len(self.flip_axes), generator=generator)
            axes = [1 + a for a, d in zip(self.flip_axes, draws) if d < self.flip_prob and 1 + a < image.ndim]
            if axes:
                image = torch.flip(image, dims=axes)
        return {"image": image, ("truth" if self.unlabeled else "label"): torch.tensor(self.labels[index], dtype=torch.long)}
