"""Corrupted-region prediction: corrupt a few random regions; the target is the mask of changed voxels.

A dense, discriminative pretext task in the spirit of ELECTRA's replaced-token detection (Clark et
al., ICLR 2020) and of anomaly-synthesis pretraining in medical imaging (e.g. Tan et al.,
"Detecting outliers with foreign patch interpolation", MELBA 2022; Schlüter et al., "Natural
synthetic anomalies for self-supervised anomaly detection and localization", ECCV 2022):
segmenting what does not belong needs a model of what normal anatomy and texture look like,
voxel by voxel, which is what a segmentation decoder reuses.

Regions are boxes or ellipsoids (sides a random fraction of the patch) so that the mask's shape
gives no fixed cue; each gets one corruption:

* ``noise``: voxels replaced by uniform noise in [0, 1];
* ``shift``: intensities moved by ``+-d`` (``d ~ U(shift)``, reflected inside [0, 1]: ``x + d``
  unless that exceeds 1, then ``x - d``), changing every voxel;
* ``swap``: the region's content replaced by another region of the same patch (a plausible but
  misplaced texture; flat areas may not change).

The target is exactly ``input != original`` (as float {0, 1}): only visible changes are labelled.

Example:
    >>> import torch
    >>> task = CorruptedRegionPrediction(spatial_dims=3)
    >>> x = torch.rand(1, 16, 16, 16)
    >>> corrupted, mask = task(x, torch.Generator().manual_seed(0))
    >>> bool(torch.equal(mask.bool(), corrupted != x))
    True
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from medssl.errors import ConfigError
from medssl.pretext.base import PretextSpec, PretextTask

__all__ = ["CORRUPTIONS", "CorruptedRegionPrediction", "region_mask"]

CORRUPTIONS = ("noise", "shift", "swap")
SHAPES = ("box", "ellipsoid")


def region_mask(spatial: Sequence[int], centre: Sequence[float], radius: Sequence[float], shape: str) -> torch.Tensor:
    """Boolean mask ``spatial`` of a box (half sides ``radius``) or an ellipsoid (semi-axes ``radius``).

    Voxel ``i`` (centre ``i + 0.5``) is inside when ``|i + 0.5 - c| <= r`` on every axis (box) or
    ``sum(((i + 0.5 - c) / r)^2) <= 1`` (ellipsoid).
    """
    box, local = _region_in_box(spatial, centre, radius, shape)
    mask = torch.zeros(tuple(spatial), dtype=torch.bool)
    mask[box] = local
    return mask


def _region_in_box(spatial, centre, radius, shape) -> tuple[tuple[slice, ...], torch.Tensor]:
    """The region's bounding box (slices) and its mask inside the box (fast: no full-size grid)."""
    box = tuple(
        slice(max(0, int(math.floor(c - r - 0.5))), min(n, int(math.ceil(c + r + 0.5))))
        for n, c, r in zip(spatial, centre, radius)
    )
    axes = torch.meshgrid(
        *[torch.arange(b.start, b.stop, dtype=torch.float32) + 0.5 for b in box], indexing="ij"
    )
    if shape == "box":
        inside = torch.ones(tuple(b.stop - b.start for b in box), dtype=torch.bool)
        for grid, c, r in zip(axes, centre, radius):
            inside &= (grid - c).abs() <= r
        return box, inside
    total = torch.zeros(tuple(b.stop - b.start for b in box))
    for grid, c, r in zip(axes, centre, radius):
        total += ((grid - c) / r) ** 2
    return box, total <= 1.0


class CorruptedRegionPrediction(PretextTask):
    """Corrupt ``k`` random regions; input the corrupted patch, target the mask of changed voxels.

    Args:
        spatial_dims: 2 or 3.
        num_regions: ``(low, high)`` number of regions.
        region_size: ``(low, high)`` full side (box) or diameter (ellipsoid) as a fraction of the
            patch side, per axis.
        shapes: region shapes to draw from (``box``, ``ellipsoid``).
        corruptions: corruption kinds to draw from (``noise``, ``shift``, ``swap``).
        shift: ``(low, high)`` intensity shift for ``shift``, within ``(0, 0.5]``.

    Output: ``input (C, *S)`` float, ``target (C, *S)`` float in {0, 1}.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        num_regions: tuple[int, int] = (1, 4),
        region_size: tuple[float, float] = (0.1, 0.35),
        shapes: Sequence[str] = SHAPES,
        corruptions: Sequence[str] = CORRUPTIONS,
        shift: tuple[float, float] = (0.1, 0.3),
    ) -> None:
        if spatial_dims not in (2, 3):
            raise ConfigError(f"corrupted_region: spatial_dims must be 2 or 3, got {spatial_dims}")
        if not 1 <= int(num_regions[0]) <= int(num_regions[1]):
            raise ConfigError(f"corrupted_region: num_regions={num_regions} must satisfy 1 <= low <= high")
        if not 0.0 < float(region_size[0]) <= float(region_size[1]) <= 1.0:
            raise ConfigError(f"corrupted_region: region_size={region_size} must satisfy 0 < low <= high <= 1")
        if not 0.0 < float(shift[0]) <= float(shift[1]) <= 0.5:
            raise ConfigError(f"corrupted_region: shift={shift} must satisfy 0 < low <= high <= 0.5")
        self.shapes = tuple(shapes)
        self.corruptions = tuple(corruptions)
        if not self.shapes or any(s not in SHAPES for s in self.shapes):
            raise ConfigError(f"corrupted_region: shapes={shapes!r} must be among {SHAPES}")
        if not self.corruptions or any(c not in CORRUPTIONS for c in self.corruptions):
            raise ConfigError(f"corrupted_region: corruptions={corruptions!r} must be among {CORRUPTIONS}")
        self.num_regions = (int(num_regions[0]), int(num_regions[1]))
        self.region_size = (float(region_size[0]), float(region_size[1]))
        self.shift = (float(shift[0]), float(shift[1]))
        self.spec = PretextSpec("corrupted_region", "mask", 0, 1, "bce", spatial_dims)

    def _uniform(self, generator, low, high, size=()):
        return low + (high - low) * torch.rand(size, generator=generator, dtype=torch.float64)

    def make_pair(self, patch, generator):
        spatial = tuple(patch.shape[1:])
        out = patch.clone()
        count = int(torch.randint(self.num_regions[0], self.num_regions[1] + 1, (), generator=generator))
        for _ in range(count):
            shape = self.shapes[int(torch.randint(len(self.shapes), (), generator=generator))]
            kind = self.corruptions[int(torch.randint(len(self.corruptions), (), generator=generator))]
            sizes = self._uniform(generator, *self.region_size, (len(spatial),)) * torch.tensor(spatial)
            radius = (sizes / 2).clamp_min(0.5)
            centre = radius + self._uniform(generator, 0.0, 1.0, (len(spatial),)) * (torch.tensor(spatial) - 2 * radius).clamp_min(0)
            box, inside = _region_in_box(spatial, centre.tolist(), radius.tolist(), shape)
            if not bool(inside.any()):
                continue
            index = (slice(None),) + box
            current = out[index]
            inside = inside.unsqueeze(0).expand_as(current)
            if kind == "noise":
                new = torch.rand(current.shape, generator=generator).to(out.dtype)
            elif kind == "shift":
                delta = float(self._uniform(generator, *self.shift))
                up = current + delta
                new = torch.where(up <= 1.0, up, current - delta)
            else:  # swap: the content of another region of the same size (a random cyclic translation)
                move = [int(torch.randint(-n + 1, n, (), generator=generator)) for n in spatial]
                donor = patch
                for axis, (b, m, n) in enumerate(zip(box, move, spatial)):
                    rows = (torch.arange(b.start, b.stop) - m) % n
                    donor = donor.index_select(axis + 1, rows)
                new = donor
            out[index] = torch.where(inside, new, current)
        mask = (out != patch).to(patch.dtype)
        return out.contiguous(), mask
