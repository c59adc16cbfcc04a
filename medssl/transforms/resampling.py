"""Applying a view's geometry: read only the bounding region of the cached volume, resample once.

:class:`ViewGeometry` says where and how one patch is sampled (centre, the matrix
``R · S · Q · F``, an optional elastic displacement; see :mod:`medssl.transforms.spatial` for how
they are drawn). :func:`sample_patch` reads only the bounding region of that view from the
(memory-mapped) volume and resamples it once: trilinear for images, nearest neighbour for label
masks (the same geometry keeps image and mask aligned); an axis-aligned view (flips and 90-degree
rotations only) is an exact crop read by slicing. The coordinates are produced slab by slab into
per-thread scratch buffers, so a worker's memory stays constant (the largest view's worth).
Gap filled: MONAI's ``RandSpatialCrop``, ``RandFlip``, ``RandRotate90``, ``RandAffine`` and
``Rand3DElastic`` each resample or copy the array in turn; fusing them costs one lookup per output
voxel (see ``benchmarks/data_throughput.py`` for the measured speed-up).

Example:
    >>> volume = np.arange(4 * 4 * 4, dtype=np.float32).reshape(1, 4, 4, 4)
    >>> flip_x = ViewGeometry((2, 2, 2), (1.5, 1.5, 1.5), np.diag([-1.0, 1.0, 1.0]))
    >>> sample_patch(volume, flip_x)[0, :, 0, 0].tolist()   # x reversed: source x = 2, 1 at y = z = 1
    [37.0, 21.0]
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from medssl.transforms.elastic import elastic_displacement

PaddingMode = Literal["zeros", "border", "reflection"]


@dataclass(frozen=True)
class ViewGeometry:
    """Where and how one patch is sampled from a cached volume.

    A voxel of the output patch at centred offset ``u`` (``u_j = i_j - (P_j - 1) / 2``, in output
    voxels) reads the source (cached volume) at voxel coordinates

        ``x = centre + matrix @ u + displacement(u)``

    where ``matrix = R · S · Q · F`` (small rotation, scaling, 90-degree rotation, flips) and
    ``displacement`` is the optional elastic field, the cubic B-spline through the control
    displacements ``elastic_grid`` (``(d, g_1, ..., g_d)``, source voxels). ``d`` is 3 for volumes and 2 for 2D images.

    ``axis_aligned`` is True when ``matrix`` is a signed permutation (flips and 90-degree rotations
    only) and there is no displacement: the patch is then an exact crop read by slicing.
    """

    patch_size: tuple[int, ...]
    centre: tuple[float, ...]
    matrix: np.ndarray
    elastic_grid: np.ndarray | None = None
    axis_aligned: bool = True

    @property
    def spatial_dims(self) -> int:
        return len(self.patch_size)

    def corners(self) -> np.ndarray:
        """Source coordinates of the patch's corners, ``(2**d, d)`` (without elastic displacement)."""
        half = (np.asarray(self.patch_size, np.float64) - 1.0) / 2.0
        d = self.spatial_dims
        signs = np.array(np.meshgrid(*[[-1.0, 1.0]] * d, indexing="ij")).reshape(d, -1).T
        return np.asarray(self.centre, np.float64) + (signs * half) @ self.matrix.T

    def footprint(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned bounding box ``(low, high)`` of the voxels read, in source voxel coordinates
        (elastic displacement included)."""
        corners = self.corners()
        low, high = corners.min(axis=0), corners.max(axis=0)
        if self.elastic_grid is not None:
            reach = np.abs(self.elastic_grid).reshape(self.spatial_dims, -1).max(axis=1)
            low, high = low - reach, high + reach
        return low, high


# --------------------------------------------------------------------------------------------
# Applying a geometry: read the bounding region only, resample once.
# --------------------------------------------------------------------------------------------


def _read_region(source: np.ndarray, low: Sequence[int], high: Sequence[int]) -> np.ndarray:
    """``source[:, low:high+1, ...]`` (inclusive) as one C-contiguous block.

    A strided region is copied out of the memory map; a region spanning the trailing axes whole is
    already contiguous and comes back as a (read-only) view of the map: see :func:`_owned`.
    """
    index = (slice(None),) + tuple(slice(int(lo), int(hi) + 1) for lo, hi in zip(low, high))
    return np.ascontiguousarray(source[index])


def _owned(block: np.ndarray) -> np.ndarray:
    """``block`` C-contiguous and writable, copied only when it is not already both.

    The cache hands out read-only memory maps. torch cannot wrap read-only memory (``from_numpy``
    warns that writing is undefined, and a tensor of a read-only map faults on an in-place
    transform), so a block that is still a view of the map (a region spanning the trailing axes, an
    unpermuted exact crop) is copied here: the patch-sized region once, never the volume. Blocks
    that an earlier step already copied (the usual strided case) pass through without a copy.
    """
    return np.require(block, requirements=("C", "W"))


def _as_spatial(source: np.ndarray, spatial_dims: int) -> np.ndarray:
    """A ``(C, X, Y, Z)`` source viewed as ``(C, X, Y)`` for 2D patches (``Z == 1`` required)."""
    if source.ndim != 4:
        raise ValueError(f"source must be (C, X, Y, Z), got shape {source.shape}")
    if spatial_dims == 2:
        if source.shape[3] != 1:
            raise ValueError(f"a 2D patch needs a 2D image (Z == 1), got shape {source.shape}")
        return source[..., 0]
    return source


def _exact_crop(source: np.ndarray, geometry: ViewGeometry) -> np.ndarray | None:
    """Slicing path for flips + 90-degree rotations on an integer grid fully inside the volume."""
    matrix = geometry.matrix
    d = geometry.spatial_dims
    perm = [int(np.flatnonzero(matrix[:, j])[0]) for j in range(d)]  # output axis j <- source axis
    signs = [float(matrix[perm[j], j]) for j in range(d)]
    extent = [0] * d
    for j in range(d):
        extent[perm[j]] = geometry.patch_size[j]
    starts = [geometry.centre[a] - (extent[a] - 1) / 2.0 for a in range(d)]
    if any(abs(s - round(s)) > 1e-6 for s in starts):
        return None
    starts = [int(round(s)) for s in starts]
    shape = source.shape[1:]
    if any(s < 0 or s + e > n for s, e, n in zip(starts, extent, shape)):
        return None
    crop = _read_region(source, starts, [s + e - 1 for s, e in zip(starts, extent)])
    crop = np.transpose(crop, [0] + [1 + perm[j] for j in range(d)])
    flip_axes = tuple(1 + j for j in range(d) if signs[j] < 0)
    if flip_axes:
        crop = np.flip(crop, axis=flip_axes)
    return _owned(crop)


class _Workspace(threading.local):
    """Per-thread scratch memory reused from view to view.

    A 96^3 view needs about 40 MB of temporaries (the padded region, coordinates, the sampling
    grid); fresh allocations of that size are served by ``mmap`` and page-faulted on first touch,
    which cost more than the arithmetic (measured: 10 ms of the first 28 ms per view). Reusing grow-only
    buffers keeps a process's memory constant (the largest view's worth) and removes that cost.
    """

    def __init__(self) -> None:
        self.buffers: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape: Sequence[int]) -> torch.Tensor:
        numel = int(np.prod(shape))
        buffer = self.buffers.get(name)
        if buffer is None or buffer.numel() < numel:
            buffer = torch.empty(max(numel, int(1.25 * (buffer.numel() if buffer is not None else 0))),
                                 dtype=torch.float32)
            self.buffers[name] = buffer
        return buffer[:numel].view(*shape)


_WORKSPACE = _Workspace()


class _CoordinateField:
    """The source coordinates of a view's output voxels, produced slab by slab (rows of ``x``).

    ``x_a = centre_a - origin_a + sum_j matrix[a, j] u_j (+ displacement_a)`` is the sum of a vector
    over the first output axis and a small table over the others, so a slab costs one broadcast
    addition per axis (``F.affine_grid`` does a full matrix product per voxel: 10 ms at 96^3).
    """

    def __init__(self, geometry: ViewGeometry, origin: np.ndarray, precomputed: list[torch.Tensor] | None = None):
        self.shape = tuple(geometry.patch_size)
        self.precomputed = precomputed
        if precomputed is not None:
            return
        d = geometry.spatial_dims
        offsets = [torch.arange(p, dtype=torch.float64) - (p - 1) / 2.0 for p in self.shape]
        self.first: list[torch.Tensor] = []
        self.rest: list[torch.Tensor] = []
        for a in range(d):
            first = offsets[0] * float(geometry.matrix[a, 0]) + float(geometry.centre[a] - origin[a])
            rest = None
            for j in range(1, d):
                view = [1] * (d - 1)
                view[j - 1] = self.shape[j]
                term = (offsets[j] * float(geometry.matrix[a, j])).view(view)
                rest = term if rest is None else rest + term
            self.first.append(first.to(torch.float32).view(self.shape[0], *([1] * (d - 1))))
            self.rest.append(rest.to(torch.float32)[None])
        self.displacement = elastic_displacement(geometry.elastic_grid, geometry.patch_size) if geometry.elastic_grid is not None else None

    def fill(self, axis: int, start: int, stop: int, out: torch.Tensor, scale: float = 1.0, shift: float = 0.0) -> None:
        """Write ``scale * x_axis + shift`` for output rows ``start:stop`` into ``out`` (which may be
        a strided view, such as one coordinate of a sampling grid): one pass without elastic."""
        if self.precomputed is not None:
            torch.add(self.precomputed[axis][start:stop] * scale, shift, out=out)
            return
        first = self.first[axis][start:stop]
        if scale != 1.0 or shift != 0.0:
            first = first * scale + shift
        rest = self.rest[axis] if scale == 1.0 else self.rest[axis] * scale
        torch.add(first, rest, out=out)
        if self.displacement is not None:
            displacement = self.displacement[axis, start:stop]
            out.add_(displacement if scale == 1.0 else displacement * scale)

    def slab(self, start: int, stop: int, workspace: bool = True) -> list[torch.Tensor]:
        """Coordinates of output rows ``start:stop``, one ``(stop - start, *rest)`` tensor per axis
        (in reused scratch buffers with ``workspace``: valid until the next slab)."""
        if self.precomputed is not None:
            return [c[start:stop] for c in self.precomputed]
        out = []
        for a, (first, rest) in enumerate(zip(self.first, self.rest)):
            if workspace:
                buffer = _WORKSPACE.get(f"coord{a}", (stop - start, *self.shape[1:]))
                torch.add(first[start:stop], rest, out=buffer)
            else:
                buffer = first[start:stop] + rest
            if self.displacement is not None:
                buffer.add_(self.displacement[a, start:stop])
            out.append(buffer)
        return out


def _source_coordinates(geometry: ViewGeometry, origin: np.ndarray) -> list[torch.Tensor]:
    """Per axis, the source coordinate (voxels, relative to ``origin``) of every output voxel."""
    return _CoordinateField(geometry, origin).slab(0, geometry.patch_size[0], workspace=False)


def _reflect(coordinate: torch.Tensor, length: int) -> torch.Tensor:
    """Mirror coordinates into ``[0, length - 1]`` about the end voxels' centres (``grid_sample``'s
    ``reflection`` padding with ``align_corners=True``)."""
    if length <= 1:
        return torch.zeros_like(coordinate)
    period = 2.0 * (length - 1)
    folded = torch.remainder(coordinate, period)
    return torch.where(folded > length - 1, period - folded, folded)


def _resample_nearest(region: torch.Tensor, coords: list[torch.Tensor], padding_mode: str) -> torch.Tensor:
    """Nearest-neighbour lookup by integer indexing (keeps the dtype: label masks stay uint8)."""
    lengths = region.shape[1:]
    index = None
    valid = None
    for a, c in enumerate(coords):
        r = torch.round(c)  # half to even, as grid_sample's nearest mode
        if padding_mode == "zeros":
            inside = (r >= 0) & (r <= lengths[a] - 1)
            valid = inside if valid is None else valid & inside
        r = r.clamp_(0, lengths[a] - 1).long()
        index = r if index is None else index * lengths[a] + r
    flat = region.reshape(region.shape[0], -1)
    out = flat[:, index.reshape(-1)].reshape(region.shape[0], *coords[0].shape)
    if valid is not None:
        out = out * valid.to(out.dtype)
    return out


def _read_region_unfolded(source: np.ndarray, low: np.ndarray, high: np.ndarray) -> torch.Tensor:
    """The region ``source[:, low:high+1]`` as float32 with one zero plane on each side of ``y`` and
    ``z``, in a reused scratch buffer (valid until the next view).

    float32 is copied by NumPy straight from the map into the buffer (no intermediate block);
    float16 is first read out as one block (:func:`_owned`) and converted by torch's vectorised
    copy, about three times faster than NumPy's float16 conversion (measured at 96^3: 0.9 against
    2.7 ms)."""
    channels = source.shape[0]
    lx, ly, lz = (int(h - l + 1) for l, h in zip(low, high))
    padded = _WORKSPACE.get("region", (channels, lx, ly + 2, lz + 2))
    padded[:, :, 0].zero_()
    padded[:, :, -1].zero_()
    padded[..., 0].zero_()
    padded[..., -1].zero_()
    region = source[:, low[0]:high[0] + 1, low[1]:high[1] + 1, low[2]:high[2] + 1]
    if region.dtype == np.float32:
        np.copyto(padded.numpy()[:, :, 1:-1, 1:-1], region)
    else:
        padded[:, :, 1:-1, 1:-1].copy_(torch.from_numpy(_owned(region)))
    return padded


#: Output voxels per slab of the trilinear path: bounds the scratch memory (about 12 floats per
#: voxel) for large patches; smaller slabs cost more in per-call overhead than they gain in cache
#: locality (measured: 13 ms per 96^3 view in one slab or four, 22 ms in sixty).
SLAB_VOXELS = 1 << 18


def _resample_trilinear_unfolded(padded: torch.Tensor, field: _CoordinateField, padding_mode: str) -> torch.Tensor:
    """Trilinear interpolation as two bilinear lookups in an unfolded 2D image.

    Gap filled: PyTorch's CPU ``grid_sample`` is vectorised for 2D inputs but scalar for 3D ones
    (about 25 ms for a 96^3 patch on one core, plus 10 ms for ``affine_grid``). The region
    ``(C, X, Y, Z)``, read with a zero plane on each side of ``Y`` and ``Z`` (``padded`` is
    ``(C, X, Y + 2, Z + 2)``), is viewed as a 2D image of ``X`` rows and ``Y + 2`` blocks of
    ``Z + 2`` columns. Bilinear interpolation in ``(x, z)`` within block ``floor(y)`` and within the
    next block, blended linearly in ``y``, is exactly trilinear interpolation with zero padding; the
    zero planes keep a block from bleeding into its neighbour. The output is computed in slabs of
    :data:`SLAB_VOXELS` voxels (bounded scratch memory). About three times faster.

    Precision: the unfolded column index reaches ``(Y + 2)(Z + 2)``, so positions are float32 at
    that magnitude: within 1/256 voxel for regions up to 180 voxels a side; the values agree with
    ``grid_sample``'s 3D kernel to about 1e-4 on [0, 1] images (tested), well below the
    float16 cache's own rounding.
    """
    channels, lx, ly2, lz2 = padded.shape
    ly, lz = ly2 - 2, lz2 - 2
    width = ly2 * lz2
    col_scale = 2.0 / (width - 1)
    row_scale = 2.0 / max(lx - 1, 1)
    # the column of (block floor(y) + 1, z + 1) normalised for align_corners=True is
    # z * col_scale + col_shift + floor(y) * block_step
    col_shift = (lz2 + 1) * col_scale - 1.0
    block_step = lz2 * col_scale
    if padding_mode == "border":
        y_bounds, z_bounds = (0.0, float(ly - 1)), (0.0, float(lz - 1))
    else:  # zeros: anything beyond one voxel outside reads the zero planes
        y_bounds, z_bounds = (-1.0, float(ly)), (-1.0, float(lz))
    image = padded.view(1, channels, lx, width)
    shape = field.shape
    out = torch.empty((channels, *shape), dtype=torch.float32)
    rows = max(1, SLAB_VOXELS // int(np.prod(shape[1:])))
    for start in range(0, shape[0], rows):
        stop = min(shape[0], start + rows)
        slab_shape = (stop - start, *shape[1:])
        numel = int(np.prod(slab_shape))
        grid = _WORKSPACE.get("grid", (1, 2, numel, 2))
        # rows (x), normalised, written straight into the grid
        row = grid[0, 0, :, 1].view(slab_shape)
        field.fill(0, start, stop, out=row, scale=row_scale, shift=-1.0)
        if padding_mode == "border":
            row.clamp_(-1.0, 1.0)
        grid[0, 1, :, 1] = grid[0, 0, :, 1]
        # y: floor picks the two blocks, the fraction blends them
        y = _WORKSPACE.get("coord1", slab_shape)
        field.fill(1, start, stop, out=y)
        y.clamp_(*y_bounds)
        y0 = _WORKSPACE.get("floor", slab_shape)
        torch.floor(y, out=y0)
        fy = y.sub_(y0)
        # z, already scaled to the unfolded column
        z = _WORKSPACE.get("coord2", slab_shape)
        field.fill(2, start, stop, out=z, scale=col_scale, shift=col_shift)
        z.clamp_(z_bounds[0] * col_scale + col_shift, z_bounds[1] * col_scale + col_shift)
        column = grid[0, 0, :, 0].view(slab_shape)
        torch.add(z, y0, alpha=block_step, out=column)
        torch.add(column, block_step, out=grid[0, 1, :, 0].view(slab_shape))
        lookups = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=True)[0]
        torch.lerp(lookups[:, 0], lookups[:, 1], fy.view(1, -1), out=out[:, start:stop].view(channels, -1))
    return out


def _resample_linear_native(region: torch.Tensor, coords: list[torch.Tensor], padding_mode: str) -> torch.Tensor:
    """``grid_sample`` on normalised coordinates (2D images; 3D with ``unfolded=False``)."""
    lengths = region.shape[1:]
    normalised = [c * (2.0 / max(n - 1, 1)) - 1.0 for c, n in zip(coords, lengths)]
    grid = torch.stack(normalised[::-1], dim=-1)[None]
    return F.grid_sample(region[None], grid, mode="bilinear", padding_mode=padding_mode, align_corners=True)[0]


def sample_patch(
    source: np.ndarray,
    geometry: ViewGeometry,
    *,
    mode: Literal["linear", "nearest"] = "linear",
    padding_mode: PaddingMode = "zeros",
    unfolded: bool = True,
) -> torch.Tensor:
    """Resample one patch ``(C, *patch_size)`` from ``source`` ``(C, X, Y, Z)`` in one pass.

    Only the bounding region of the voxels the view reads is copied out of ``source`` (which may be
    a read-only ``np.memmap``), so the cost does not grow with the volume. Flips and 90-degree
    rotations of an in-bounds integer crop are exact (slicing); anything else is one resampling of
    the combined transform: trilinear (``mode="linear"``, float32 out) or nearest neighbour
    (``mode="nearest"``, the source dtype kept, for label masks). Gap filled: MONAI's ``RandAffine``
    + ``RandFlip`` + ``RandRotate90`` + ``Rand3DElastic`` resample the whole cropped array once per
    transform and build a dense affine grid; here the crop, flips, rotations, scaling and elastic
    field cost one lookup per output voxel. ``unfolded=False`` uses ``grid_sample``'s 3D kernel
    (slower on CPU, exact to float32 rounding) instead of :func:`_resample_trilinear_unfolded`.

    Example:
        >>> vol = np.arange(4 * 4 * 4, dtype=np.float32).reshape(1, 4, 4, 4)
        >>> g = ViewGeometry((2, 2, 2), (1.5, 1.5, 1.5), np.eye(3))
        >>> bool((sample_patch(vol, g).numpy() == vol[:, 1:3, 1:3, 1:3]).all())
        True
    """
    d = geometry.spatial_dims
    spatial = _as_spatial(source, d)
    shape = np.asarray(spatial.shape[1:])
    linear = mode == "linear"
    if mode not in ("linear", "nearest"):
        raise ValueError(f"mode must be 'linear' or 'nearest', got {mode!r}")
    if geometry.axis_aligned and geometry.elastic_grid is None:
        crop = _exact_crop(spatial, geometry)
        if crop is not None:
            tensor = torch.from_numpy(crop)
            return tensor.float() if linear else tensor
    if padding_mode == "reflection":
        # reflect the coordinates into the volume first (as grid_sample does with align_corners),
        # then the region bounds the reflected positions and no padding is left to do
        coords = [_reflect(c, int(n)) for c, n in zip(_source_coordinates(geometry, np.zeros(d)), shape)]
        low = np.asarray([int(math.floor(float(c.min()))) for c in coords])
        high = np.asarray([int(math.ceil(float(c.max()))) for c in coords])
        padding_mode = "border"
    else:
        coords = None
        low, high = geometry.footprint()
        low = np.floor(low).astype(int)
        high = np.ceil(high).astype(int)
    low = np.clip(low, 0, shape - 1)
    high = np.clip(high, 0, shape - 1)
    if linear:
        for a in range(d):
            if shape[a] < 2:
                raise ValueError(f"cannot interpolate along an axis of size 1 (source shape {source.shape})")
            if high[a] <= low[a]:  # at least two voxels so that interpolation is defined
                if high[a] < shape[a] - 1:
                    high[a] = low[a] + 1
                else:
                    low[a] = high[a] - 1
    if coords is None:
        field = _CoordinateField(geometry, low)
    else:
        field = _CoordinateField(geometry, low, precomputed=[c - float(o) for c, o in zip(coords, low)])
    if linear and d == 3 and unfolded:
        return _resample_trilinear_unfolded(_read_region_unfolded(spatial, low, high), field, padding_mode)
    coords = field.slab(0, geometry.patch_size[0], workspace=False)
    region = torch.from_numpy(_owned(_read_region(spatial, low, high)))
    if not linear:
        return _resample_nearest(region, coords, padding_mode)
    return _resample_linear_native(region.float(), coords, padding_mode)
