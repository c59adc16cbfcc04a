"""The one reorientation rule: nibabel's closest canonical for volumes, Z kept last for 2D images."""

from __future__ import annotations

import itertools

import nibabel as nib
import numpy as np
import pytest

from medssl.io.orientation import orientation_code, reorient_to_ras, reoriented_geometry
from tests.io.helpers import oblique_affine


def _permutation_affines():
    for permutation in itertools.permutations(range(3)):
        for signs in itertools.product((-1.0, 1.0), repeat=3):
            affine = np.zeros((4, 4))
            for axis, (target, sign) in enumerate(zip(permutation, signs)):
                affine[target, axis] = sign * (0.5 + axis)
            affine[:3, 3] = (3.0, -7.0, 11.0)
            affine[3, 3] = 1.0
            yield affine


AFFINES = list(_permutation_affines()) + [oblique_affine(), oblique_affine((60.0, 10.0, -40.0))]


@pytest.mark.parametrize("index", range(len(AFFINES)))
def test_matches_nibabel_as_closest_canonical(index):
    affine = AFFINES[index]
    data = np.random.default_rng(index).normal(size=(2, 4, 5, 6)).astype(np.float32)
    out, out_affine = reorient_to_ras(data, affine)
    image = nib.as_closest_canonical(nib.Nifti1Image(np.moveaxis(data, 0, -1), affine))
    np.testing.assert_array_equal(out, np.moveaxis(np.asarray(image.dataobj), -1, 0))
    np.testing.assert_allclose(out_affine, image.affine)
    shape, geometry_affine = reoriented_geometry(affine, (4, 5, 6))
    assert shape == out.shape[1:]
    np.testing.assert_allclose(geometry_affine, out_affine)
    # every voxel keeps its world position: compare a voxel through both affines
    index_out = np.array([1, 2, 3, 1.0])
    world = out_affine @ index_out
    index_in = np.linalg.solve(affine, world)
    assert out[(0, *index_out[:3].astype(int))] == data[(0, *np.rint(index_in[:3]).astype(int))]


def test_two_dimensional_images_keep_z_last():
    coronal = np.array([[-0.5, 0, 0, 0], [0, 0, -1.0, 0], [0, -0.5, 0, 0], [0, 0, 0, 1.0]])  # rows run to the feet
    data = np.arange(12, dtype=np.float32).reshape(1, 3, 4, 1)
    out, affine = reorient_to_ras(data, coronal)
    assert out.shape == (1, 3, 4, 1) and orientation_code(affine) == "RSA"
    np.testing.assert_array_equal(out[0, :, :, 0], data[0, ::-1, ::-1, 0])
    assert reoriented_geometry(coronal, (3, 4, 1))[0] == (3, 4, 1)
    # a full canonical reorientation would have moved the size-1 axis
    assert nib.as_closest_canonical(nib.Nifti1Image(data[0], coronal)).shape == (3, 1, 4)


def test_canonical_input_is_returned_without_copy():
    data = np.zeros((1, 2, 3, 4), np.float32)
    out, _ = reorient_to_ras(data, np.diag([1.0, 2.0, 3.0, 1.0]))
    assert out is data
