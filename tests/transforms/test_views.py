"""View generators: controlled overlap of two views, multi-crop, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medssl.transforms.spatial import SpatialAugmentation
from medssl.transforms.views import MultiCropGenerator, TwoViewGenerator, nominal_box, view_overlap

AUG = SpatialAugmentation(flip_prob=(0.5, 0.5, 0.5), rot90_prob=0.3, rotate_prob=0.5, scale_prob=0.5,
                          scale_range=(0.85, 1.2))


def inside(geometry, shape) -> bool:
    low, high = nominal_box(geometry)
    n = np.asarray(shape[: geometry.spatial_dims], float)
    extent = high - low
    fits = extent <= n
    # a box that fits lies within [-0.5, n - 0.5] (voxel edges); a larger one covers the axis
    ok_fit = (low >= -0.5 - 1e-6) & (high <= n - 0.5 + 1e-6)
    ok_big = (low <= -0.5 + 1e-6) & (high >= n - 0.5 - 1e-6)
    return bool(np.all(np.where(fits, ok_fit, ok_big)))


@pytest.mark.parametrize("measure", ["iou", "fraction"])
@pytest.mark.parametrize("overlap", [(0.2, 0.4), (0.5, 0.9)])
def test_overlap_lies_in_the_configured_range(measure, overlap):
    generator = TwoViewGenerator(AUG, (12, 12, 12), overlap=overlap, measure=measure)
    rng = np.random.default_rng(0)
    values = []
    for _ in range(100):
        first, second = generator.draw((32, 32, 32), rng)
        values.append(view_overlap(first, second, measure))
        assert inside(first, (32, 32, 32)) and inside(second, (32, 32, 32))
    values = np.asarray(values)
    assert np.all((values >= overlap[0] - 1e-9) & (values <= overlap[1] + 1e-9))
    # the range is actually explored, not one value
    assert values.max() - values.min() > 0.5 * (overlap[1] - overlap[0])


def test_two_dimensional_views_and_more_than_two():
    generator = TwoViewGenerator(AUG, (16, 16), overlap=(0.3, 0.6), num_views=3)
    image = np.random.default_rng(0).random((1, 48, 40, 1), dtype=np.float32)
    views = generator(image, np.random.default_rng(1))
    assert [tuple(v.shape) for v in views] == [(1, 16, 16)] * 3
    geometries = generator.draw(image.shape[1:], np.random.default_rng(2))
    for other in geometries[1:]:
        assert 0.3 - 1e-9 <= view_overlap(geometries[0], other) <= 0.6 + 1e-9


def test_views_are_deterministic_given_the_generator():
    generator = TwoViewGenerator(AUG, (8, 8, 8))
    volume = np.random.default_rng(0).random((1, 24, 24, 24), dtype=np.float32)
    a = generator(volume, np.random.default_rng(5))
    b = generator(volume, np.random.default_rng(5))
    c = generator(volume, np.random.default_rng(6))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_a_volume_smaller_than_the_view_still_gives_views():
    generator = TwoViewGenerator(SpatialAugmentation.identity(), (16, 16, 16), overlap=(0.3, 0.5))
    views = generator(np.ones((1, 10, 20, 12), np.float32), np.random.default_rng(0))
    assert [tuple(v.shape) for v in views] == [(1, 16, 16, 16)] * 2
    assert all(float(v.max()) == 1.0 for v in views)


def test_multicrop_shapes_and_local_crops_inside_a_global_view():
    generator = MultiCropGenerator(AUG, (16, 16, 16), (8, 8, 8), num_local=4, overlap=(0.3, 0.7))
    assert generator.num_views == 6
    volume = np.random.default_rng(0).random((1, 40, 36, 32), dtype=np.float32)
    views = generator(volume, np.random.default_rng(0))
    assert [tuple(v.shape) for v in views] == [(1, 16, 16, 16)] * 2 + [(1, 8, 8, 8)] * 4
    rng = np.random.default_rng(3)
    for _ in range(20):
        geometries = generator.draw(volume.shape[1:], rng)
        globals_ = [nominal_box(g) for g in geometries[:2]]
        for local in geometries[2:]:
            centre = np.asarray(local.centre)
            assert any(np.all(centre >= low - 0.5) and np.all(centre <= high + 0.5) for low, high in globals_)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="overlap"):
        TwoViewGenerator(AUG, (8, 8, 8), overlap=(0.8, 0.2))
    with pytest.raises(ValueError, match="measure"):
        TwoViewGenerator(AUG, (8, 8, 8), measure="dice")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="same number of axes"):
        MultiCropGenerator(AUG, (8, 8, 8), (4, 4), num_local=2)
