"""Hospital MR realities (issue 17, item 10): Siemens mosaics unpacked into slices, multi-echo series
split into one volume per echo."""

from __future__ import annotations

import os
import warnings

import nibabel
import numpy as np
import pydicom
import pytest

from medssl.data.manifest import build_manifest, load_manifest_volume
from medssl.errors import VolumeReadError
from medssl.io import load_volume
from tests.io.broken_files import mr_slice, siemens_mosaic

NIBABEL_MOSAIC = os.path.join(os.path.dirname(nibabel.__file__), "nicom", "tests", "data", "0.dcm")


def test_a_mosaic_with_a_csa_header_unpacks_like_nibabel(tmp_path):
    """nibabel's Siemens DWI mosaic (CSA header: 48 slices, slice normal), its pixel data replaced by
    a 7x7 grid of 36x36 tiles (the shipped file is cut to 256x256, which no tile size fits)."""
    dataset = pydicom.dcmread(NIBABEL_MOSAIC)
    dataset.Rows = dataset.Columns = 7 * 36
    dataset.PixelData = np.random.default_rng(0).integers(0, 4000, (252, 252)).astype(np.uint16).tobytes()
    dataset.save_as(tmp_path / "mosaic.dcm")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from nibabel.nicom.dicomwrappers import MosaicWrapper, wrapper_from_data

        reference = wrapper_from_data(pydicom.dcmread(tmp_path / "mosaic.dcm"))
        assert isinstance(reference, MosaicWrapper)
        expected, expected_affine = reference.get_data(), reference.affine
    volume = load_volume(tmp_path / "mosaic.dcm", reorient=False, salt="t")
    assert volume.spatial_shape == (36, 36, 48) and volume.meta["mosaic_images"] == 48
    # nibabel's voxel order is (row, column, slice) in LPS; medssl's native one (column, row, slice) in RAS
    np.testing.assert_array_equal(volume.array[0].transpose(1, 0, 2), expected)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ volume.affine
    np.testing.assert_allclose(lps[:, [1, 0, 2, 3]], expected_affine, atol=1e-3)


def test_a_mosaic_with_only_numberofimagesinmosaic_unpacks_into_positioned_slices(tmp_path):
    tiles = np.random.default_rng(1).integers(0, 4000, (6, 4, 7)).astype(np.uint16)  # rows, columns, slices
    path = siemens_mosaic(tmp_path / "mosaic.dcm", tiles, position=(-100.0, -80.0, 20.0),
                          orientation=(0.0, 1.0, 0.0, 0.0, 0.0, -1.0), spacing=(2.0, 2.5), slice_thickness=3.0)
    volume = load_volume(path, reorient=False, salt="t")
    np.testing.assert_array_equal(volume.array[0].transpose(1, 0, 2), tiles)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ volume.affine
    # first slice's corner: mosaic corner + half the unused mosaic width along each in-plane axis
    np.testing.assert_allclose(lps[:3, 3], [-100.0, -80.0 + 2.5 * (12 - 4) / 2, 20.0 - 2.0 * (18 - 6) / 2])
    np.testing.assert_allclose(lps[:3, :3], [[0, 0, -3.0], [2.5, 0, 0], [0, -2.0, 0]], atol=1e-9)
    assert volume.meta["mosaic_slice_normal_assumed"] is True
    assert load_volume(path, salt="t").spatial_shape == (7, 4, 6)  # RAS: slices along x (sagittal)


def test_a_mosaic_that_does_not_say_how_many_slices_loads_as_its_tile_image(tmp_path):
    path = siemens_mosaic(tmp_path / "mosaic.dcm", np.ones((6, 4, 7), np.uint16), with_count=False)
    assert load_volume(path, reorient=False, salt="t").spatial_shape == (12, 18, 1)


def test_a_mosaic_whose_size_fits_no_tile_grid_is_an_error(tmp_path):
    with pytest.raises(VolumeReadError, match="equal tiles"):
        load_volume(NIBABEL_MOSAIC, salt="t")


def test_a_mosaic_time_series_is_one_row_per_time_point(tmp_path):
    from pydicom.uid import generate_uid

    series = generate_uid()
    for t in range(3):
        tiles = np.full((6, 4, 5), t, np.uint16)
        path = siemens_mosaic(tmp_path / f"fmri_{t}.dcm", tiles)
        dataset = pydicom.dcmread(path)
        dataset.SeriesInstanceUID, dataset.AcquisitionNumber = series, t + 1
        dataset.save_as(path)
    frame = build_manifest(tmp_path, progress=False, salt="t")
    assert list(frame["status"]) == ["ok"] * 3
    assert set(zip(frame["shape_x"], frame["shape_y"], frame["shape_z"])) == {(4, 6, 5)}  # 5 slices of 6 x 4 each
    assert frame["volume_id"].is_unique


def _multi_echo(folder, echo_times=(5.0, 10.0, 15.0), positions=(0.0, 2.0, 4.0, 6.0)):
    from pydicom.uid import generate_uid

    series = generate_uid()
    files = {}
    for e, te in enumerate(echo_times, start=1):
        for z in positions:
            path = mr_slice(folder / f"IM_{e}_{int(z)}.dcm", z, series_uid=series, echo_number=e, echo_time=te, seed=int(e * 100 + z))
            files.setdefault(e, []).append(path)
    return files


def test_a_multi_echo_series_is_one_manifest_row_per_echo(tmp_path):
    files = _multi_echo(tmp_path / "me")
    frame = build_manifest(tmp_path, progress=False, salt="t")
    assert list(frame["status"]) == ["ok"] * 3, frame[["status", "reason"]]
    assert frame["volume_id"].is_unique and frame["series_key"].nunique() == 1
    assert sorted(frame["echo_number"]) == [1, 2, 3] and sorted(frame["echo_time"]) == [5.0, 10.0, 15.0]
    assert set(frame["shape_z"]) == {4} and set(frame["spacing_z"]) == {2.0}
    for row in frame.to_dict("records"):
        assert len(row["files"]) == 4 and all(f"IM_{row['echo_number']}_" in f for f in row["files"])
        volume = load_manifest_volume(row, tmp_path, salt="t")
        expected = load_volume(files[row["echo_number"]], salt="t")
        np.testing.assert_array_equal(volume.array, expected.array)
        assert volume.meta["echo_number"] == row["echo_number"] and volume.meta["EchoTime"] == row["echo_time"]


def test_loading_a_multi_echo_folder_names_its_echoes(tmp_path):
    _multi_echo(tmp_path / "me", echo_times=(5.0, 10.0))
    with pytest.raises(VolumeReadError) as info:
        load_volume(tmp_path / "me", salt="t")
    assert "2 echoes" in info.value.reason and "echo 1 (TE 5 ms)" in info.value.reason


def test_images_at_one_position_that_are_not_echoes_stay_an_error(tmp_path):
    """Cardiac phases or repeated acquisitions (one echo) cannot be told apart from the header alone."""
    from pydicom.uid import generate_uid

    series = generate_uid()
    for k, z in enumerate((0.0, 2.0, 0.0, 2.0)):
        mr_slice(tmp_path / f"IM{k}.dcm", z, series_uid=series, echo_number=1, echo_time=5.0, seed=k)
    row = build_manifest(tmp_path, progress=False, salt="t").iloc[0]
    assert row["status"] == "error" and "share slice positions" in row["reason"]
