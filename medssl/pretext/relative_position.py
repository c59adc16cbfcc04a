"""Relative patch position (context prediction): where does the second tile sit around the first?

Doersch, Gupta & Efros, "Unsupervised visual representation learning by context prediction"
(ICCV 2015): a centre tile and one of its 8 neighbours in a 3x3 grid; in 3D the 26 neighbours of a
3x3x3 grid, as Taleb et al., "3D self-supervised methods for medical imaging" (NeurIPS 2020).
Telling above from below or left from right needs a model of the anatomy's layout. Tiles are cut
with a gap and a random jitter (:mod:`medssl.pretext.tiling`) so that the answer cannot be read
off continuing edges.

Classes: the neighbour offsets ``(dx, dy[, dz]) in {-1, 0, 1}^D \\ {0}`` in lexicographic order
(:attr:`RelativePatchPosition.offsets`): in 2D class 0 is ``(-1, -1)`` and class 7 ``(1, 1)``;
in 3D class 0 is ``(-1, -1, -1)``, class 12 ``(0, 0, -1)``, class 13 ``(0, 0, 1)``, class 25
``(1, 1, 1)``.

Example:
    >>> import torch
    >>> task = RelativePatchPosition(spatial_dims=2)
    >>> pair, label = task(torch.rand(1, 24, 24), torch.Generator().manual_seed(0))
    >>> pair.shape, task.spec.num_classes
    (torch.Size([2, 1, 6, 6]), 8)
"""

from __future__ import annotations

import itertools

import torch

from medssl.errors import ConfigError
from medssl.pretext.base import PretextSpec, PretextTask
from medssl.pretext.tiling import TileGrid

__all__ = ["RelativePatchPosition", "neighbour_offsets"]


def neighbour_offsets(spatial_dims: int) -> tuple[tuple[int, ...], ...]:
    """The ``3^D - 1`` neighbour offsets in lexicographic order (class ``k`` is offset ``k``)."""
    return tuple(o for o in itertools.product((-1, 0, 1), repeat=spatial_dims) if any(o))


class RelativePatchPosition(PretextTask):
    """A centre tile and one neighbour tile of a 3-per-axis grid; the target is the neighbour's offset.

    Args:
        spatial_dims: 2 (8 classes) or 3 (26 classes).
        gap: gap between tiles as a fraction of the cell (Doersch: about half a tile).
        jitter: draw each tile's offset inside its cell at random.

    Output: ``input (2, C, *tile)`` = ``[centre, neighbour]``, ``target`` int64 scalar indexing
    :attr:`offsets`.
    """

    def __init__(self, spatial_dims: int = 3, gap: float = 0.25, jitter: bool = True) -> None:
        if spatial_dims not in (2, 3):
            raise ConfigError(f"relative_position: spatial_dims must be 2 or 3, got {spatial_dims}")
        self.tiles = TileGrid((3,) * spatial_dims, gap, jitter)
        self.offsets = neighbour_offsets(spatial_dims)
        cells = self.tiles.cells()
        self._centre = cells.index((1,) * spatial_dims)
        self._neighbour = [cells.index(tuple(1 + d for d in o)) for o in self.offsets]
        self.spec = PretextSpec("relative_position", "class", len(self.offsets), 2, "cross_entropy", spatial_dims)

    def make_pair(self, patch, generator):
        origins = self.tiles.draw_origins(tuple(patch.shape[1:]), generator)
        label = torch.randint(len(self.offsets), (), generator=generator, dtype=torch.int64)
        chosen = origins[[self._centre, self._neighbour[int(label)]]]
        return self.tiles.crop(patch, chosen).contiguous(), label
