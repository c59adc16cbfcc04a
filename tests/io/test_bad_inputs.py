"""Hospital archives at their worst (issue 17), file by file: every broken file either loads with its
problem recorded, or fails with a VolumeReadError that names the file and the cause; never with a
raw nibabel, pydicom or OS exception."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest

from medssl.errors import VolumeReadError
from medssl.io import load_volume
from medssl.io.limits import ReadLimits
from tests.io.broken_files import (
    computed_radiograph,
    cut_in_half,
    damage_transfer_syntax,
    write_huge_header_nifti,
    write_inflating_nifti,
    write_zero_sform_nifti,
)
from tests.io.helpers import pydicom_test_file


# --- item 1: an all-zero sform with sform_code 1


def test_a_zero_sform_falls_back_to_the_qform_and_says_so(tmp_path, caplog):
    path = write_zero_sform_nifti(tmp_path / "zero_sform.nii.gz", with_qform=True)
    with caplog.at_level(logging.WARNING, logger="medssl"):
        volume = load_volume(path)
    assert volume.meta["affine_source"] == "qform"
    assert "sform" in volume.meta["affine_issue"]
    assert volume.spacing == (2.0, 2.0, 2.0) and volume.spatial_shape == (5, 4, 3)
    assert any("sform" in r.getMessage() for r in caplog.records)


def test_a_zero_sform_without_qform_loads_on_the_voxel_sizes(tmp_path):
    volume = load_volume(write_zero_sform_nifti(tmp_path / "no_qform.nii", with_qform=False))
    assert volume.meta["affine_source"] == "pixdim"
    assert volume.orientation == "RAS" and volume.spatial_shape == (5, 4, 3)


# --- item 7: size guards and truncation


def test_a_header_claiming_30000_cubed_voxels_is_refused_before_reading(tmp_path):
    path = write_huge_header_nifti(tmp_path / "huge.nii.gz")
    with pytest.raises(VolumeReadError) as info:
        load_volume(path)
    assert "huge.nii.gz" in str(info.value)
    assert "30000 x 30000 x 30000" in info.value.reason and "limit" in info.value.reason


def test_the_size_guard_is_configurable_and_bounds_a_gzip_that_inflates(tmp_path, monkeypatch):
    path = write_inflating_nifti(tmp_path / "bomb.nii.gz", side=32)
    assert path.stat().st_size < 2000  # 128 KB once inflated
    assert load_volume(path).spatial_shape == (32, 32, 32)
    with pytest.raises(VolumeReadError, match="bytes"):
        load_volume(path, limits=ReadLimits(max_bytes=100_000))
    with pytest.raises(VolumeReadError, match="voxels"):
        load_volume(path, limits=ReadLimits(max_voxels=1000))
    monkeypatch.setenv("MEDSSL_MAX_BYTES", "100000")
    with pytest.raises(VolumeReadError, match="MEDSSL_MAX_BYTES"):
        load_volume(path)


def test_the_size_guard_applies_to_dicom_too(tmp_path):
    path = pydicom_test_file("CT_small.dcm")
    assert load_volume(path, salt="t").spatial_shape == (128, 128, 1)
    with pytest.raises(VolumeReadError, match="voxels"):
        load_volume(path, salt="t", limits=ReadLimits(max_voxels=128 * 127))


def test_a_truncated_uncompressed_nifti_names_the_file_and_the_missing_bytes(tmp_path):
    path = cut_in_half(write_inflating_nifti(tmp_path / "half.nii", side=8))
    with pytest.raises(VolumeReadError) as info:
        load_volume(path)
    assert "half.nii" in str(info.value) and "truncated" in info.value.reason


# --- item 8: a zero-byte file


@pytest.mark.parametrize("name", ["empty.dcm", "IM0001", "empty.nii.gz"])
def test_an_empty_file_is_called_empty(tmp_path, name):
    (tmp_path / name).write_bytes(b"")
    with pytest.raises(VolumeReadError) as info:
        load_volume(tmp_path / name)
    assert "empty" in info.value.reason and name in str(info.value)


# --- item 9: PixelSpacing 0\0 (pydicom-data's RG1_* computed radiographs)


def test_a_radiograph_with_zero_pixel_spacing_loads_with_the_spacing_marked_unknown(tmp_path, caplog):
    path = computed_radiograph(tmp_path / "cr.dcm", pixel_spacing="0\\0")
    with caplog.at_level(logging.WARNING, logger="medssl"):
        volume = load_volume(path, salt="t")
    assert volume.spatial_shape == (20, 24, 1)
    assert volume.spacing[:2] == (1.0, 1.0)
    assert volume.meta["spacing_known"] is False and volume.meta["pixel_spacing_assumed"] is True
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("spacing" in m and "unknown" in m for m in warnings)
    assert not any("cr.dcm" in m or str(tmp_path) in m for m in warnings)


def test_a_radiograph_with_a_real_pixel_spacing_has_it_known(tmp_path):
    volume = load_volume(computed_radiograph(tmp_path / "cr.dcm", pixel_spacing="0.2\\0.2"), salt="t")
    assert volume.spacing[:2] == (0.2, 0.2) and volume.meta["spacing_known"] is True


@pytest.mark.parametrize("name", ["RG1_J2KI.dcm", "RG1_J2KR.dcm", "RG1_UNCI.dcm", "RG1_UNCR.dcm"])
def test_pydicom_data_radiographs_load_where_installed(name):
    """The issue's four files (in the pydicom-data package, not in pydicom itself): run where that
    package is installed; the file built above has the same header."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is in pydicom-data, which is not installed here")
    volume = load_volume(path, salt="t")
    assert volume.meta["spacing_known"] is False


# --- item 12: a damaged transfer syntax UID


def test_a_damaged_transfer_syntax_uid_is_a_volume_read_error(tmp_path):
    path = damage_transfer_syntax(pydicom_test_file("CT_small.dcm"), tmp_path / "ct_bad_syntax.dcm")
    with pytest.raises(VolumeReadError) as info:
        load_volume(path, salt="t")
    assert "ct_bad_syntax.dcm" in str(info.value)
    assert "1.2.840.10008.1.2.9" in info.value.reason and "transfer syntax" in info.value.reason


def test_a_non_utf8_file_name_loads(tmp_path):
    from tests.io.broken_files import write_nifti

    path = os.path.join(os.fsencode(tmp_path), b"\xff\xfe_T1w.nii.gz")
    write_nifti(path)
    volume = load_volume(os.fsdecode(path))
    assert volume.spatial_shape == (6, 5, 4)
    assert np.isfinite(volume.array).all()
