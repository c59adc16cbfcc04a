"""A grid of tiles with a gap and a random jitter, shared by jigsaw and relative-position tasks.

Doersch et al. (ICCV 2015) and Noroozi & Favaro (ECCV 2016) cut the image into a grid of cells
and take from each cell a smaller tile at a random offset: the gap between tiles and the jitter
stop the network from solving the task by continuing edges or textures across tile borders
(a low-level shortcut) instead of recognising what the tiles show.

Geometry along each axis of length ``S`` with ``g`` cells: cell size ``c = S // g`` (the grid is
centred; ``S - g c`` leftover voxels are split on both sides), gap ``q = round(gap * c)`` (at
least 0, at most ``c - 1``), tile size ``t = c - q``, and each tile's offset inside its cell is
uniform in ``[0, q]`` (drawn per tile and per axis when ``jitter`` is on, ``q // 2`` otherwise).

Example:
    >>> import torch
    >>> grid = TileGrid(grid=(2, 2, 2), gap=0.25)
    >>> tiles, origins = grid.cut(torch.rand(1, 16, 16, 16), torch.Generator().manual_seed(0))
    >>> tiles.shape, origins.shape
    (torch.Size([8, 1, 6, 6, 6]), torch.Size([8, 3]))
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch

from medssl.errors import ConfigError

__all__ = ["TileGrid"]


@dataclass(frozen=True)
class TileGrid:
    """Cells per axis, the gap between tiles (fraction of a cell) and whether tiles jitter."""

    grid: tuple[int, ...]
    gap: float = 0.25
    jitter: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "grid", tuple(int(g) for g in self.grid))
        if not self.grid or any(g < 1 for g in self.grid):
            raise ConfigError(f"tile grid {self.grid} must have at least one cell per axis")
        if not 0.0 <= float(self.gap) < 1.0:
            raise ConfigError(f"tile gap {self.gap} must be a fraction of the cell in [0, 1)")

    @property
    def num_tiles(self) -> int:
        return math.prod(self.grid)

    def cells(self) -> list[tuple[int, ...]]:
        """Cell indices in row-major order (tile ``i`` of :meth:`cut` is cell ``cells()[i]``)."""
        return list(itertools.product(*(range(g) for g in self.grid)))

    def geometry(self, spatial: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """``(cell size, gap, tile size)`` per axis for a patch of ``spatial`` voxels."""
        if len(spatial) != len(self.grid):
            raise ValueError(f"tile grid {self.grid} does not match a patch with spatial shape {spatial}")
        cell = tuple(s // g for s, g in zip(spatial, self.grid))
        if any(c < 1 for c in cell):
            raise ValueError(f"patch {spatial} is too small for a {self.grid} grid of tiles")
        gap = tuple(min(max(int(round(self.gap * c)), 0), c - 1) for c in cell)
        tile = tuple(c - q for c, q in zip(cell, gap))
        return cell, gap, tile

    def draw_origins(self, spatial: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
        """``(num_tiles, D)`` tile origins in patch voxels (always draws ``num_tiles * D`` integers)."""
        cell, gap, _ = self.geometry(spatial)
        margin = tuple((s - g * c) // 2 for s, g, c in zip(spatial, self.grid, cell))
        cells = torch.tensor(self.cells(), dtype=torch.int64)
        unit = torch.rand((self.num_tiles, len(spatial)), generator=generator, dtype=torch.float64)
        gap_t = torch.tensor(gap, dtype=torch.int64)
        if self.jitter:
            offsets = torch.minimum((unit * (gap_t + 1)).floor().to(torch.int64), gap_t)
        else:
            offsets = (gap_t // 2).expand(self.num_tiles, -1)
        return torch.tensor(margin) + cells * torch.tensor(cell) + offsets

    def crop(self, patch: torch.Tensor, origins: torch.Tensor) -> torch.Tensor:
        """Tiles ``(N, C, *tile)`` of ``patch (C, *S)`` at ``origins (N, D)``."""
        _, _, tile = self.geometry(tuple(patch.shape[1:]))
        tiles = []
        for origin in origins.tolist():
            index = (slice(None),) + tuple(slice(o, o + t) for o, t in zip(origin, tile))
            tiles.append(patch[index])
        return torch.stack(tiles)

    def cut(self, patch: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """All tiles of ``patch (C, *S)`` in cell order and their origins."""
        origins = self.draw_origins(tuple(patch.shape[1:]), generator)
        return self.crop(patch, origins), origins
