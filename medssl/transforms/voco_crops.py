"""VoCo's crops of one volume: a grid of base crops, random crops inside it, and their overlaps.

Paper: Wu et al., "VoCo: A Simple-yet-Effective Volume Contrastive Learning Framework for 3D Medical
Image Analysis", CVPR 2024 (github.com/Luffy03/VoCo). A region of ``grid * patch_size`` voxels is
placed at random in the volume and cut into ``n = prod(grid)`` non-overlapping *base crops* of
``patch_size`` (the paper: 4 x 4 crops of 64^3 side by side in the axial plane, one deep). Then
``num_random`` *random crops* of the same size are drawn anywhere inside the region; the label of a
random crop ``r`` is its overlap with each base crop ``b``, as a fraction of its own volume::

    y_{r,b} = |r ∩ b| / |r| = prod_axes overlap_length_a(r, b) / patch_a

so that ``sum_b y_{r,b} = 1`` (the crop lies inside the region). Crops are plain axis-aligned crops
(flips or rotations would change which base crop a voxel belongs to); intensity augmentation is
applied per crop by the dataset as for any view. Where the volume is smaller than the region, the
region is centred and the outside is padded (``padding_mode`` of the spatial augmentation).

Gap filled: MONAI's crop transforms draw crops independently and return no overlap labels.

Example:
    >>> import numpy as np
    >>> crops = VoCoCropGenerator((8, 8, 8), base_grid=(2, 2, 1), num_random=3)
    >>> item = crops(np.zeros((1, 40, 40, 20), np.float32), np.random.default_rng(0))
    >>> len(item["views"]), tuple(item["views"][0].shape), tuple(item["overlaps"].shape)
    (7, (1, 8, 8, 8), (3, 4))
    >>> bool(np.allclose(item["overlaps"].sum(dim=1).numpy(), 1.0))
    True
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Sequence

import numpy as np
import torch

from medssl.transforms.spatial import PaddingMode, ViewGeometry, sample_patch

__all__ = ["VoCoCropGenerator", "crop_overlaps"]


def crop_overlaps(random_starts: np.ndarray, base_starts: np.ndarray, patch: Sequence[int]) -> np.ndarray:
    """``(R, B)`` fraction of each random crop (starts ``(R, d)``) inside each base crop (``(B, d)``),
    all crops of side ``patch``."""
    size = np.asarray(patch, np.float64)
    low = np.maximum(random_starts[:, None, :], base_starts[None, :, :])
    high = np.minimum(random_starts[:, None, :], base_starts[None, :, :]) + size
    return np.clip(high - low, 0.0, None).prod(axis=2) / float(np.prod(size))


def _crop(image: np.ndarray, start: Sequence[int], patch: tuple[int, ...], padding_mode: PaddingMode) -> torch.Tensor:
    centre = tuple(float(s) + (p - 1) / 2.0 for s, p in zip(start, patch))
    geometry = ViewGeometry(patch_size=patch, centre=centre, matrix=np.eye(len(patch)))
    return sample_patch(image, geometry, padding_mode=padding_mode)


class VoCoCropGenerator:
    """Base crops, random crops and their overlaps (see the module docstring).

    Args:
        patch_size: the side of every crop (2 or 3 sizes).
        base_grid: base crops per axis (default ``(4, 4, 1)`` in 3D, ``(4, 4)`` in 2D: the paper's).
        num_random: random crops per item (4).
        padding_mode: how the region is padded where it leaves the volume.

    ``__call__(image (C, X, Y, Z), rng) -> {"views": [base_1..base_n, random_1..random_R],
    "overlaps": Tensor(R, n)}``, base crops in row-major grid order.
    """

    def __init__(self, patch_size: Sequence[int], base_grid: Sequence[int] | None = None, num_random: int = 4,
                 padding_mode: PaddingMode = "zeros"):
        self.patch_size = tuple(int(p) for p in patch_size)
        d = len(self.patch_size)
        if d not in (2, 3) or min(self.patch_size) < 1:
            raise ValueError(f"patch_size must be 2 or 3 positive sizes, got {tuple(patch_size)}")
        grid = (4, 4, 1)[:d] if base_grid is None else tuple(int(g) for g in base_grid)
        if len(grid) != d or min(grid) < 1 or math.prod(grid) < 2:
            raise ValueError(f"base_grid {tuple(grid)} must give {d} counts >= 1, at least 2 base crops in all")
        if num_random < 1:
            raise ValueError(f"num_random must be >= 1, got {num_random}")
        self.base_grid = grid
        self.num_random = int(num_random)
        self.padding_mode = padding_mode
        self.region = tuple(g * p for g, p in zip(grid, self.patch_size))
        offsets = np.array(list(itertools.product(*[range(g) for g in grid])), np.int64)
        self._base_offsets = offsets * np.asarray(self.patch_size)

    @property
    def num_views(self) -> int:
        return math.prod(self.base_grid) + self.num_random

    def draw(self, shape: Sequence[int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``(base starts (n, d), random starts (R, d))`` in source voxels (integers)."""
        d = len(self.patch_size)
        shape = np.asarray(tuple(int(s) for s in shape)[:d])
        region = np.asarray(self.region)
        room = shape - region
        start = np.where(room >= 0, np.floor(rng.random(d) * (room + 1)), np.floor(room / 2.0)).astype(np.int64)
        span = region - np.asarray(self.patch_size)  # random crops start in [start, start + span]
        random_starts = start + np.floor(rng.random((self.num_random, d)) * (span + 1)).astype(np.int64)
        return start + self._base_offsets, random_starts

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> dict[str, Any]:
        base, random = self.draw(image.shape[1:], rng)
        views = [_crop(image, s, self.patch_size, self.padding_mode) for s in np.concatenate([base, random])]
        overlaps = torch.from_numpy(crop_overlaps(random, base, self.patch_size).astype(np.float32))
        return {"views": views, "overlaps": overlaps}
