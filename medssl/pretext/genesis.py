"""Models Genesis: restore the original patch from a non-linearly remapped, locally shuffled and
in- or out-painted one.

Zhou et al., "Models Genesis: Generic autodidactic models for 3D medical image analysis" (MICCAI
2019; MedIA 2021). Each corruption teaches something a segmentation network needs: the
non-linear intensity curve forces learning tissue appearance (intensity is how organs are told
apart in CT), local pixel shuffling forces learning texture and boundaries, out-painting the
global geometry, in-painting the local continuity of anatomy. ``inpainting`` in the registry is
the in-painting part alone (the context encoder of Pathak et al., CVPR 2016, with noise filling).

The recipe (Genesis defaults): local shuffling with probability 0.5, then the Bezier curve with
probability 0.9, then with probability 0.9 painting: in-painting (probability 0.2) or
out-painting (0.8). The target is the original patch; the loss is MSE.

Deviation from the reference code, for speed (it loops over 10 000 blocks in Python): local
shuffling permutes the voxels inside the cells of a grid of ``b``-sized blocks with a random
offset (a random fraction of the cells), all in one vectorised gather, with 61 random
permutations shared among the cells, instead of shuffling 10 000 blocks placed independently
(overlaps included) each with its own permutation. The local statistics, a random permutation
within small neighbourhoods, are the same.

Example:
    >>> import torch
    >>> task = ModelsGenesis(spatial_dims=3)
    >>> corrupted, original = task(torch.rand(1, 16, 16, 16), torch.Generator().manual_seed(0))
    >>> corrupted.shape == original.shape
    True
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from medssl.errors import ConfigError
from medssl.pretext.base import PretextSpec, PretextTask

__all__ = ["ModelsGenesis", "bezier_lookup", "local_pixel_shuffle", "nonlinear_intensity", "paint_boxes"]

_CURVE_POINTS = 1024
_SHUFFLE_PERMUTATIONS = 61  # prime: neighbouring cells along every axis get different rows


def _rand(generator: torch.Generator, *size: int) -> torch.Tensor:
    return torch.rand(size, generator=generator, dtype=torch.float64)


def bezier_lookup(control: torch.Tensor, inverted: bool, points: int = _CURVE_POINTS) -> tuple[torch.Tensor, torch.Tensor]:
    """``(xs, ys)`` of the cubic Bezier from ``(0, 0)`` through ``control (2, 2)`` to ``(1, 1)``.

    ``xs`` is sorted ascending; ``ys`` sorted ascending (a monotone curve) or, when ``inverted``,
    descending (Genesis pairs the sorted ``x`` with the reversed ``y`` half of the time).
    """
    t = torch.linspace(0.0, 1.0, points, dtype=torch.float64)
    nodes = torch.cat([torch.zeros(1, 2, dtype=torch.float64), control, torch.ones(1, 2, dtype=torch.float64)])
    weights = torch.stack([(1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t**2, t**3], dim=1)
    curve = weights @ nodes
    xs, _ = torch.sort(curve[:, 0])
    ys, _ = torch.sort(curve[:, 1], descending=inverted)
    return xs, ys


def nonlinear_intensity(x: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor, table_size: int = _CURVE_POINTS) -> torch.Tensor:
    """Map ``x`` (in [0, 1]) through the piecewise-linear curve ``(xs, ys)`` (``np.interp`` semantics).

    The curve is first tabulated on ``table_size`` evenly spaced inputs (one small ``searchsorted``),
    then every voxel is a linear interpolation in that uniform table: two gathers instead of a
    binary search per voxel (20x faster on a 96^3 patch; the smooth Bezier curve differs from its
    tabulation by less than 1e-5). Values outside [0, 1] take the end values.
    """
    grid = torch.linspace(0.0, 1.0, table_size, dtype=torch.float64)
    right = torch.searchsorted(xs, grid).clamp(1, len(xs) - 1)
    left = right - 1
    x0, x1 = xs[left], xs[right]
    weight = torch.where(x1 > x0, (grid - x0) / (x1 - x0).clamp_min(1e-12), torch.zeros_like(grid))
    table = torch.lerp(ys[left], ys[right], weight.clamp(0.0, 1.0)).to(device=x.device, dtype=torch.float32)
    position = x.reshape(-1).to(torch.float32).clamp(0.0, 1.0) * (table_size - 1)
    index = position.floor().clamp_(max=table_size - 2)
    fraction = position - index
    index = index.to(torch.int64)
    return torch.lerp(table[index], table[index + 1], fraction).reshape(x.shape).to(x.dtype)


def local_pixel_shuffle(
    patch: torch.Tensor, block: Sequence[int], offset: Sequence[int], chosen: torch.Tensor, keys: torch.Tensor
) -> torch.Tensor:
    """Permute the voxels inside chosen blocks of a grid; the same permutation for every channel.

    ``block`` is the block size per axis, ``offset`` the grid origin, ``chosen (n_cells,)`` bool
    marks the shuffled cells (row-major over the grid) and ``keys (n_cells, block volume)`` random
    sort keys: row ``r`` of ``argsort(keys)`` is permutation ``r``; cell ``i`` uses row
    ``i % len(keys)`` (a few dozen distinct permutations reused across cells is as good as one per
    cell for the task and avoids sorting a key per voxel).
    """
    spatial = tuple(patch.shape[1:])
    counts = [(n - o) // b for n, o, b in zip(spatial, offset, block)]
    if any(c < 1 for c in counts):
        return patch.clone()
    out = patch.clone()
    index = (slice(None),) + tuple(slice(o, o + c * b) for o, c, b in zip(offset, counts, block))
    region = patch[index]
    dims = len(spatial)
    split = [patch.shape[0]]
    for c, b in zip(counts, block):
        split += [c, b]
    blocks = region.reshape(split)
    # (C, c1, b1, c2, b2[, c3, b3]) -> (C, c1, c2[, c3], b1, b2[, b3])
    order = [0] + [1 + 2 * d for d in range(dims)] + [2 + 2 * d for d in range(dims)]
    blocks = blocks.permute(order).reshape(patch.shape[0], math.prod(counts), math.prod(block))
    identity = torch.arange(blocks.shape[-1]).expand(blocks.shape[1], -1)
    rows = torch.argsort(keys, dim=1)
    permutation = rows[torch.arange(blocks.shape[1]) % rows.shape[0]]
    permutation = torch.where(chosen[:, None], permutation, identity)
    shuffled = torch.gather(blocks, 2, permutation.unsqueeze(0).expand_as(blocks).to(blocks.device))
    inverse = [0] * (1 + 2 * dims)
    for position, source in enumerate(order):
        inverse[source] = position
    back = shuffled.reshape([patch.shape[0]] + list(counts) + list(block)).permute(inverse)
    out[index] = back.reshape(region.shape)
    return out


def paint_boxes(target: torch.Tensor, source: torch.Tensor, boxes: Sequence[tuple[Sequence[int], Sequence[int]]]) -> torch.Tensor:
    """Copy ``source`` into ``target`` inside each ``(origin, size)`` box (in place, returns target)."""
    for origin, size in boxes:
        index = (slice(None),) + tuple(slice(int(o), int(o) + int(s)) for o, s in zip(origin, size))
        target[index] = source[index]
    return target


def _draw_boxes(
    generator: torch.Generator, spatial: tuple[int, ...], count: int, low: float, high: float
) -> list[tuple[list[int], list[int]]]:
    """``count`` boxes with sides uniform in ``[low, high] * side`` voxels, placed uniformly."""
    boxes = []
    for _ in range(count):
        sizes, origins = [], []
        for n in spatial:
            lo, hi = max(1, int(low * n)), max(1, int(high * n))
            size = int(torch.randint(lo, hi + 1, (), generator=generator))
            size = min(size, n)
            origins.append(int(torch.randint(0, n - size + 1, (), generator=generator)))
            sizes.append(size)
        boxes.append((origins, sizes))
    return boxes


class ModelsGenesis(PretextTask):
    """The Models Genesis corruption; the target is the original patch.

    Args:
        spatial_dims: 2 or 3.
        nonlinear_prob: probability of the Bezier intensity curve (Genesis 0.9).
        shuffle_prob: probability of local pixel shuffling (Genesis 0.5).
        shuffle_block: ``(low, high)`` block side as a fraction of the patch side (Genesis up to 1/10).
        shuffle_fraction: ``(low, high)`` fraction of the grid cells that get shuffled.
        paint_prob: probability of painting (Genesis 0.9).
        inpaint_rate: probability that painting is in-painting rather than out-painting
            (Genesis 0.2).
        inpaint_boxes: ``(low, high)`` number of in-painted boxes (Genesis up to 5).
        inpaint_size: ``(low, high)`` in-painted box side as a fraction of the patch (1/6 to 1/3).
        outpaint_boxes: ``(low, high)`` number of kept windows in out-painting (Genesis 1 to 5).
        outpaint_size: ``(low, high)`` kept window side as a fraction of the patch (3/7 to 4/7).
        name: registry name reported in the spec.

    Output: ``input`` the corrupted patch, ``target`` the original, both ``(C, *S)`` float.
    Painted voxels are uniform noise in [0, 1], which assumes patches normalised to [0, 1].
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        nonlinear_prob: float = 0.9,
        shuffle_prob: float = 0.5,
        shuffle_block: tuple[float, float] = (0.03, 0.1),
        shuffle_fraction: tuple[float, float] = (0.5, 1.0),
        paint_prob: float = 0.9,
        inpaint_rate: float = 0.2,
        inpaint_boxes: tuple[int, int] = (1, 5),
        inpaint_size: tuple[float, float] = (1 / 6, 1 / 3),
        outpaint_boxes: tuple[int, int] = (1, 5),
        outpaint_size: tuple[float, float] = (3 / 7, 4 / 7),
        name: str = "genesis",
    ) -> None:
        if spatial_dims not in (2, 3):
            raise ConfigError(f"{name}: spatial_dims must be 2 or 3, got {spatial_dims}")
        for key, value in (("nonlinear_prob", nonlinear_prob), ("shuffle_prob", shuffle_prob),
                           ("paint_prob", paint_prob), ("inpaint_rate", inpaint_rate)):
            if not 0.0 <= float(value) <= 1.0:
                raise ConfigError(f"{name}: {key}={value} is not a probability in [0, 1]")
        for key, (low, high) in (("shuffle_block", shuffle_block), ("shuffle_fraction", shuffle_fraction),
                                 ("inpaint_size", inpaint_size), ("outpaint_size", outpaint_size)):
            if not 0.0 <= float(low) <= float(high) <= 1.0:
                raise ConfigError(f"{name}: {key}=({low}, {high}) must satisfy 0 <= low <= high <= 1")
        for key, (low, high) in (("inpaint_boxes", inpaint_boxes), ("outpaint_boxes", outpaint_boxes)):
            if not 1 <= int(low) <= int(high):
                raise ConfigError(f"{name}: {key}=({low}, {high}) must satisfy 1 <= low <= high")
        self.nonlinear_prob = float(nonlinear_prob)
        self.shuffle_prob = float(shuffle_prob)
        self.shuffle_block = tuple(float(v) for v in shuffle_block)
        self.shuffle_fraction = tuple(float(v) for v in shuffle_fraction)
        self.paint_prob = float(paint_prob)
        self.inpaint_rate = float(inpaint_rate)
        self.inpaint_boxes = (int(inpaint_boxes[0]), int(inpaint_boxes[1]))
        self.inpaint_size = tuple(float(v) for v in inpaint_size)
        self.outpaint_boxes = (int(outpaint_boxes[0]), int(outpaint_boxes[1]))
        self.outpaint_size = tuple(float(v) for v in outpaint_size)
        self.spec = PretextSpec(name, "image", 0, 1, "mse", spatial_dims)

    # the three corruptions, each drawing its own parameters -------------------------------------

    def shuffle(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        spatial = tuple(x.shape[1:])
        low, high = self.shuffle_block
        block = [max(1, int(round(n * (low + (high - low) * float(_rand(generator))))) ) for n in spatial]
        block = [min(b, n) for b, n in zip(block, spatial)]
        offset = [int(torch.randint(0, b, (), generator=generator)) for b in block]
        counts = [max((n - o) // b, 0) for n, o, b in zip(spatial, offset, block)]
        cells = math.prod(counts)
        fraction = self.shuffle_fraction[0] + (self.shuffle_fraction[1] - self.shuffle_fraction[0]) * float(_rand(generator))
        chosen = _rand(generator, cells) < fraction
        keys = torch.rand((_SHUFFLE_PERMUTATIONS, math.prod(block)), generator=generator)
        return local_pixel_shuffle(x, block, offset, chosen, keys)

    def remap(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        control = _rand(generator, 2, 2)
        inverted = bool(_rand(generator) < 0.5)
        xs, ys = bezier_lookup(control, inverted)
        return nonlinear_intensity(x, xs, ys)

    def paint(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        spatial = tuple(x.shape[1:])
        inpaint = bool(_rand(generator) < self.inpaint_rate)
        noise = torch.rand(x.shape, generator=generator).to(x.dtype)
        if inpaint:
            count = int(torch.randint(self.inpaint_boxes[0], self.inpaint_boxes[1] + 1, (), generator=generator))
            boxes = _draw_boxes(generator, spatial, count, *self.inpaint_size)
            return paint_boxes(x.clone(), noise, boxes)
        count = int(torch.randint(self.outpaint_boxes[0], self.outpaint_boxes[1] + 1, (), generator=generator))
        boxes = _draw_boxes(generator, spatial, count, *self.outpaint_size)
        return paint_boxes(noise, x, boxes)

    def make_pair(self, patch, generator):
        x = patch
        if _rand(generator) < self.shuffle_prob:
            x = self.shuffle(x, generator)
        if _rand(generator) < self.nonlinear_prob:
            x = self.remap(x, generator)
        if _rand(generator) < self.paint_prob:
            x = self.paint(x, generator)
        return x.contiguous(), patch.clone()
