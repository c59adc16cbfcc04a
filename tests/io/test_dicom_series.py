"""DICOM series the tests write themselves: sorting, geometry, gaps, several series, broken files,
checked against the source volume, against NIfTI and against SimpleITK as an independent reader."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless, RLELossless

from medssl.errors import VolumeReadError
from medssl.io import Volume, load_volume, save_volume
from medssl.io.dicom_write import write_dicom_series
from medssl.io.orientation import reorient_to_ras
from tests.io.helpers import oblique_affine, random_ct, sitk_series, truncate

AXIAL = np.diag([0.7, 0.8, 2.5, 1.0])


def _expected(volume: Volume) -> tuple[np.ndarray, np.ndarray]:
    return reorient_to_ras(volume.array, volume.affine)


def _assert_same_volume(loaded: Volume, source: Volume, atol: float = 1e-4) -> None:
    array, affine = _expected(source)
    assert loaded.array.shape == array.shape
    np.testing.assert_array_equal(loaded.array, array)
    np.testing.assert_allclose(loaded.affine, affine, atol=atol)


def test_slices_are_sorted_by_position_not_by_file_name_or_instance_number(tmp_path):
    rng = np.random.default_rng(3)
    source = random_ct((12, 10, 9), AXIAL, seed=1)
    names = [f"{n:08d}" for n in rng.permutation(9) * 7 + 100]  # shuffled names, no extension
    write_dicom_series(source, tmp_path / "shuffled", instance_order="shuffled", file_names=names, rng=rng)
    write_dicom_series(source, tmp_path / "reversed", instance_order="reversed")
    for folder in ("shuffled", "reversed"):
        _assert_same_volume(load_volume(tmp_path / folder, salt="t"), source)
    assert not any(os.path.splitext(name)[1] for name in os.listdir(tmp_path / "shuffled"))


def test_flipped_axes_are_reoriented_to_ras(tmp_path):
    affine = np.diag([-0.7, 0.8, -2.5, 1.0])
    affine[:3, 3] = (50.0, -20.0, 80.0)
    source = random_ct((8, 7, 6), affine, seed=2)
    write_dicom_series(source, tmp_path)
    loaded = load_volume(tmp_path, salt="t")
    assert loaded.orientation == "RAS"
    np.testing.assert_array_equal(loaded.array[0], source.array[0, ::-1, :, ::-1])
    _assert_same_volume(loaded, source)


@pytest.mark.parametrize("syntax", [None, RLELossless, JPEG2000Lossless], ids=["explicit-le", "rle", "j2k-lossless"])
def test_oblique_series_matches_simpleitk_and_keeps_true_geometry(tmp_path, syntax):
    source = random_ct((32, 40, 4), oblique_affine(), seed=4)  # JPEG 2000 needs 32 pixels a side
    kwargs = {"transfer_syntax_uid": syntax} if syntax else {}
    write_dicom_series(source, tmp_path, instance_order="shuffled", **kwargs)
    loaded = load_volume(tmp_path, salt="t")
    assert source.orientation == "ALS" and loaded.orientation == "RAS"
    assert loaded.spatial_shape == (40, 32, 4)  # X and Y swapped by the reorientation
    _assert_same_volume(loaded, source)
    sitk_array, sitk_affine = reorient_to_ras(*sitk_series(tmp_path))
    np.testing.assert_array_equal(loaded.array, sitk_array)
    np.testing.assert_allclose(loaded.affine, sitk_affine, atol=1e-4)
    world_of_voxel = loaded.affine @ np.array([1.0, 2.0, 3.0, 1.0])
    value = loaded.array[0, 1, 2, 3]
    source_index = np.linalg.solve(source.affine, world_of_voxel)
    assert np.allclose(source_index, np.round(source_index), atol=1e-3)
    assert source.array[0][tuple(np.round(source_index[:3]).astype(int))] == value


def test_nifti_and_dicom_copies_of_a_volume_load_identically(tmp_path):
    source = random_ct((9, 11, 8), oblique_affine((-10.0, 80.0, 15.0), (1.1, 0.6, 3.0)), seed=5)
    write_dicom_series(source, tmp_path / "dicom")
    save_volume(source, tmp_path / "ct.nii.gz")
    from_dicom = load_volume(tmp_path / "dicom", salt="t")
    from_nifti = load_volume(tmp_path / "ct.nii.gz")
    np.testing.assert_array_equal(from_dicom.array, from_nifti.array)
    np.testing.assert_allclose(from_dicom.affine, from_nifti.affine, atol=1e-4)


def test_gantry_tilt_keeps_a_sheared_affine(tmp_path):
    affine = np.diag([0.7, 0.7, 2.0, 1.0])
    tilt = np.radians(15.0)
    affine[1, 2] = 2.0 * np.tan(tilt)  # each slice shifts along y: the stack leans like a tilted gantry
    source = random_ct((8, 8, 6), affine, seed=6)
    write_dicom_series(source, tmp_path / "dicom")
    loaded = load_volume(tmp_path / "dicom", salt="t")
    np.testing.assert_allclose(loaded.affine, affine, atol=1e-5)
    np.testing.assert_array_equal(loaded.array, source.array)
    assert loaded.meta["gantry_tilt_deg"] == pytest.approx(15.0, abs=0.01)
    save_volume(loaded, tmp_path / "tilted.nii.gz")
    np.testing.assert_allclose(load_volume(tmp_path / "tilted.nii.gz").affine, affine, atol=1e-5)


def test_a_missing_slice_is_an_error_naming_the_series_or_resampled_on_request(tmp_path):
    source = random_ct((6, 6, 8), AXIAL, seed=7)
    files = write_dicom_series(source, tmp_path, series_description="AX CHEST", series_number=3)
    os.remove(files[4])
    with pytest.raises(VolumeReadError, match="1 missing slice") as info:
        load_volume(tmp_path, salt="t")
    assert "series 3 'AX CHEST'" in str(info.value) and "resample" in str(info.value)
    filled = load_volume(tmp_path, on_uneven="resample", salt="t")
    assert filled.spatial_shape == (6, 6, 8) and filled.meta["resampled_slices"] is True
    np.testing.assert_allclose(filled.array[..., 4], 0.5 * (source.array[..., 3] + source.array[..., 5]))
    np.testing.assert_array_equal(filled.array[..., [0, 1, 2, 3, 5, 6, 7]], source.array[..., [0, 1, 2, 3, 5, 6, 7]])
    np.testing.assert_allclose(filled.affine, AXIAL, atol=1e-6)


def test_uneven_spacing_is_detected_and_resampled_linearly(tmp_path):
    # a linear ramp along z survives linear resampling exactly, whatever the acquired positions
    ramp = np.broadcast_to(np.arange(6, dtype=np.float32) * 40.0, (1, 5, 5, 6)).copy()
    files = write_dicom_series(Volume(ramp, np.diag([1.0, 1.0, 2.0, 1.0]), "CT"), tmp_path)
    for k, path in enumerate(files):
        if k >= 3:  # slices 3.. shift by +1 mm: gaps 2, 2, 3, 2, 2 mm
            dataset = pydicom.dcmread(path)
            dataset.ImagePositionPatient = [0.0, 0.0, 2.0 * k + 1.0]
            stored = (40.0 * (k + 0.5) + 1024.0) * np.ones((5, 5))  # value follows the true position
            dataset.PixelData = stored.astype(np.int16).tobytes()
            dataset.save_as(path)
    with pytest.raises(VolumeReadError, match="uneven slice spacing"):
        load_volume(tmp_path, salt="t")
    resampled = load_volume(tmp_path, on_uneven="resample", salt="t")
    assert resampled.spacing[2] == pytest.approx(2.0)
    assert resampled.spatial_shape[2] == 6  # z = 0, 2, ..., 10 mm covers the acquired 0 to 11 mm
    expected = 20.0 * (2.0 * np.arange(6))  # value = 20 * z(mm)
    np.testing.assert_allclose(resampled.array[0, 2, 2, :], expected, atol=1e-3)


def test_per_slice_rescale_gives_hounsfield_units(tmp_path):
    source = random_ct((6, 5, 4), AXIAL, seed=8)
    files = write_dicom_series(source, tmp_path)
    for k in (1, 3):  # these slices were stored with another slope and intercept
        dataset = pydicom.dcmread(files[k])
        stored = np.round((source.array[0, :, :, k].T - (-2048.0)) / 0.5)
        dataset.PixelData = stored.astype(np.int16).tobytes()
        dataset.RescaleSlope, dataset.RescaleIntercept = "0.5", "-2048"
        dataset.save_as(files[k])
    _assert_same_volume(load_volume(tmp_path, salt="t"), source)


def test_two_series_in_one_folder_need_a_series_uid(tmp_path):
    first = random_ct((5, 5, 4), AXIAL, seed=9)
    second = random_ct((6, 6, 3), np.diag([0.5, 0.5, 3.0, 1.0]), seed=10)
    write_dicom_series(first, tmp_path, series_uid="1.2.826.0.1.3680043.8.498.1", series_number=1, file_names=[f"a{i}" for i in range(4)])
    write_dicom_series(second, tmp_path, series_uid="1.2.826.0.1.3680043.8.498.2", series_number=2, file_names=[f"b{i}" for i in range(3)])
    with pytest.raises(VolumeReadError, match="holds 2 series") as info:
        load_volume(tmp_path, salt="t")
    assert "1.2.826.0.1.3680043.8.498.1" in str(info.value) and "1.2.826.0.1.3680043.8.498.2" in str(info.value)
    _assert_same_volume(load_volume(tmp_path, series_uid="1.2.826.0.1.3680043.8.498.2", salt="t"), second)
    files = sorted(str(tmp_path / f"a{i}") for i in range(4))
    _assert_same_volume(load_volume(files, salt="t"), first)
    with pytest.raises(VolumeReadError, match="no series with SeriesInstanceUID"):
        load_volume(tmp_path, series_uid="1.2.3", salt="t")


def test_a_truncated_file_is_an_error_naming_it(tmp_path):
    files = write_dicom_series(random_ct((6, 6, 5), AXIAL, seed=11), tmp_path)
    truncate(files[2], 0.8)  # pixel data cut short
    with pytest.raises(VolumeReadError, match="truncated") as info:
        load_volume(tmp_path, salt="t")
    assert info.value.path == str(files[2])
    truncate(files[3], 0.3)  # cut inside the header
    with pytest.raises(VolumeReadError, match="truncated"):
        load_volume(files[3], salt="t")


def test_non_dicom_files_beside_a_series_are_ignored(tmp_path):
    source = random_ct((5, 6, 4), AXIAL, seed=12)
    write_dicom_series(source, tmp_path / "series")
    (tmp_path / "series" / "README.txt").write_text("exported by PACS")
    (tmp_path / "series" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" * 20)
    _assert_same_volume(load_volume(tmp_path / "series", salt="t"), source)
    with pytest.raises(VolumeReadError, match="not a DICOM or NIfTI"):
        load_volume(tmp_path / "series" / "README.txt")


def test_a_folder_is_searched_recursively_and_empty_inputs_are_errors(tmp_path):
    source = random_ct((5, 5, 3), AXIAL, seed=13)
    write_dicom_series(source, tmp_path / "patient" / "study" / "series")
    _assert_same_volume(load_volume(tmp_path / "patient", salt="t"), source)
    (tmp_path / "empty").mkdir()
    with pytest.raises(VolumeReadError, match="no DICOM files"):
        load_volume(tmp_path / "empty")
    save_volume(source, tmp_path / "nifti" / "ct.nii.gz")
    with pytest.raises(VolumeReadError, match="NIfTI file"):
        load_volume(tmp_path / "nifti")
    with pytest.raises(VolumeReadError, match="no such file"):
        load_volume(tmp_path / "missing")
    with pytest.raises(VolumeReadError, match="no files"):
        load_volume([])


def test_a_series_mixing_orientations_is_refused(tmp_path):
    write_dicom_series(random_ct((5, 5, 3), AXIAL, seed=14), tmp_path, series_uid="1.2.826.0.1.3680043.8.498.7")
    localizer = np.array([[0.0, 0, 0.7, 0], [0.8, 0, 0, 0], [0, 2.5, 0, 0], [0, 0, 0, 1]])
    write_dicom_series(
        random_ct((5, 5, 1), localizer, seed=15), tmp_path, series_uid="1.2.826.0.1.3680043.8.498.7", file_names=["scout"]
    )
    with pytest.raises(VolumeReadError, match="differ in orientation"):
        load_volume(tmp_path, salt="t")


def test_two_dimensional_radiograph_keeps_z_equal_one(tmp_path):
    source_dir = tmp_path / "cr"
    source_dir.mkdir()
    from tests.io.helpers import PYDICOM_TEST_ROOT

    path = source_dir / "chest"
    shutil.copy(PYDICOM_TEST_ROOT / "dicomdirtests/77654033/CR1/6154", path)
    dataset = pydicom.dcmread(path)
    for keyword in ("ImageOrientationPatient", "ImagePositionPatient"):
        if keyword in dataset:
            delattr(dataset, keyword)
    dataset.PatientOrientation = ["L", "F"]  # a PA chest film: rows run to the left, columns to the feet
    dataset.save_as(path)
    volume = load_volume(path, salt="t")
    native = load_volume(path, reorient=False, salt="t")
    assert volume.spatial_shape[2] == 1 and volume.orientation == "RSA"
    np.testing.assert_array_equal(volume.array[0, :, :, 0], native.array[0, ::-1, ::-1, 0])
    assert native.meta.get("orientation_assumed") is False
