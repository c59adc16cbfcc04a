"""The scan over an archive of broken files (issue 17): one row per file, each with its status and a
reason that names no path; the scan never stops, and the saved manifest round-trips."""

from __future__ import annotations

import logging
import os

import pytest

from medssl.data.manifest import build_manifest, load_manifest, load_manifest_volume, save_manifest
from medssl.io.limits import ReadLimits
from tests.io.broken_files import (
    computed_radiograph,
    cut_in_half,
    damage_transfer_syntax,
    write_huge_header_nifti,
    write_inflating_nifti,
    write_nifti,
    write_zero_sform_nifti,
)
from tests.io.helpers import pydicom_test_file, write_planted_series

SALT = "bad-input-salt"


def _rows(frame):
    return {row["path"]: row for row in frame.to_dict("records")}


def test_a_zero_sform_is_an_ok_row_that_says_which_affine_was_used(tmp_path):
    write_zero_sform_nifti(tmp_path / "zero_sform.nii.gz", with_qform=True)
    row = _rows(build_manifest(tmp_path, progress=False, salt=SALT))["zero_sform.nii.gz"]
    assert row["status"] == "ok" and "sform" in row["reason"] and "qform" in row["reason"]
    assert (row["shape_x"], row["shape_y"], row["shape_z"], row["spacing_x"]) == (5, 4, 3, 2.0)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_file_names_that_are_not_utf8_are_scanned_saved_and_loaded(tmp_path, suffix):
    root = tmp_path / "archive"
    root.mkdir()
    write_nifti(os.path.join(os.fsencode(root), b"\xff\xfe_T1w.nii.gz"))
    series = os.path.join(os.fsencode(root), b"ct_\xe9\xff")
    write_planted_series(os.fsdecode(series), shape=(5, 5, 3))
    frame = build_manifest(root, progress=False, salt=SALT)
    assert list(frame["status"]) == ["ok", "ok"], frame[["status", "reason"]]
    out = tmp_path / f"manifest{suffix}"
    save_manifest(frame, out)
    loaded = load_manifest(out)
    assert list(loaded["path"]) == list(frame["path"])
    assert [list(f) if f is not None else None for f in loaded["files"]] == [list(f) if f is not None else None for f in frame["files"]]
    for _, row in loaded.iterrows():
        assert load_manifest_volume(row, root).array.size > 0


def test_size_guards_and_truncation_are_error_rows(tmp_path):
    write_huge_header_nifti(tmp_path / "huge.nii.gz")
    cut_in_half(write_inflating_nifti(tmp_path / "half.nii", side=8))
    write_inflating_nifti(tmp_path / "bomb.nii.gz", side=32)
    rows = _rows(build_manifest(tmp_path, progress=False, salt=SALT, limits=ReadLimits(max_bytes=100_000)))
    assert rows["huge.nii.gz"]["status"] == "error" and "30000 x 30000 x 30000" in rows["huge.nii.gz"]["reason"]
    assert rows["half.nii"]["status"] == "error" and "truncated" in rows["half.nii"]["reason"]
    assert rows["bomb.nii.gz"]["status"] == "error" and "bytes" in rows["bomb.nii.gz"]["reason"]
    assert rows["bomb.nii.gz"]["status"] == "error"
    # the default limits let the 128 KB volume through
    assert _rows(build_manifest(tmp_path, progress=False, salt=SALT))["bomb.nii.gz"]["status"] == "ok"


def test_a_zero_byte_dicom_is_an_empty_file_error(tmp_path):
    (tmp_path / "IM0001.dcm").write_bytes(b"")
    (tmp_path / "notes.txt").write_bytes(b"")
    rows = _rows(build_manifest(tmp_path, progress=False, salt=SALT))
    assert rows["IM0001.dcm"]["status"] == "error" and "empty file" in rows["IM0001.dcm"]["reason"]
    assert rows["notes.txt"]["status"] == "skipped" and "empty file" in rows["notes.txt"]["reason"]


def test_zero_pixel_spacing_is_an_ok_row_with_spacing_unknown(tmp_path, caplog):
    computed_radiograph(tmp_path / "cr_zero.dcm", pixel_spacing="0\\0")
    computed_radiograph(tmp_path / "cr_real.dcm", pixel_spacing="0.15\\0.15")
    with caplog.at_level(logging.WARNING, logger="medssl"):
        frame = build_manifest(tmp_path, progress=False, salt=SALT)
    rows = _rows(frame)
    assert rows["cr_zero.dcm"]["status"] == "ok" and rows["cr_zero.dcm"]["spacing_known"] == False  # noqa: E712
    assert rows["cr_zero.dcm"]["spacing_x"] == 1.0 and "spacing" in rows["cr_zero.dcm"]["reason"]
    assert rows["cr_real.dcm"]["spacing_known"] == True and rows["cr_real.dcm"]["spacing_x"] == 0.15  # noqa: E712
    assert any("unknown pixel spacing" in r.getMessage() for r in caplog.records)
    save_manifest(frame, tmp_path / "m.csv")
    assert list(load_manifest(tmp_path / "m.csv")["spacing_known"]) == list(frame["spacing_known"])


def test_a_damaged_transfer_syntax_is_a_row_not_a_crash(tmp_path):
    damage_transfer_syntax(pydicom_test_file("CT_small.dcm"), tmp_path / "bad_syntax.dcm")
    row = _rows(build_manifest(tmp_path, progress=False, salt=SALT))["bad_syntax.dcm"]
    assert row["status"] == "error" and "names no transfer syntax" in row["reason"], row["reason"]
    assert "unexpected" not in row["reason"] and "bad_syntax" not in row["reason"]
