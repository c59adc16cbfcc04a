"""Patches read from the cache's read-only memory maps are tensors that own writable memory.

A region spanning the trailing axes whole is contiguous, so NumPy hands back a view of the map;
wrapping it with ``torch.from_numpy`` warned ("The given NumPy array is not writable") and, on the
exact-crop path with a float32 cache, returned a tensor aliasing the read-only map. torch's warning
fires once per process, so these tests check the cause instead: every array given to
``torch.from_numpy`` during sampling is writable, and the patch shares no memory with the map.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medssl.transforms import resampling as spatial
from medssl.transforms.spatial import ViewGeometry, _rotation_matrix, sample_patch


@pytest.fixture(params=["float16", "float32"])
def read_only_map(request, tmp_path):
    """A ``(1, 10, 8, 6)`` volume as the cache stores it: ``np.load(..., mmap_mode="r")``."""
    values = np.random.default_rng(0).random((1, 10, 8, 6)).astype(request.param)
    np.save(tmp_path / "image.npy", values)
    image = np.load(tmp_path / "image.npy", mmap_mode="r")
    assert not image.flags.writeable
    return image


@pytest.fixture
def from_numpy_spy(monkeypatch):
    """Records whether each array passed to ``torch.from_numpy`` was writable."""
    seen: list[bool] = []
    original = torch.from_numpy

    def spy(array):
        seen.append(bool(array.flags.writeable))
        return original(array)

    monkeypatch.setattr(spatial.torch, "from_numpy", spy)
    return seen


def _rotated(patch, centre, degrees=4.0):
    """A small rotation about z: its footprint, clipped to the volume, spans y and z whole."""
    return ViewGeometry(patch, centre, _rotation_matrix([0.0, 0.0, math.radians(degrees)]), axis_aligned=False)


CASES = {
    # an exact crop covering y and z whole: the sliced region is a contiguous view of the map
    "exact_crop": (dict(patch=(4, 8, 6), centre=(3.5, 3.5, 2.5), rotate=False), {}),
    # a small rotation whose footprint is clipped to the whole y-z extent: trilinear (unfolded) path
    "trilinear": (dict(patch=(4, 8, 6), centre=(3.5, 3.5, 2.5), rotate=True), {}),
    "trilinear_native": (dict(patch=(4, 8, 6), centre=(3.5, 3.5, 2.5), rotate=True), {"unfolded": False}),
    "nearest": (dict(patch=(4, 8, 6), centre=(3.5, 3.5, 2.5), rotate=True), {"mode": "nearest"}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_patch_from_read_only_map_owns_writable_memory(read_only_map, from_numpy_spy, case):
    spec, options = CASES[case]
    geometry = (_rotated(spec["patch"], spec["centre"]) if spec["rotate"]
                else ViewGeometry(spec["patch"], spec["centre"], np.eye(3)))
    before = np.array(read_only_map)

    patch = sample_patch(read_only_map, geometry, **options)

    assert all(from_numpy_spy), "a read-only view of the map was wrapped by torch.from_numpy"
    assert not np.shares_memory(patch.numpy(), read_only_map)
    if not spec["rotate"]:  # the exact crop still gives the voxels themselves
        np.testing.assert_array_equal(patch.numpy(), before[:, 2:6].astype(np.float32))
    patch.add_(1)  # in-place transforms downstream must be safe
    np.testing.assert_array_equal(np.asarray(read_only_map), before)


@pytest.mark.parametrize("rotate", [False, True], ids=["exact_crop", "bilinear"])
def test_2d_patch_from_read_only_map(tmp_path, from_numpy_spy, rotate):
    np.save(tmp_path / "slice.npy", np.random.default_rng(1).random((1, 10, 8, 1)).astype(np.float16))
    image = np.load(tmp_path / "slice.npy", mmap_mode="r")
    geometry = (ViewGeometry((4, 8), (3.5, 3.5), _rotation_matrix([math.radians(4.0)]), axis_aligned=False)
                if rotate else ViewGeometry((4, 8), (3.5, 3.5), np.eye(2)))

    patch = sample_patch(image, geometry)

    assert patch.shape == (1, 4, 8) and patch.dtype == torch.float32
    assert all(from_numpy_spy) and not np.shares_memory(patch.numpy(), image)
    if not rotate:
        np.testing.assert_array_equal(patch.numpy(), np.asarray(image[:, 2:6, :, 0], np.float32))
