"""The fused spatial resampling: exact crops, flips and rotations, the fast trilinear path, masks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medssl.errors import ConfigError
from medssl.transforms.resampling import _source_coordinates
from medssl.transforms.spatial import (
    SpatialAugmentation,
    ViewGeometry,
    _rot90_matrix,
    _rotation_matrix,
    draw_view_geometry,
    sample_patch,
)

PATCH = (8, 8, 8)
CENTRE = (9.5, 10.5, 11.5)  # integer start voxels (6, 7, 8)


@pytest.fixture(scope="module")
def volume() -> np.ndarray:
    return np.random.default_rng(0).random((2, 20, 22, 24), dtype=np.float32)


def crop_of(volume: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(volume[:, 6:14, 7:15, 8:16].copy())


def native_trilinear(volume: np.ndarray, geometry: ViewGeometry, padding: str = "zeros", mode="bilinear"):
    """Reference: grid_sample's own 3D kernel on the whole volume."""
    coords = _source_coordinates(geometry, np.zeros(3))
    source = torch.from_numpy(volume).float()
    normalised = [c * (2.0 / (n - 1)) - 1.0 for c, n in zip(coords, source.shape[1:])]
    grid = torch.stack(normalised[::-1], dim=-1)[None]
    return F.grid_sample(source[None], grid, mode=mode, padding_mode=padding, align_corners=True)[0]


def test_identity_parameters_give_the_exact_crop(volume):
    rng = np.random.default_rng(3)
    geometry = draw_view_geometry(SpatialAugmentation.identity(), PATCH, CENTRE, rng)
    assert geometry.axis_aligned and np.array_equal(geometry.matrix, np.eye(3))
    patch = sample_patch(volume, geometry)
    assert patch.dtype == torch.float32 and torch.equal(patch, crop_of(volume))
    # the interpolating path agrees with the crop too (to float32 rounding)
    forced = ViewGeometry(PATCH, CENTRE, np.eye(3), axis_aligned=False)
    assert torch.allclose(sample_patch(volume, forced), crop_of(volume), atol=1e-5)


@pytest.mark.parametrize("flips", [(-1, 1, 1), (1, -1, 1), (1, 1, -1), (-1, -1, -1)])
def test_flip_matches_torch_flip(volume, flips):
    matrix = np.diag(np.asarray(flips, float))
    dims = tuple(1 + a for a, f in enumerate(flips) if f < 0)
    expected = torch.flip(crop_of(volume), dims)
    assert torch.equal(sample_patch(volume, ViewGeometry(PATCH, CENTRE, matrix)), expected)
    forced = ViewGeometry(PATCH, CENTRE, matrix, axis_aligned=False)
    assert torch.allclose(sample_patch(volume, forced), expected, atol=1e-5)


@pytest.mark.parametrize("plane", [(0, 1), (0, 2), (1, 2)])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_rot90_matches_torch_rot90(volume, plane, k):
    matrix = _rot90_matrix(3, plane, k)
    expected = torch.rot90(crop_of(volume), k, (plane[0] + 1, plane[1] + 1))
    assert torch.equal(sample_patch(volume, ViewGeometry(PATCH, CENTRE, matrix)), expected)
    forced = ViewGeometry(PATCH, CENTRE, matrix, axis_aligned=False)
    assert torch.allclose(sample_patch(volume, forced), expected, atol=1e-5)


def test_small_rotation_of_ninety_degrees_agrees_with_rot90(volume):
    """The rotation convention of the small-rotation path matches the 90-degree path."""
    rotation = _rotation_matrix([0.0, 0.0, math.pi / 2])
    exact = sample_patch(volume, ViewGeometry(PATCH, CENTRE, _rot90_matrix(3, (1, 0), 1)))
    rotated = sample_patch(volume, ViewGeometry(PATCH, CENTRE, rotation, axis_aligned=False))
    assert torch.allclose(rotated, exact, atol=1e-4)


def test_scaling_stretches_a_ramp():
    ramp = np.broadcast_to(np.arange(40, dtype=np.float32)[:, None, None], (40, 40, 40))[None].copy()
    geometry = ViewGeometry((8, 8, 8), (19.5, 19.5, 19.5), np.diag([2.0, 1.0, 1.0]), axis_aligned=False)
    patch = sample_patch(ramp, geometry)[0]
    steps = patch[1:, 0, 0] - patch[:-1, 0, 0]
    assert torch.allclose(steps, torch.full_like(steps, 2.0), atol=1e-4)
    assert torch.allclose(patch[3:5, 0, 0].mean(), torch.tensor(19.5), atol=1e-4)


@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
def test_fast_trilinear_equals_grid_sample(volume, padding):
    aug = SpatialAugmentation(rot90_prob=0.5, rotate_prob=1.0, rotate_range_deg=(30, 30, 30), scale_prob=1.0,
                              scale_range=(0.5, 2.0), elastic_prob=0.5, elastic_magnitude=3.0,
                              elastic_control_spacing=4)
    rng = np.random.default_rng(1)
    for _ in range(12):  # centres partly outside the volume exercise the padding
        geometry = draw_view_geometry(aug, (7, 8, 9), rng.uniform(-4, 26, 3), rng)
        fast = sample_patch(volume, geometry, padding_mode=padding)
        reference = native_trilinear(volume, geometry, padding)
        assert fast.shape == (2, 7, 8, 9)
        assert torch.allclose(fast, reference, atol=2e-4), float((fast - reference).abs().max())
        assert torch.allclose(sample_patch(volume, geometry, padding_mode=padding, unfolded=False), reference,
                              atol=1e-5)


@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
def test_nearest_mode_matches_grid_sample_and_keeps_the_dtype(padding):
    labels = np.random.default_rng(2).integers(0, 4, (1, 16, 18, 20)).astype(np.uint8)
    aug = SpatialAugmentation(rotate_prob=1.0, rotate_range_deg=(20, 20, 20), scale_prob=1.0, elastic_prob=0.5)
    rng = np.random.default_rng(5)
    for _ in range(8):
        geometry = draw_view_geometry(aug, (6, 7, 8), rng.uniform(-2, 18, 3), rng)
        patch = sample_patch(labels, geometry, mode="nearest", padding_mode=padding)
        assert patch.dtype == torch.uint8
        reference = native_trilinear(labels.astype(np.float32), geometry, padding, mode="nearest")
        assert torch.equal(patch.float(), reference)


def test_image_and_mask_stay_aligned():
    grid = np.mgrid[:32, :32, :32].astype(np.float32)
    blob = ((grid[0] - 14) ** 2 / 64 + (grid[1] - 17) ** 2 / 36 + (grid[2] - 15) ** 2 / 49) < 1
    mask = blob[None].astype(np.uint8)
    image = blob[None].astype(np.float32)
    aug = SpatialAugmentation(flip_prob=(0.5, 0.5, 0.5), rot90_prob=0.5, rotate_prob=1.0,
                              rotate_range_deg=(20, 20, 20), scale_prob=1.0, elastic_prob=1.0)
    rng = np.random.default_rng(0)
    for _ in range(6):
        geometry = draw_view_geometry(aug, (16, 16, 16), rng.uniform(12, 18, 3), rng)
        image_patch = sample_patch(image, geometry)[0] > 0.5
        mask_patch = sample_patch(mask, geometry, mode="nearest")[0] > 0
        assert mask_patch.sum() > 50
        dice = 2 * (image_patch & mask_patch).sum() / (image_patch.sum() + mask_patch.sum())
        assert dice > 0.95


def test_same_generator_state_gives_the_same_patch(volume):
    aug = SpatialAugmentation(rot90_prob=0.5, elastic_prob=0.5)
    a = sample_patch(volume, draw_view_geometry(aug, PATCH, CENTRE, np.random.default_rng(7)))
    b = sample_patch(volume, draw_view_geometry(aug, PATCH, CENTRE, np.random.default_rng(7)))
    c = sample_patch(volume, draw_view_geometry(aug, PATCH, CENTRE, np.random.default_rng(8)))
    assert torch.equal(a, b) and not torch.equal(a, c)


class RecordingArray(np.ndarray):
    """An array that remembers the largest block read from it."""

    largest = 0

    def __getitem__(self, index):
        out = super().__getitem__(index)
        if isinstance(out, np.ndarray):
            RecordingArray.largest = max(RecordingArray.largest, out.size)
        return out


def test_only_the_bounding_region_is_read():
    volume = np.zeros((1, 64, 64, 64), np.float32).view(RecordingArray)
    aug = SpatialAugmentation(rotate_prob=1.0, rotate_range_deg=(10, 10, 10), scale_prob=1.0)
    RecordingArray.largest = 0
    geometry = draw_view_geometry(aug, (8, 8, 8), (32.0, 32.0, 32.0), np.random.default_rng(0))
    sample_patch(volume, geometry)
    low, high = geometry.footprint()
    bound = np.prod(np.ceil(high) - np.floor(low) + 1)
    assert 0 < RecordingArray.largest <= bound < 64**3 / 50


def test_two_dimensional_patches():
    image = np.random.default_rng(0).random((1, 30, 28, 1), dtype=np.float32)
    aug = SpatialAugmentation(flip_prob=(0.5, 0.5, 0.0), rot90_prob=1.0, rotate_prob=1.0, elastic_prob=1.0)
    geometry = draw_view_geometry(aug, (12, 10), (15.0, 14.0), np.random.default_rng(0))
    patch = sample_patch(image, geometry)
    assert patch.shape == (1, 12, 10) and geometry.matrix.shape == (2, 2)
    crop = sample_patch(image, ViewGeometry((12, 10), (5.5, 4.5), np.eye(2)))
    assert torch.equal(crop, torch.from_numpy(image[:, :12, :10, 0]))


def test_invalid_parameters_are_refused():
    with pytest.raises(ConfigError, match="flip_prob"):
        SpatialAugmentation(flip_prob=(1.5, 0.0, 0.0))
    with pytest.raises(ConfigError, match="scale_range"):
        SpatialAugmentation(scale_range=(1.2, 0.8))
    with pytest.raises(ConfigError, match="rot90 plane"):
        SpatialAugmentation(rot90_planes=((0, 0),))
    with pytest.raises(ValueError, match="2D"):
        sample_patch(np.zeros((1, 8, 8, 8), np.float32), ViewGeometry((4, 4), (3.5, 3.5), np.eye(2)))
