"""View generators: two (or more) views with controlled overlap, and DINO multi-crop.

A *view* is one patch resampled from a cached volume by :func:`medssl.transforms.resampling.sample_patch`
with its own random geometry (crop centre, flips, 90-degree rotation, small rotation, scaling,
elastic field). The generators decide where the views lie relative to each other:

* :class:`TwoViewGenerator`: the centre of the second view is placed so that the overlap of the
  two fields of view lies in a configured range ``[low, high]``. Gap filled: MONAI's
  ``RandSpatialCropSamples`` draws crops independently, so two views of a large CT are often
  disjoint (a negative pair in disguise) or nearly identical (a trivial positive); 3D SSL work
  controls this overlap instead (e.g. the overlap-constrained crops of PCRL, Zhou et al., ICCV
  2021, and of the 3D contrastive baselines compared in the OpenMind benchmark). The target overlap
  ``t`` is drawn uniformly in ``[low, high]``, a direction ``v`` uniformly on the sphere, and the
  shift ``r`` along ``v`` with ``overlap(box_1, box_2 + r v) = t`` is found by bisection (the overlap
  of two boxes decreases monotonically along a ray); directions whose view would leave the volume
  are redrawn, and so is a second view whose scale makes the range unreachable (concentric views
  overlapping less than ``low``). When nothing fits (a volume barely larger than a view), the
  closest placement is kept.
  With ``shared_geometry`` every view is the *same* crop (one geometry drawn, repeated), so the
  views differ only by their intensity augmentation and voxel ``i`` of one view is voxel ``i`` of
  the other: what dense (per-region) objectives such as local contrastive learning need.
* :class:`MultiCropGenerator`: DINO's multi-crop (Caron et al., ICCV 2021): global views as above
  plus ``num_local`` smaller crops, each centred inside the field of view of a randomly chosen
  global view (so local-to-global correspondence holds, as in DINO's crops of one image).

Overlap is measured on the views' nominal fields of view: axis-aligned boxes of
``patch_size x scale`` source voxels (90-degree rotations swap the sides), ignoring the small
rotation and the elastic displacement. ``measure="iou"`` is intersection over union;
``measure="fraction"`` is intersection over the smaller box.

Example:
    >>> import numpy as np
    >>> from medssl.transforms.spatial import SpatialAugmentation
    >>> views = TwoViewGenerator(SpatialAugmentation.identity(), (8, 8, 8), overlap=(0.3, 0.6))
    >>> a, b = views.draw((32, 32, 32), np.random.default_rng(0))
    >>> 0.3 <= view_overlap(a, b) <= 0.6
    True
    >>> [tuple(v.shape) for v in views(np.zeros((1, 32, 32, 32), np.float32), np.random.default_rng(0))]
    [(1, 8, 8, 8), (1, 8, 8, 8)]
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Literal, Sequence

import numpy as np
import torch

from medssl.transforms.spatial import SpatialAugmentation, ViewGeometry, draw_view_geometry, sample_patch

logger = logging.getLogger(__name__)

OverlapMeasure = Literal["iou", "fraction"]

__all__ = ["TwoViewGenerator", "MultiCropGenerator", "view_overlap", "nominal_box", "valid_centre_range"]


def nominal_box(geometry: ViewGeometry) -> tuple[np.ndarray, np.ndarray]:
    """``(low, high)`` of the view's field of view in source voxels, ignoring small rotations and
    elastic displacement: output axis ``j`` covers ``|matrix[:, j]| * P_j`` along the source axis it
    mostly points to."""
    d = geometry.spatial_dims
    extent = np.zeros(d)
    for j in range(d):
        column = geometry.matrix[:, j]
        extent[int(np.argmax(np.abs(column)))] += float(np.linalg.norm(column)) * geometry.patch_size[j]
    centre = np.asarray(geometry.centre, np.float64)
    return centre - extent / 2.0, centre + extent / 2.0


def _box_overlap(low_a, high_a, low_b, high_b, measure: OverlapMeasure) -> float:
    """Overlap of two axis-aligned boxes (plain floats: called thousands of times per item by the
    bisection, where NumPy's per-call overhead on 3-element arrays would dominate)."""
    inter = vol_a = vol_b = 1.0
    for la, ha, lb, hb in zip(low_a, high_a, low_b, high_b):
        inter *= max(0.0, min(ha, hb) - max(la, lb))
        vol_a *= ha - la
        vol_b *= hb - lb
    if measure == "iou":
        denominator = vol_a + vol_b - inter
    elif measure == "fraction":
        denominator = min(vol_a, vol_b)
    else:
        raise ValueError(f"overlap measure must be 'iou' or 'fraction', got {measure!r}")
    return float(inter / denominator) if denominator > 0 else 0.0


def view_overlap(a: ViewGeometry, b: ViewGeometry, measure: OverlapMeasure = "iou") -> float:
    """Overlap of two views' nominal fields of view (``iou`` or ``fraction`` of the smaller)."""
    return _box_overlap(*nominal_box(a), *nominal_box(b), measure)


def valid_centre_range(extent: np.ndarray, shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Per axis, the centres that keep a box of ``extent`` voxels inside ``[0, n - 1]``; where the box
    is larger than the volume, the centres where it still covers the whole axis."""
    n = np.asarray(shape, np.float64)
    low = (extent - 1.0) / 2.0
    high = n - 1.0 - (extent - 1.0) / 2.0
    return np.minimum(low, high), np.maximum(low, high)


def _extent(geometry: ViewGeometry) -> np.ndarray:
    low, high = nominal_box(geometry)
    return high - low


def _draw_centre(extent: np.ndarray, shape: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """A centre drawn uniformly among those keeping the box inside; the start voxel is an integer
    when the extent is (so that unscaled views are exact crops)."""
    low, high = valid_centre_range(extent, shape)
    u = rng.random(len(shape))
    centre = low + u * (high - low)
    starts = centre - (extent - 1.0) / 2.0
    snapped = np.round(starts) + (extent - 1.0) / 2.0
    return np.where((snapped >= low - 1e-9) & (snapped <= high + 1e-9), snapped, centre)


def _snap(centre: np.ndarray, extent: np.ndarray) -> np.ndarray:
    starts = centre - (extent - 1.0) / 2.0
    return np.round(starts) + (extent - 1.0) / 2.0


def _random_direction(d: int, rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=d)
    norm = np.linalg.norm(v)
    return v / norm if norm > 1e-12 else np.eye(d)[0]


def place_overlapping(
    first: ViewGeometry,
    second: ViewGeometry,
    shape: Sequence[int],
    overlap: tuple[float, float],
    measure: OverlapMeasure,
    rng: np.random.Generator,
    max_tries: int = 16,
) -> ViewGeometry:
    """``second`` moved so that its overlap with ``first`` lies in ``overlap`` and it stays inside.

    Tries ``max_tries`` directions (bisection along each, then snapping to integer starts when that
    keeps the overlap in range); if none fits (a volume barely larger than a view), keeps the
    candidate whose overlap is closest to the range and logs it at debug level.
    """
    low_t, high_t = overlap
    d = first.spatial_dims
    extent = _extent(second)
    centre_low, centre_high = valid_centre_range(extent, shape[:d])
    start = np.asarray(first.centre, np.float64)
    target = rng.uniform(low_t, high_t)
    best, best_gap = None, np.inf

    first_low, first_high = nominal_box(first)
    first_box = (first_low.tolist(), first_high.tolist())
    half = (extent / 2.0).tolist()

    def overlap_at(centre: np.ndarray) -> float:
        c = centre.tolist()
        return _box_overlap(*first_box, [v - h for v, h in zip(c, half)], [v + h for v, h in zip(c, half)], measure)

    reach = float(np.sum(first_high - first_low + extent))  # beyond this the boxes are disjoint
    for _ in range(max_tries):
        direction = _random_direction(d, rng)
        lo, hi = 0.0, reach
        if overlap_at(start) <= target:  # even concentric boxes overlap less: stay concentric
            hi = 0.0
        for _ in range(60):
            if hi - lo < 1e-2:
                break
            mid = 0.5 * (lo + hi)
            if overlap_at(start + mid * direction) > target:
                lo = mid
            else:
                hi = mid
        centre = start + hi * direction
        for candidate in (_snap(centre, extent), centre):
            inside = np.all(candidate >= centre_low - 1e-9) and np.all(candidate <= centre_high + 1e-9)
            value = overlap_at(candidate)
            gap = max(low_t - value, value - high_t, 0.0)
            if inside and gap == 0.0:
                return replace(second, centre=tuple(float(c) for c in candidate))
            clamped = np.clip(candidate, centre_low, centre_high)
            value = overlap_at(clamped)
            gap = max(low_t - value, value - high_t, 0.0)
            if gap < best_gap:
                best, best_gap = clamped, gap
    logger.debug("no placement with overlap in %s inside a volume of shape %s; using the closest (gap %.3f)",
                 overlap, tuple(shape), best_gap)
    return replace(second, centre=tuple(float(c) for c in best))


def _check_patch(patch_size: Sequence[int]) -> tuple[int, ...]:
    patch = tuple(int(p) for p in patch_size)
    if len(patch) not in (2, 3) or any(p < 1 for p in patch):
        raise ValueError(f"patch_size must be 2 or 3 positive sizes, got {tuple(patch_size)}")
    return patch


class TwoViewGenerator:
    """``num_views`` views of one volume; every view after the first overlaps the first by an amount
    drawn in ``overlap`` (see the module docstring).

    ``draw(shape, rng)`` returns the geometries (to apply to an image and its mask alike);
    ``__call__(image, rng)`` samples them from ``image`` ``(C, X, Y, Z)`` (a memory map is fine)
    and returns a list of ``(C, *patch_size)`` float32 tensors. ``shared_geometry``: every view
    repeats the first one's geometry (``overlap`` is then ignored; the views are one crop, resampled
    once, to be augmented in intensity independently).
    """

    def __init__(
        self,
        spatial: SpatialAugmentation,
        patch_size: Sequence[int],
        overlap: tuple[float, float] = (0.25, 0.8),
        measure: OverlapMeasure = "iou",
        num_views: int = 2,
        max_tries: int = 16,
        shared_geometry: bool = False,
    ):
        self.spatial = spatial
        self.patch_size = _check_patch(patch_size)
        low, high = (float(v) for v in overlap)
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError(f"overlap must be (low, high) with 0 <= low <= high <= 1, got {overlap}")
        if measure not in ("iou", "fraction"):
            raise ValueError(f"measure must be 'iou' or 'fraction', got {measure!r}")
        if num_views < 1:
            raise ValueError("num_views must be at least 1")
        self.overlap = (low, high)
        self.measure = measure
        self.num_views = int(num_views)
        self.max_tries = int(max_tries)
        self.shared_geometry = bool(shared_geometry)

    def draw(self, shape: Sequence[int], rng: np.random.Generator) -> list[ViewGeometry]:
        d = len(self.patch_size)
        shape = tuple(int(s) for s in shape)[:d]
        zero = (0.0,) * d
        first = draw_view_geometry(self.spatial, self.patch_size, zero, rng)
        first = replace(first, centre=tuple(_draw_centre(_extent(first), shape, rng)))
        if self.shared_geometry:
            return [first] * self.num_views
        views = [first]
        for _ in range(self.num_views - 1):
            # a second view whose scale makes the range unreachable (concentric views overlapping
            # less than the low end) is redrawn, a few times at most
            for _attempt in range(self.max_tries):
                other = draw_view_geometry(self.spatial, self.patch_size, zero, rng)
                concentric = view_overlap(first, replace(other, centre=first.centre), self.measure)
                if concentric >= self.overlap[0]:
                    break
            views.append(place_overlapping(first, other, shape, self.overlap, self.measure, rng, self.max_tries))
        return views

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> list[torch.Tensor]:
        geometries = self.draw(image.shape[1:], rng)
        if self.shared_geometry:  # one resample, copied: the views must start identical
            patch = sample_patch(image, geometries[0], padding_mode=self.spatial.padding_mode)
            return [patch] + [patch.clone() for _ in geometries[1:]]
        return [sample_patch(image, g, padding_mode=self.spatial.padding_mode) for g in geometries]


class MultiCropGenerator:
    """DINO multi-crop: ``num_global`` global views (overlap-controlled, as :class:`TwoViewGenerator`)
    then ``num_local`` local crops of ``local_size``, each centred uniformly inside a randomly chosen
    global view's field of view. ``local_spatial`` defaults to ``spatial``.
    """

    def __init__(
        self,
        spatial: SpatialAugmentation,
        global_size: Sequence[int],
        local_size: Sequence[int],
        num_local: int,
        overlap: tuple[float, float] = (0.25, 0.8),
        measure: OverlapMeasure = "iou",
        num_global: int = 2,
        local_spatial: SpatialAugmentation | None = None,
    ):
        self.globals = TwoViewGenerator(spatial, global_size, overlap, measure, num_views=num_global)
        self.local_size = _check_patch(local_size)
        if len(self.local_size) != len(self.globals.patch_size):
            raise ValueError(f"local_size {self.local_size} and global_size {self.globals.patch_size} "
                             "must have the same number of axes")
        if num_local < 0:
            raise ValueError("num_local must be >= 0")
        self.num_local = int(num_local)
        self.local_spatial = local_spatial or spatial

    @property
    def num_views(self) -> int:
        return self.globals.num_views + self.num_local

    def draw(self, shape: Sequence[int], rng: np.random.Generator) -> list[ViewGeometry]:
        views = self.globals.draw(shape, rng)
        d = len(self.local_size)
        shape = tuple(int(s) for s in shape)[:d]
        zero = (0.0,) * d
        num_global = len(views)
        for _ in range(self.num_local):
            local = draw_view_geometry(self.local_spatial, self.local_size, zero, rng)
            host = views[int(rng.integers(num_global))]
            low, high = nominal_box(host)
            centre_low, centre_high = valid_centre_range(_extent(local), shape)
            lo = np.clip(low + 0.5, centre_low, centre_high)
            hi = np.clip(high - 0.5, centre_low, centre_high)
            centre = lo + rng.random(d) * np.maximum(hi - lo, 0.0)
            snapped = _snap(centre, _extent(local))
            if np.all(snapped >= lo - 1e-9) and np.all(snapped <= hi + 1e-9):
                centre = snapped
            views.append(replace(local, centre=tuple(float(c) for c in centre)))
        return views

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> list[torch.Tensor]:
        geometries = self.draw(image.shape[1:], rng)
        out = []
        for i, g in enumerate(geometries):
            padding = (self.globals.spatial if i < self.globals.num_views else self.local_spatial).padding_mode
            out.append(sample_patch(image, g, padding_mode=padding))
        return out
