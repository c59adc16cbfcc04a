"""Spatial augmentation as ONE fused resampling per view, read from the cached volume.

Parameters live in the frozen :class:`SpatialAugmentation` (what a modality preset sets).
:func:`draw_view_geometry` draws one view's transform from a NumPy generator: a crop centre plus

    ``x_source = centre + R · S · Q · F · u + d(u)``

for the centred output offset ``u``, with ``F`` flips, ``Q`` a 90-degree rotation, ``S`` scaling,
``R`` a small rotation and ``d`` an elastic B-spline displacement. :func:`sample_patch` then reads
only the bounding region of that view from the (memory-mapped) volume and resamples it once:
trilinear for images, nearest neighbour for label masks (the same geometry keeps image and mask
aligned). Gap filled: MONAI's ``RandSpatialCrop``, ``RandFlip``, ``RandRotate90``, ``RandAffine``
and ``Rand3DElastic`` each resample or copy the array in turn; fusing them costs one lookup per
output voxel (see ``benchmarks/data_throughput.py`` for the measured speed-up).

The random part lives here; applying a geometry is :mod:`medssl.transforms.resampling`
(:class:`ViewGeometry`, :func:`sample_patch`, re-exported here) and the elastic field
:mod:`medssl.transforms.elastic`.

Example:
    >>> rng = np.random.default_rng(0)
    >>> volume = np.random.default_rng(1).random((1, 40, 40, 40), dtype=np.float32)
    >>> geometry = draw_view_geometry(SpatialAugmentation(), (16, 16, 16), (20.0, 20.0, 20.0), rng)
    >>> tuple(sample_patch(volume, geometry).shape)
    (1, 16, 16, 16)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from medssl.transforms.resampling import PaddingMode, ViewGeometry, sample_patch

__all__ = ["PaddingMode", "SpatialAugmentation", "ViewGeometry", "draw_view_geometry", "sample_patch"]


@dataclass(frozen=True)
class SpatialAugmentation:
    """The spatial part of a view augmentation, fused into one resampling by :func:`sample_patch`.

    All parameters are drawn per view. Distances are in voxels of the *cached* volume, which is
    already resampled to ``PreprocessConfig.target_spacing`` (1.5 mm isotropic by default), so one
    voxel is a known number of millimetres.

    Attributes:
        flip_prob: probability of mirroring each spatial axis ``(x, y, z)`` (SimCLR/MoCo-style
            flips; for CT/MR a left-right flip is a plausible anatomy, an up-down one is not, so
            presets may set ``(0.5, 0.0, 0.0)``).
        rot90_prob: probability of one 90-degree rotation (k in {1, 2, 3}, uniform) in a plane
            drawn uniformly from ``rot90_planes``.
        rot90_planes: planes, as pairs of spatial axes, for the 90-degree rotations; ``((0, 1),)``
            is the axial plane. Rotating a plane of unequal patch sides keeps the patch shape (the
            rotation is applied to the sampling grid, not to the output array).
        rotate_prob: probability of a small rotation.
        rotate_range_deg: the small rotation about each axis ``(x, y, z)`` is uniform in
            ``[-r, r]`` degrees (in 2D only the ``z`` entry, the in-plane angle, is used).
        scale_prob: probability of scaling.
        scale_range: the patch covers ``s * patch_size`` voxels of the cached volume, with ``s``
            log-uniform in ``[low, high]``; ``s > 1`` zooms out (a wider field of view squeezed into
            the same patch), ``s < 1`` zooms in.
        isotropic_scale: one factor for all axes (True) or one per axis (False).
        elastic_prob: probability of a smooth random displacement field.
        elastic_magnitude: standard deviation, in cached voxels, of the random displacement of
            each control point of a coarse grid; the dense field is the cubic B-spline through
            them (as TorchIO's ``RandomElasticDeformation``, which simulates soft-tissue motion
            and posture), about 0.35 times as large in standard deviation and never larger than
            the largest control displacement.
        elastic_control_spacing: distance, in output voxels, between elastic control points
            (larger: smoother, more anatomical deformations).
        padding_mode: value used outside the volume (``zeros``: air for CT and background for MR
            after normalisation to [0, 1]).

    Example:
        >>> aug = SpatialAugmentation(flip_prob=(0.5, 0.0, 0.0), rotate_range_deg=(0, 0, 15))
        >>> aug.with_changes(elastic_prob=0.2).elastic_prob
        0.2
        >>> SpatialAugmentation.identity().is_identity
        True
    """

    flip_prob: tuple[float, float, float] = (0.5, 0.5, 0.5)
    rot90_prob: float = 0.0
    rot90_planes: tuple[tuple[int, int], ...] = ((0, 1),)
    rotate_prob: float = 0.5
    rotate_range_deg: tuple[float, float, float] = (10.0, 10.0, 10.0)
    scale_prob: float = 0.5
    scale_range: tuple[float, float] = (0.85, 1.2)
    isotropic_scale: bool = True
    elastic_prob: float = 0.0
    elastic_magnitude: float = 2.0
    elastic_control_spacing: int = 16
    padding_mode: PaddingMode = "zeros"

    def __post_init__(self) -> None:
        object.__setattr__(self, "flip_prob", tuple(float(p) for p in self.flip_prob))
        object.__setattr__(self, "rotate_range_deg", tuple(float(r) for r in self.rotate_range_deg))
        object.__setattr__(self, "scale_range", tuple(float(s) for s in self.scale_range))
        object.__setattr__(self, "rot90_planes", tuple(tuple(int(a) for a in p) for p in self.rot90_planes))
        problems = []
        probs = {"rot90_prob": self.rot90_prob, "rotate_prob": self.rotate_prob,
                 "scale_prob": self.scale_prob, "elastic_prob": self.elastic_prob}
        probs.update({f"flip_prob[{i}]": p for i, p in enumerate(self.flip_prob)})
        for name, value in probs.items():
            if not 0.0 <= value <= 1.0:
                problems.append(f"{name}={value} is not a probability in [0, 1]")
        if len(self.flip_prob) != 3:
            problems.append("flip_prob needs one probability per axis (x, y, z)")
        if len(self.rotate_range_deg) != 3 or any(r < 0 or r > 180 for r in self.rotate_range_deg):
            problems.append("rotate_range_deg needs three angles in [0, 180] (x, y, z)")
        low, high = self.scale_range if len(self.scale_range) == 2 else (0.0, 0.0)
        if len(self.scale_range) != 2 or not 0 < low <= high:
            problems.append(f"scale_range={self.scale_range} must be (low, high) with 0 < low <= high")
        for plane in self.rot90_planes:
            if len(plane) != 2 or plane[0] == plane[1] or not all(0 <= a <= 2 for a in plane):
                problems.append(f"rot90 plane {plane} must be two different axes among 0, 1, 2")
        if self.rot90_prob > 0 and not self.rot90_planes:
            problems.append("rot90_prob > 0 needs at least one plane in rot90_planes")
        if self.elastic_magnitude < 0 or self.elastic_control_spacing < 2:
            problems.append("elastic_magnitude must be >= 0 and elastic_control_spacing >= 2 voxels")
        if self.padding_mode not in ("zeros", "border", "reflection"):
            problems.append(f"padding_mode={self.padding_mode!r} is not zeros, border or reflection")
        if problems:
            from medssl.errors import ConfigError

            raise ConfigError("invalid SpatialAugmentation: " + "; ".join(problems))

    @classmethod
    def identity(cls) -> "SpatialAugmentation":
        """No augmentation at all: a view is the plain crop (used for evaluation and tests)."""
        return cls(flip_prob=(0.0, 0.0, 0.0), rot90_prob=0.0, rotate_prob=0.0, scale_prob=0.0,
                   elastic_prob=0.0)

    @property
    def is_identity(self) -> bool:
        """True when no draw can change the geometry (the patch is an exact crop)."""
        return (not any(self.flip_prob) and self.rot90_prob == 0 and
                (self.rotate_prob == 0 or not any(self.rotate_range_deg)) and
                (self.scale_prob == 0 or self.scale_range == (1.0, 1.0)) and
                (self.elastic_prob == 0 or self.elastic_magnitude == 0))

    def with_changes(self, **changes) -> "SpatialAugmentation":
        """A copy with some fields changed (``dataclasses.replace``)."""
        return replace(self, **changes)


# --------------------------------------------------------------------------------------------
# One view's geometry: drawn from a generator, then applied by one resampling.
# --------------------------------------------------------------------------------------------


def _rotation_matrix(angles_rad: Sequence[float]) -> np.ndarray:
    """``Rz @ Ry @ Rx`` for angles about x, y, z (radians); in 2D the z angle only."""
    if len(angles_rad) == 1:
        (a,) = angles_rad
        return np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    ax, ay, az = angles_rad
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _rot90_matrix(spatial_dims: int, plane: tuple[int, int], k: int) -> np.ndarray:
    """Source-offset matrix whose sampling reproduces ``torch.rot90(crop, k, plane)``.

    ``torch.rot90(a, 1, (p, q))`` gives ``out[.., i_p, .., i_q, ..] = a[.., i_q, .., -i_p, ..]``
    in centred offsets, so the source offset is ``src_p = u_q`` and ``src_q = -u_p``.
    """
    p, q = plane
    one = np.eye(spatial_dims)
    one[p, p] = one[q, q] = 0.0
    one[p, q] = 1.0
    one[q, p] = -1.0
    return np.linalg.matrix_power(one, k % 4)


def draw_view_geometry(
    aug: SpatialAugmentation,
    patch_size: Sequence[int],
    centre: Sequence[float],
    rng: np.random.Generator,
) -> ViewGeometry:
    """Draw one view's flips, 90-degree rotation, small rotation, scaling and elastic field.

    The draws always happen in the same order with the same count (a probability of 0 still
    consumes its uniforms, the elastic control grid is drawn even when unused), so two presets that
    differ in one probability stay comparable and a view's geometry depends only on the
    generator's state (and the patch size).

    Example:
        >>> g = draw_view_geometry(SpatialAugmentation.identity(), (8, 8, 8), (10, 10, 10),
        ...                        np.random.default_rng(0))
        >>> g.axis_aligned, g.matrix.tolist() == np.eye(3).tolist()
        (True, True)
    """
    patch_size = tuple(int(p) for p in patch_size)
    d = len(patch_size)
    if d not in (2, 3):
        raise ValueError(f"patch_size must have 2 or 3 entries, got {patch_size}")
    if len(centre) != d:
        raise ValueError(f"centre {tuple(centre)} does not match patch_size {patch_size}")
    u = rng.random(8)  # one uniform per decision, always drawn
    flips = np.where(rng.random(d) < np.asarray(aug.flip_prob[:d]), -1.0, 1.0)
    matrix = np.diag(flips)
    # 90-degree rotation in a plane that exists in this dimensionality.
    planes = [p for p in aug.rot90_planes if max(p) < d]
    plane_pick, k_pick = u[1], u[2]
    if u[0] < aug.rot90_prob and planes:
        plane = planes[min(int(plane_pick * len(planes)), len(planes) - 1)]
        k = 1 + min(int(k_pick * 3), 2)
        matrix = _rot90_matrix(d, plane, k) @ matrix
    axis_aligned = True
    angle_draw = rng.uniform(-1.0, 1.0, 3)
    if u[3] < aug.rotate_prob and any(aug.rotate_range_deg):
        ranges = np.radians(np.asarray(aug.rotate_range_deg))
        angles = angle_draw * ranges
        angles = angles[2:] if d == 2 else angles
        if np.any(angles != 0):
            matrix = _rotation_matrix(angles) @ matrix
            axis_aligned = False
    scale_draw = rng.random(3)
    low, high = aug.scale_range
    if u[4] < aug.scale_prob and high > low:
        draws = np.full(d, scale_draw[0]) if aug.isotropic_scale else scale_draw[:d]
        scales = np.exp(np.log(low) + draws * (np.log(high) - np.log(low)))
        matrix = np.diag(scales) @ matrix
        axis_aligned = False
    elastic = None
    # control points every ``elastic_control_spacing`` output voxels, plus the B-spline's margin
    grid_shape = tuple(math.ceil(p / aug.elastic_control_spacing) + 3 for p in patch_size)
    control = rng.normal(0.0, 1.0, size=(d, *grid_shape))
    if u[5] < aug.elastic_prob and aug.elastic_magnitude > 0:
        elastic = control * aug.elastic_magnitude
        axis_aligned = False
    if axis_aligned:
        matrix = np.rint(matrix)
    return ViewGeometry(patch_size, tuple(float(c) for c in centre), matrix, elastic, axis_aligned)
