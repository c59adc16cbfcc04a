"""Every pixel-bearing file shipped with pydicom (many vendors and transfer syntaxes) loads with the
values pydicom itself gives after the modality LUT, or, where pydicom cannot decode it either,
fails with a VolumeReadError naming the file and the cause."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from medssl.errors import NotAnImageError, VolumeReadError
from medssl.io import load_volume
from medssl.io.dicom_header import NotDicomError, read_header
from medssl.io.orientation import reorient_to_ras
from tests.io.helpers import PYDICOM_TEST_ROOT, pydicom_local_files, pydicom_pixel_files, pydicom_reference, pydicom_test_file

PIXEL_FILES = pydicom_pixel_files()


def _id(path) -> str:
    return str(path.relative_to(PYDICOM_TEST_ROOT))


def test_the_shipped_files_cover_the_transfer_syntaxes_the_issue_names():
    import pydicom

    syntaxes = set()
    for path in PIXEL_FILES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            meta = pydicom.dcmread(path, stop_before_pixels=True, force=True).file_meta
        if "TransferSyntaxUID" in meta:
            syntaxes.add(meta.TransferSyntaxUID.name)
    for wanted in ("JPEG Baseline", "JPEG Extended", "JPEG Lossless", "JPEG-LS", "JPEG 2000", "RLE Lossless", "Big Endian", "Deflated"):
        assert any(wanted in name for name in syntaxes), wanted


@pytest.mark.parametrize("path", PIXEL_FILES, ids=_id)
def test_pixel_values_match_pydicom_after_the_modality_lut(path):
    try:
        expected = pydicom_reference(path)
    except Exception as pydicom_error:  # pydicom cannot decode it: we must fail cleanly, naming the file
        with pytest.raises(VolumeReadError) as info:
            load_volume(path, salt="test")
        assert path.name in str(info.value)
        assert info.value.reason, "the error must give a cause"
        assert not isinstance(info.value, NotAnImageError) or "Rows" in info.value.reason, pydicom_error
        return
    try:
        native = load_volume(path, reorient=False, nonfinite="keep", salt="test")
    except NotAnImageError as exc:
        pytest.fail(f"pydicom decodes {path.name} but medssl calls it a non-image: {exc}")
    # native grid is (channels, column, row, frame)
    got = native.array.transpose(3, 2, 1, 0)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected.astype(np.float32), rtol=1e-6, atol=1e-6)

    canonical = load_volume(path, nonfinite="keep", salt="test")
    reoriented, affine = reorient_to_ras(native.array, native.affine)
    np.testing.assert_array_equal(canonical.array, reoriented)
    np.testing.assert_allclose(canonical.affine, affine)
    assert canonical.array.dtype == np.float32


def test_ct_is_in_hounsfield_units_and_lossless_codecs_agree():
    import pydicom

    path = pydicom_test_file("CT_small.dcm")
    ct = load_volume(path, reorient=False, salt="test")
    dataset = pydicom.dcmread(path)
    stored = dataset.pixel_array.astype(np.float64).T
    hu = stored * float(dataset.RescaleSlope) + float(dataset.RescaleIntercept)
    assert ct.modality == "CT" and float(dataset.RescaleIntercept) != 0
    np.testing.assert_allclose(ct.array[0, :, :, 0], hu)
    jpeg2000 = load_volume(pydicom_test_file("MR_small_jp2klossless.dcm"), salt="test")
    jpeg_ls = load_volume(pydicom_test_file("MR_small_jpeg_ls_lossless.dcm"), salt="test")
    big_endian = load_volume(pydicom_test_file("MR_small_bigendian.dcm"), salt="test")
    plain = load_volume(pydicom_test_file("MR_small.dcm"), salt="test")
    for other in (jpeg2000, jpeg_ls, big_endian):
        np.testing.assert_array_equal(other.array, plain.array)
        np.testing.assert_allclose(other.affine, plain.affine)


def test_monochrome1_radiographs_are_inverted_to_monochrome2():
    import pydicom

    path = PYDICOM_TEST_ROOT / "dicomdirtests/77654033/CR1/6154"  # a file without extension
    dataset = pydicom.dcmread(path)
    assert dataset.PhotometricInterpretation == "MONOCHROME1" and dataset.PixelRepresentation == 0
    volume = load_volume(path, reorient=False, salt="test")
    slope, intercept = float(dataset.RescaleSlope), float(dataset.RescaleIntercept)
    values = dataset.pixel_array.astype(np.float64) * slope + intercept
    lowest, highest = intercept, (2 ** int(dataset.BitsStored) - 1) * slope + intercept
    assert volume.modality == "CR" and volume.spatial_shape[2] == 1
    # v' = lo + hi - v: the brightest stored value becomes the darkest, within the same range
    np.testing.assert_allclose(volume.array[0, :, :, 0].T, lowest + highest - values)


def test_colour_images_become_three_channels_and_palettes_are_expanded():
    rgb = load_volume(pydicom_test_file("SC_rgb_rle.dcm"), salt="test")
    ybr = load_volume(pydicom_test_file("SC_ybr_full_422_uncompressed.dcm"), salt="test")
    palette = load_volume(pydicom_test_file("examples_palette.dcm"), salt="test")
    for volume in (rgb, ybr, palette):
        assert volume.num_channels == 3 and volume.spatial_shape[2] == 1
    assert palette.meta["pixel_spacing_source"] == "SequenceOfUltrasoundRegions"


def test_an_undecodable_file_names_the_file_and_the_cause():
    path = pydicom_test_file("JPEG-lossy.dcm")
    with pytest.raises(VolumeReadError, match="pixel data cannot be decoded .*JPEG Extended") as info:
        load_volume(path, salt="test")
    assert info.value.path == str(path)


@pytest.mark.parametrize(
    "name", ["reportsi.dcm", "test-SR.dcm", "rtplan.dcm", "rtstruct.dcm", "waveform_ecg.dcm", "dicomdirtests/DICOMDIR"]
)
def test_non_image_objects_raise_not_an_image(name):
    with pytest.raises(NotAnImageError) as info:
        load_volume(PYDICOM_TEST_ROOT / name, salt="test")
    assert "image" in info.value.reason


def test_non_dicom_files_are_refused_clearly():
    with pytest.raises(VolumeReadError, match="not a DICOM or NIfTI file"):
        load_volume(PYDICOM_TEST_ROOT / "README.txt")
    with pytest.raises(NotDicomError):
        read_header(PYDICOM_TEST_ROOT / "crayons.icc")


def test_the_fast_header_walker_agrees_with_pydicom_on_every_shipped_file(monkeypatch):
    """read_header's own element walker and its pydicom fallback give identical headers."""
    import medssl.io.dicom_header as dicom_header
    import medssl.io.dicom_raw as dicom_raw
    from medssl.io.dicom_parse import scan_raw_header

    compared = 0
    for path in pydicom_local_files():
        if scan_raw_header(path, dicom_header._WANTED, dicom_header._SEQUENCE_TAGS) is None:
            continue
        fast = read_header(path, salt="test")
        with monkeypatch.context() as patch:
            patch.setattr(dicom_raw, "scan_raw_header", lambda *args, **kwargs: None)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                slow = read_header(path, salt="test")
        assert fast == slow, path.name
        compared += 1
    assert compared > 100


def test_a_transfer_syntax_without_decoder_says_what_to_do(tmp_path):
    import pydicom

    dataset = pydicom.dcmread(pydicom_test_file("JPGExtended.dcm"))
    dataset.file_meta.TransferSyntaxUID = pydicom.uid.MPEG2MPML  # video: pydicom has no pixel decoder
    dataset.save_as(tmp_path / "video.dcm")
    with pytest.raises(VolumeReadError, match=r"pixel data cannot be decoded \(MPEG2") as info:
        load_volume(tmp_path / "video.dcm", salt="test")
    assert info.value.hint and "no decoder" in info.value.hint and info.value.path == str(tmp_path / "video.dcm")
