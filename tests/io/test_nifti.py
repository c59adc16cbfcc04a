"""NIfTI through nibabel: its own test data, scaling, 4D/5D, qform/sform, NaN policy, sidecars, saving."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from nibabel.testing import data_path

from medssl.errors import VolumeReadError
from medssl.io import Volume, load_volume, save_volume
from medssl.io.nifti import guess_modality, nifti_summary

NIBABEL_FILES = ["anatomical.nii", "example4d.nii.gz", "example_nifti2.nii.gz", "functional.nii", "standard.nii.gz", "reoriented_anat_moved.nii"]


@pytest.mark.parametrize("name", NIBABEL_FILES)
def test_nibabel_test_files_load_like_nibabel_canonical(name):
    path = f"{data_path}/{name}"
    canonical = nib.as_closest_canonical(nib.load(path))
    data = canonical.get_fdata(dtype=np.float32)
    expected = data[None] if data.ndim == 3 else np.moveaxis(data, -1, 0)
    volume = load_volume(path)
    assert volume.array.dtype == np.float32 and volume.orientation == "RAS"
    np.testing.assert_array_equal(volume.array, expected)
    np.testing.assert_allclose(volume.affine, canonical.affine)
    summary = nifti_summary(path)
    assert summary["shape"] == volume.spatial_shape and summary["channels"] == volume.num_channels
    assert summary["spacing"] == pytest.approx(volume.spacing)


def test_scaling_is_applied(tmp_path):
    stored = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    image = nib.Nifti1Image(stored, np.eye(4))
    image.header.set_slope_inter(2.5, -10.0)
    nib.save(image, tmp_path / "scaled.nii")
    volume = load_volume(tmp_path / "scaled.nii")
    np.testing.assert_allclose(volume.array[0], stored * 2.5 - 10.0)
    assert volume.meta["stored_dtype"] == "int16"


def test_sform_is_preferred_and_qform_used_without_it(tmp_path):
    data = np.zeros((3, 4, 5), np.float32)
    sform, qform = np.diag([2.0, 2.0, 2.0, 1.0]), np.diag([1.0, 1.0, 1.0, 1.0])
    both = nib.Nifti1Image(data, None)
    both.set_sform(sform, code=1)
    both.set_qform(qform, code=1)
    nib.save(both, tmp_path / "both.nii.gz")
    only_q = nib.Nifti1Image(data, None)
    only_q.set_sform(sform, code=0)
    only_q.set_qform(qform, code=1)
    nib.save(only_q, tmp_path / "qform.nii.gz")
    assert load_volume(tmp_path / "both.nii.gz").spacing == (2.0, 2.0, 2.0)
    assert load_volume(tmp_path / "both.nii.gz").meta["affine_source"] == "sform"
    qvolume = load_volume(tmp_path / "qform.nii.gz")
    assert qvolume.spacing == (1.0, 1.0, 1.0) and qvolume.meta["affine_source"] == "qform"


def test_four_and_five_dimensional_images_become_channels(tmp_path):
    four = np.random.default_rng(0).normal(size=(4, 5, 6, 3)).astype(np.float32)
    nib.save(nib.Nifti1Image(four, np.eye(4)), tmp_path / "4d.nii.gz")
    volume = load_volume(tmp_path / "4d.nii.gz")
    assert volume.array.shape == (3, 4, 5, 6)
    np.testing.assert_array_equal(volume.array[2], four[..., 2])
    five = np.zeros((4, 5, 6, 1, 3), np.float32)
    five[..., 0, 1] = 7.0
    nib.save(nib.Nifti1Image(five, np.eye(4)), tmp_path / "vector.nii.gz")
    vector = load_volume(tmp_path / "vector.nii.gz")
    assert vector.array.shape == (3, 4, 5, 6) and vector.array[1].min() == 7.0
    two = nib.Nifti1Image(np.ones((6, 7), np.float32), np.eye(4))
    nib.save(two, tmp_path / "2d.nii")
    assert load_volume(tmp_path / "2d.nii").spatial_shape == (6, 7, 1)


def test_nonfinite_values_follow_the_policy(tmp_path):
    data = np.arange(27, dtype=np.float32).reshape(3, 3, 3)
    data[0, 0, 0], data[1, 1, 1], data[2, 2, 2] = np.nan, np.inf, -np.inf
    data[0, 0, 1] = -5.0
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "nan.nii.gz")
    replaced = load_volume(tmp_path / "nan.nii.gz")
    assert replaced.meta["nonfinite_replaced"] == 3 and np.isfinite(replaced.array).all()
    assert replaced.array[0, 0, 0, 0] == 0.0
    assert replaced.array[0, 1, 1, 1] == 25.0  # +inf -> largest finite value
    assert replaced.array[0, 2, 2, 2] == -5.0  # -inf -> smallest finite value
    with pytest.raises(VolumeReadError, match="3 voxels are NaN or infinite"):
        load_volume(tmp_path / "nan.nii.gz", nonfinite="error")
    kept = load_volume(tmp_path / "nan.nii.gz", nonfinite="keep")
    assert np.isnan(kept.array).sum() == 1 and np.isinf(kept.array).sum() == 2


def test_modality_from_sidecar_or_bids_suffix_and_sidecar_identifiers_dropped(tmp_path):
    save_volume(Volume(np.zeros((1, 2, 2, 2)), np.eye(4)), tmp_path / "sub-01_T2w.nii.gz")
    save_volume(Volume(np.zeros((1, 2, 2, 2)), np.eye(4)), tmp_path / "scan.nii.gz")
    (tmp_path / "scan.json").write_text(
        json.dumps({"Modality": "CT", "Manufacturer": "ACME", "PatientName": "DOE^JANE", "AcquisitionDateTime": "2024-01-01"})
    )
    assert load_volume(tmp_path / "sub-01_T2w.nii.gz").modality == "MR"
    scan = load_volume(tmp_path / "scan.nii.gz")
    assert scan.modality == "CT" and scan.meta["Manufacturer"] == "ACME"
    assert "DOE" not in json.dumps(scan.meta) and "2024" not in json.dumps(scan.meta)
    assert load_volume(tmp_path / "scan.nii.gz", modality="mr").modality == "MR"
    assert guess_modality(tmp_path / "sub-01_ct.nii.gz", {}) == "CT"
    assert guess_modality(tmp_path / "image.nii.gz", {}) == "OT"


def test_save_is_atomic_and_sheared_affines_survive(tmp_path):
    sheared = np.array([[0.7, 0.0, 0.0, 1.0], [0.0, 0.7, 0.54, 2.0], [0.0, 0.0, 2.0, 3.0], [0, 0, 0, 1]])
    volume = Volume(np.random.default_rng(1).normal(size=(2, 4, 5, 6)).astype(np.float32), sheared, "CT")
    path = save_volume(volume, tmp_path / "out" / "sheared.nii.gz")
    assert sorted(p.name for p in path.parent.iterdir()) == ["sheared.nii.gz"]  # no temporary left behind
    header = nib.load(path).header
    assert int(header["sform_code"]) == 1 and int(header["qform_code"]) == 0
    again = load_volume(path)
    np.testing.assert_allclose(again.affine, sheared, atol=1e-6)
    np.testing.assert_array_equal(again.array, volume.array)
    with pytest.raises(ValueError, match=".nii"):
        save_volume(volume, tmp_path / "x.mha")


def test_broken_nifti_files_raise_volume_read_error(tmp_path):
    save_volume(Volume(np.zeros((1, 16, 16, 16)), np.eye(4)), tmp_path / "whole.nii")
    data = (tmp_path / "whole.nii").read_bytes()
    (tmp_path / "cut.nii").write_bytes(data[: len(data) // 2])
    with pytest.raises(VolumeReadError, match="cut.nii"):
        load_volume(tmp_path / "cut.nii")
    (tmp_path / "text.nii").write_text("not an image")
    with pytest.raises(VolumeReadError, match="not a readable NIfTI"):
        load_volume(tmp_path / "text.nii")
    with pytest.raises(VolumeReadError, match="DICOM"):
        load_volume(tmp_path / "whole.nii", series_uid="1.2.3")
