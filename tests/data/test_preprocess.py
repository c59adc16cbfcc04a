"""Deterministic preprocessing: spacing, HU window, percentile scaling, orientation, mask alignment."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from medssl.config import PreprocessConfig
from medssl.data.preprocess import percentile_window, preprocess_volume
from medssl.errors import DataError
from medssl.io.volume import Volume


def ct_phantom() -> tuple[Volume, Volume]:
    """Air around a soft-tissue box holding a bright 'bone' block; the mask labels the block."""
    array = np.full((1, 24, 20, 10), -1000.0, np.float32)
    array[0, 4:20, 3:17, 2:8] = 40.0
    array[0, 8:14, 6:12, 3:6] = 700.0
    labels = np.zeros_like(array)
    labels[0, 8:14, 6:12, 3:6] = 2.0
    affine = np.diag([1.0, 1.2, 3.0, 1.0])
    affine[:3, 3] = (-10.0, 5.0, 20.0)
    return Volume(array, affine, "CT"), Volume(labels, affine, "SEG")


def world_centroid(volume: Volume, selector) -> np.ndarray:
    index = np.argwhere(selector(volume.array[0]))
    centre = index.mean(axis=0)
    return volume.affine[:3, :3] @ centre + volume.affine[:3, 3]


def test_resampling_reaches_the_target_spacing_and_keeps_the_extent():
    ct, _ = ct_phantom()
    out, _ = preprocess_volume(ct, PreprocessConfig(target_spacing=(1.5, 1.5, 1.5), crop_foreground=False))
    assert out.spacing == pytest.approx((1.5, 1.5, 1.5))
    assert out.orientation == "RAS" and out.array.dtype == np.float32
    extent_in = np.asarray(ct.spatial_shape) * np.asarray(ct.spacing)
    extent_out = np.asarray(out.spatial_shape) * np.asarray(out.spacing)
    assert np.all(np.abs(extent_out - extent_in) <= 1.5)
    # the anatomy stays where it was in world coordinates
    assert np.allclose(world_centroid(out, lambda a: a > 0.8), world_centroid(ct, lambda a: a > 500), atol=1.0)


def test_ct_hounsfield_window_maps_to_unit_range():
    ct, _ = ct_phantom()
    cfg = PreprocessConfig(target_spacing=None, crop_foreground=False, ct_window=(-1000.0, 1000.0))
    out, _ = preprocess_volume(ct, cfg)
    assert out.array.min() == 0.0
    assert np.isclose(out.array[0, 5, 5, 5], (40 + 1000) / 2000)
    assert np.isclose(out.array[0, 10, 8, 4], (700 + 1000) / 2000)
    narrow, _ = preprocess_volume(ct, cfg.model_copy(update={"ct_window": (-100.0, 300.0)}))
    assert narrow.array[0, 10, 8, 4] == 1.0  # clipped above the window
    assert np.isclose(narrow.array[0, 5, 5, 5], (40 + 100) / 400)
    assert out.meta["preprocess"]["intensity_windows"] == [[-1000.0, 1000.0]]


def test_mr_percentile_scaling_of_the_foreground():
    rng = np.random.default_rng(0)
    array = np.zeros((1, 20, 20, 20), np.float32)
    array[0, 4:16, 4:16, 4:16] = rng.uniform(100.0, 500.0, (12, 12, 12))
    mr = Volume(array, np.eye(4), "MR")
    out, _ = preprocess_volume(mr, PreprocessConfig(target_spacing=None, crop_foreground=False,
                                                    mr_percentiles=(1.0, 99.0)))
    inside = out.array[0, 4:16, 4:16, 4:16]
    low, high = np.percentile(array[0, 4:16, 4:16, 4:16], [1.0, 99.0])  # the background is left out
    assert np.isclose(out.meta["preprocess"]["intensity_windows"][0][0], low, rtol=1e-5)
    assert np.isclose(out.meta["preprocess"]["intensity_windows"][0][1], high, rtol=1e-5)
    assert out.array.min() == 0.0 and out.array.max() == 1.0
    assert np.isclose(np.mean(inside >= 1.0), 0.01, atol=0.005)  # the top percent is clipped
    assert np.all(out.array[0, :4] == 0.0)  # background stays at 0
    assert percentile_window(np.zeros(10), (1, 99)) == (0.0, 0.0)


def test_reoriented_input_gives_the_same_result():
    ct, mask = ct_phantom()
    cfg = PreprocessConfig(target_spacing=(2.0, 2.0, 2.0))
    reference, reference_mask = preprocess_volume(ct, cfg, mask)
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip[0, 3] = ct.spatial_shape[0] - 1  # voxel i -> n - 1 - i, same world positions
    las = Volume(ct.array[:, ::-1].copy(), ct.affine @ flip, "CT")
    las_mask = Volume(mask.array[:, ::-1].copy(), mask.affine @ flip, "SEG")
    assert las.orientation == "LAS"
    out, out_mask = preprocess_volume(las, cfg, las_mask)
    assert out.orientation == "RAS"
    assert np.allclose(out.affine, reference.affine, atol=1e-4)
    assert np.allclose(out.array, reference.array, atol=1e-5)
    assert np.array_equal(out_mask.array, reference_mask.array)


def test_mask_stays_aligned_after_resampling_and_cropping():
    ct, mask = ct_phantom()
    cfg = PreprocessConfig(target_spacing=(0.8, 0.8, 1.5), crop_foreground=True, crop_margin=1)
    out, out_mask = preprocess_volume(ct, cfg, mask)
    assert out_mask is not None and out_mask.array.shape == out.array.shape
    assert np.allclose(out_mask.affine, out.affine)
    assert set(np.unique(out_mask.array)) == {0.0, 2.0}  # nearest neighbour: labels preserved
    assert out.spatial_shape[0] < round(24 / 0.8)  # the air around was cropped
    labelled = out_mask.array[0] == 2
    assert np.median(out.array[0][labelled]) == pytest.approx(0.85)  # the labelled voxels are the bright block
    assert out.array[0][labelled].min() > 0.6  # only partial-volume edges are below 0.85
    agreement = np.mean(labelled == (out.array[0] > 0.6))
    assert agreement > 0.97
    assert np.allclose(world_centroid(out_mask, lambda a: a == 2), world_centroid(mask, lambda a: a == 2), atol=0.8)
    box = out.meta["preprocess"]
    assert box["crop_start"] != [0, 0, 0] and box["source_spacing"] == [1.0, 1.2, 3.0]


def test_mask_on_another_grid_is_resampled_onto_the_image(caplog):
    ct, mask = ct_phantom()
    coarse = Volume(mask.array[:, ::2, ::2, :], mask.affine @ np.diag([2.0, 2.0, 1.0, 1.0]), "SEG")
    with caplog.at_level(logging.WARNING, logger="medssl.data.preprocess"):
        out, out_mask = preprocess_volume(ct, PreprocessConfig(target_spacing=(1.5, 1.5, 1.5)), coarse)
    assert "another geometry" in caplog.text
    assert out_mask.array.shape == out.array.shape and out_mask.array.max() == 2.0


def test_preprocessing_is_deterministic_and_validates_the_mask():
    ct, mask = ct_phantom()
    cfg = PreprocessConfig(target_spacing=(1.3, 1.7, 2.1), interpolation="bspline")
    a, _ = preprocess_volume(ct, cfg)
    b, _ = preprocess_volume(ct, cfg)
    assert np.array_equal(a.array, b.array) and 0.0 <= a.array.min() and a.array.max() <= 1.0
    two_channels = Volume(np.concatenate([mask.array, mask.array]), mask.affine, "SEG")
    with pytest.raises(DataError, match="one label map"):
        preprocess_volume(ct, cfg, two_channels)


def test_two_dimensional_images_keep_one_slice():
    image = Volume(np.random.default_rng(0).uniform(0, 255, (1, 30, 20, 1)).astype(np.float32),
                   np.diag([0.3, 0.3, 1.0, 1.0]), "DX")
    out, _ = preprocess_volume(image, PreprocessConfig(target_spacing=(0.6, 0.6, 0.6), crop_foreground=False))
    assert out.spatial_shape[2] == 1 and out.spacing[:2] == pytest.approx((0.6, 0.6))
    assert abs(out.spatial_shape[0] * 0.6 - 9.0) <= 0.6 and abs(out.spatial_shape[1] * 0.6 - 6.0) <= 0.6
