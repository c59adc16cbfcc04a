"""Jigsaw puzzles: shuffle a grid of tiles with one of N permutations; the target is the permutation.

Noroozi & Favaro, "Unsupervised learning of visual representations by solving jigsaw puzzles"
(ECCV 2016), 3x3 tiles in 2D; in 3D over a grid of sub-volumes as Taleb et al., "3D
self-supervised methods for medical imaging" (NeurIPS 2020) and Zhuang et al., "Self-supervised
feature learning for 3D medical images by playing a Rubik's cube" (MICCAI 2019). Putting the
tiles back in order requires recognising which part of the anatomy each tile shows.

The permutation set has maximal Hamming distance and is deterministic given
``permutation_seed`` (:mod:`medssl.pretext.permutations`); tiles are cut with a gap and a random
jitter (:mod:`medssl.pretext.tiling`).

Example:
    >>> import torch
    >>> task = JigsawPuzzle(spatial_dims=3, grid=(2, 2, 2), num_permutations=10)
    >>> tiles, label = task(torch.rand(1, 16, 16, 16), torch.Generator().manual_seed(0))
    >>> tiles.shape, task.spec.num_patches, task.spec.num_classes
    (torch.Size([8, 1, 6, 6, 6]), 8, 10)
"""

from __future__ import annotations

from typing import Sequence

import torch

from medssl.errors import ConfigError
from medssl.pretext.base import PretextSpec, PretextTask
from medssl.pretext.permutations import maximal_hamming_permutations
from medssl.pretext.tiling import TileGrid

__all__ = ["JigsawPuzzle", "normalize_tiles"]


def normalize_tiles(tiles: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Zero mean and unit variance per tile (Noroozi 2016: removes low-level statistics shortcuts)."""
    flat = tiles.reshape(tiles.shape[0], -1)
    mean = flat.mean(dim=1).reshape((-1,) + (1,) * (tiles.ndim - 1))
    std = flat.std(dim=1).reshape((-1,) + (1,) * (tiles.ndim - 1))
    return (tiles - mean) / (std + eps)


class JigsawPuzzle(PretextTask):
    """Cut a grid of tiles, shuffle them with permutation ``k``; input the shuffled tiles, target ``k``.

    Position ``i`` of the input holds original tile ``perm[k][i]`` (tiles in row-major cell
    order), so ``input[argsort(perm[k])]`` are the tiles back in order.

    Args:
        spatial_dims: 2 or 3.
        grid: cells per axis; default ``(3, 3)`` in 2D (Noroozi) and ``(2, 2, 2)`` in 3D (8 tiles
            keep the encoder passes per sample affordable; ``(3, 3, 3)`` is Taleb's setting).
        num_permutations: number of classes (default 100).
        gap: gap between tiles as a fraction of the cell.
        jitter: draw each tile's offset inside its cell at random.
        permutation_seed: seed of the permutation set (part of the task's identity: a pretrained
            head only makes sense with the same set).
        normalize: standardise each tile on its own.

    Output: ``input (N, C, *tile)`` with ``N = prod(grid)``, ``target`` int64 scalar.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        grid: Sequence[int] | None = None,
        num_permutations: int = 100,
        gap: float = 0.25,
        jitter: bool = True,
        permutation_seed: int = 0,
        normalize: bool = False,
    ) -> None:
        if spatial_dims not in (2, 3):
            raise ConfigError(f"jigsaw: spatial_dims must be 2 or 3, got {spatial_dims}")
        grid = tuple(grid) if grid is not None else ((3, 3) if spatial_dims == 2 else (2, 2, 2))
        if len(grid) != spatial_dims:
            raise ConfigError(f"jigsaw: grid={grid} needs {spatial_dims} entries")
        self.tiles = TileGrid(grid, gap, jitter)
        if self.tiles.num_tiles < 2:
            raise ConfigError(f"jigsaw: grid={grid} has fewer than 2 tiles")
        self.permutation_seed = int(permutation_seed)
        self.permutations = torch.from_numpy(
            maximal_hamming_permutations(self.tiles.num_tiles, int(num_permutations), seed=self.permutation_seed).copy()
        )
        self.normalize = bool(normalize)
        self.spec = PretextSpec("jigsaw", "class", int(num_permutations), self.tiles.num_tiles, "cross_entropy", spatial_dims)

    def make_pair(self, patch, generator):
        tiles, _ = self.tiles.cut(patch, generator)
        label = torch.randint(len(self.permutations), (), generator=generator, dtype=torch.int64)
        shuffled = tiles[self.permutations[int(label)]]
        if self.normalize:
            shuffled = normalize_tiles(shuffled)
        return shuffled.contiguous(), label

    def restore_order(self, shuffled: torch.Tensor, label: int) -> torch.Tensor:
        """Tiles back in cell order: ``shuffled[argsort(perm[label])]``."""
        return shuffled[torch.argsort(self.permutations[int(label)])]
