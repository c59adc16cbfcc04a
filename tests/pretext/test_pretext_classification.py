"""Class-target pretext tasks: the target is exactly the transformation applied (undoing it
recovers the input), and the permutation sets are far apart and reproducible."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from medssl.pretext.jigsaw import JigsawPuzzle
from medssl.pretext.permutations import maximal_hamming_permutations, min_pairwise_hamming
from medssl.pretext.relative_position import RelativePatchPosition, neighbour_offsets
from medssl.pretext.rotation import RotationPrediction
from medssl.pretext.slice_order import SliceOrderPrediction
from medssl.pretext.tiling import TileGrid


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _patch(shape, seed=0):
    return torch.rand(shape, generator=_gen(seed))


# --- rotation -------------------------------------------------------------------------------


@pytest.mark.parametrize("dims, classes, count", [(2, "planar", 4), (3, "axis_angle", 10), (3, "axial", 4), (3, "cube", 24)])
def test_rotation_classes_are_distinct_and_undo_exactly(dims, classes, count):
    task = RotationPrediction(spatial_dims=dims, classes=classes)
    assert task.spec.num_classes == count
    x = _patch((2,) + (6,) * dims)
    outputs = [task.rotate(x, k) for k in range(count)]
    for k, y in enumerate(outputs):
        assert torch.equal(task.unrotate(y, k), x)
    flat = {tuple(y.flatten().tolist()) for y in outputs}
    assert len(flat) == count, "two classes give the same rotation"


def test_rotation_pair_target_undoes_to_the_input():
    task = RotationPrediction(spatial_dims=3)
    x = _patch((1, 8, 8, 8))
    for seed in range(20):
        rotated, label = task(x, _gen(seed))
        assert torch.equal(task.unrotate(rotated, int(label)), x)


def test_rotation_axis_angle_classes_match_torch_rot90():
    task = RotationPrediction(spatial_dims=3)
    x = _patch((1, 5, 5, 5))
    assert torch.equal(task.rotate(x, 0), x)
    assert torch.equal(task.rotate(x, 1), torch.rot90(x, 1, dims=(2, 3)))  # about x: y towards z
    assert torch.equal(task.rotate(x, 5), torch.rot90(x, 2, dims=(3, 1)))  # about y, 180 degrees
    assert torch.equal(task.rotate(x, 9), torch.rot90(x, 3, dims=(1, 2)))  # about z, 270 degrees


def test_cube_rotations_are_proper_rotations_of_the_cube():
    task = RotationPrediction(spatial_dims=3, classes="cube")
    index = torch.arange(27.0).reshape(1, 3, 3, 3)
    for k in range(24):  # a rotation keeps the centre and maps the 8 corners onto corners
        y = task.rotate(index, k)
        assert float(y[0, 1, 1, 1]) == 13.0
        corners = {float(y[0, i, j, l]) for i, j, l in itertools.product((0, 2), repeat=3)}
        assert corners == {0.0, 2.0, 6.0, 8.0, 18.0, 20.0, 24.0, 26.0}
    # no reflection: a chiral marker pattern is never mirrored (checked via a mirrored copy not being reached)
    mirrored = torch.flip(index, dims=(1,))
    assert all(not torch.equal(task.rotate(index, k), mirrored) for k in range(24))


def test_rotation_refuses_non_cubic_patches_for_quarter_turns():
    with pytest.raises(ValueError, match="equal sides"):
        RotationPrediction(spatial_dims=3).rotate(torch.rand(1, 8, 8, 4), 1)
    axial = RotationPrediction(spatial_dims=3, classes="axial")
    assert axial.rotate(torch.rand(1, 8, 8, 4), 1).shape == (1, 8, 8, 4)


# --- permutations ---------------------------------------------------------------------------


def test_maximal_hamming_permutations_are_valid_far_and_reproducible():
    perms = maximal_hamming_permutations(9, 100, seed=0)
    assert perms.shape == (100, 9)
    assert all(sorted(row) == list(range(9)) for row in perms.tolist())
    assert len({tuple(r) for r in perms.tolist()}) == 100
    assert min_pairwise_hamming(perms) >= 6  # Noroozi's 100-class 3x3 set has minimum distance 6 or more
    assert np.array_equal(perms, maximal_hamming_permutations(9, 100, seed=0))
    assert not np.array_equal(perms, maximal_hamming_permutations(9, 100, seed=1))


def test_maximal_beats_random_selection():
    chosen = min_pairwise_hamming(maximal_hamming_permutations(8, 50, seed=0))
    rng = np.random.default_rng(0)
    random_set = np.array([rng.permutation(8) for _ in range(50)])
    assert chosen > min_pairwise_hamming(random_set)


def test_large_puzzles_use_a_random_candidate_pool():
    perms = maximal_hamming_permutations(27, 30, seed=0, pool_size=2000)
    assert perms.shape == (30, 27) and min_pairwise_hamming(perms) >= 20


def test_all_orders_when_few_items():
    perms = maximal_hamming_permutations(4, 24, seed=0)
    assert {tuple(r) for r in perms.tolist()} == set(itertools.permutations(range(4)))


# --- tiling and jigsaw ----------------------------------------------------------------------


def test_tile_grid_geometry_and_jitter_bounds():
    grid = TileGrid((3, 3, 3), gap=0.25)
    cell, gap, tile = grid.geometry((30, 30, 30))
    assert cell == (10, 10, 10) and gap == (2, 2, 2) and tile == (8, 8, 8)
    origins = torch.stack([grid.draw_origins((30, 30, 30), _gen(s)) for s in range(30)])
    cells = torch.tensor(grid.cells())
    offsets = origins - cells * 10
    assert int(offsets.min()) == 0 and int(offsets.max()) == 2  # jitter spans [0, gap]
    fixed = TileGrid((3, 3, 3), gap=0.25, jitter=False).draw_origins((30, 30, 30), _gen(0))
    assert torch.equal(fixed - cells * 10, torch.ones_like(fixed))


@pytest.mark.parametrize("dims, grid", [(2, (3, 3)), (3, (2, 2, 2))])
def test_jigsaw_label_reorders_the_tiles_back(dims, grid):
    task = JigsawPuzzle(spatial_dims=dims, grid=grid, num_permutations=20)
    x = _patch((1,) + (24,) * dims)
    for seed in range(5):
        shuffled, label = task(x, _gen(seed))
        g = _gen(seed)  # the same stream: the tiles as cut, in cell order
        tiles, origins = task.tiles.cut(x, g)
        assert torch.equal(task.restore_order(shuffled, int(label)), tiles)
        permutation = task.permutations[int(label)]
        for position in range(len(permutation)):
            assert torch.equal(shuffled[position], tiles[permutation[position]])


def test_jigsaw_tile_normalisation():
    task = JigsawPuzzle(spatial_dims=2, num_permutations=10, normalize=True)
    tiles, _ = task(_patch((1, 30, 30)), _gen(0))
    flat = tiles.reshape(tiles.shape[0], -1)
    torch.testing.assert_close(flat.mean(dim=1), torch.zeros(9), atol=1e-5, rtol=0)
    torch.testing.assert_close(flat.std(dim=1), torch.ones(9), atol=1e-3, rtol=0)


# --- relative position ----------------------------------------------------------------------


@pytest.mark.parametrize("dims", [2, 3])
def test_relative_position_label_is_the_neighbour_offset(dims):
    task = RelativePatchPosition(spatial_dims=dims)
    assert task.spec.num_classes == 3**dims - 1 and len(neighbour_offsets(dims)) == task.spec.num_classes
    side = 24 if dims == 3 else 36
    x = torch.randperm(side**dims, generator=_gen(0)).float().reshape((1,) + (side,) * dims)  # unique values
    cell = side // 3
    for seed in range(12):
        pair, label = task(x, _gen(seed))
        located = []
        for tile in pair:  # each tile's origin from its first voxel (values are unique)
            position = (x[0] == tile[0][(0,) * dims]).nonzero()[0]
            located.append(position)
            index = (slice(None),) + tuple(slice(int(p), int(p) + s) for p, s in zip(position, tile.shape[1:]))
            assert torch.equal(x[index], tile)
        centre_cell = located[0] // cell
        neighbour_cell = located[1] // cell
        assert torch.equal(centre_cell, torch.ones(dims, dtype=torch.int64))
        assert tuple((neighbour_cell - centre_cell).tolist()) == task.offsets[int(label)]


# --- slice order ----------------------------------------------------------------------------


@pytest.mark.parametrize("separate", [False, True])
def test_slice_order_label_restores_the_slab_order(separate):
    task = SliceOrderPrediction(spatial_dims=3, num_slabs=4, separate=separate)
    x = _patch((1, 8, 8, 18))  # 18 = 4 * 4 + 2: cropped to 16 along z
    slabs = task.slabs(x)
    assert slabs.shape == (4, 1, 8, 8, 4)
    assert torch.equal(slabs[0], x[..., 1:5])
    for seed in range(10):
        shuffled, label = task(x, _gen(seed))
        parts = shuffled if separate else torch.stack(torch.split(shuffled, 4, dim=3))
        restored = parts[torch.argsort(task.permutations[int(label)])]
        assert torch.equal(restored, slabs)
    assert task.spec.num_patches == (4 if separate else 1)


def test_slice_order_uses_a_hamming_subset_for_many_slabs():
    task = SliceOrderPrediction(spatial_dims=2, num_slabs=6, num_permutations=30)
    assert task.spec.num_classes == 30 and math.factorial(6) > 30
    assert min_pairwise_hamming(task.permutations.numpy()) >= 4
