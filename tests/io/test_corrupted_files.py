"""Fuzz (issue 17, item 12): seeded corrupted copies of pydicom's and nibabel's shipped test files
(cut short, bytes flipped, spans zeroed or duplicated). Every failure of ``load_volume`` is a
VolumeReadError (or its NotAnImageError) naming the file and a cause, never a reader's own
exception; the scan returns one record per file and the manifest covers every file."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from nibabel.testing import data_path

from medssl.data.manifest import build_manifest
from medssl.errors import VolumeReadError
from medssl.io import load_volume
from medssl.io.scan import scan_files
from tests.io.broken_files import damage_transfer_syntax
from tests.io.corruption import corrupted_copies
from tests.io.helpers import pydicom_test_file

PYDICOM_SOURCES = ["CT_small.dcm", "MR_small_RLE.dcm", "JPEG2000.dcm", "MR_small_bigendian.dcm", "no_meta.dcm", "image_dfl.dcm"]
NIBABEL_SOURCES = ["anatomical.nii", "example_nifti2.nii.gz", "standard.nii.gz"]


@pytest.fixture(scope="module")
def corrupted(tmp_path_factory) -> tuple[Path, list[Path]]:
    folder = tmp_path_factory.mktemp("corrupted")
    sources = [pydicom_test_file(n) for n in PYDICOM_SOURCES] + [Path(data_path) / n for n in NIBABEL_SOURCES]
    files = corrupted_copies(sources, folder, per_kind=2, seed=17)
    files.append(damage_transfer_syntax(pydicom_test_file("MR_small_RLE.dcm"), folder / "rle_bad_syntax.dcm"))
    return folder, files


def test_every_load_of_a_corrupted_file_succeeds_or_raises_volume_read_error(corrupted):
    folder, files = corrupted
    assert len(files) == (len(PYDICOM_SOURCES) + len(NIBABEL_SOURCES)) * 4 * 2 + 1
    outcomes = {"loaded": 0, "refused": 0}
    for path in files:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                volume = load_volume(path, salt="fuzz")
            except VolumeReadError as exc:  # NotAnImageError is one too
                assert path.name in str(exc), str(exc)
                assert exc.reason.strip(), f"{path.name}: an error without a cause"
                # the reader knew what failed (not only load_volume's safety net for unknown exceptions)
                assert not exc.reason.startswith("unexpected"), str(exc)
                outcomes["refused"] += 1
                continue
        assert volume.array.ndim == 4 and volume.array.size > 0
        outcomes["loaded"] += 1
    # both outcomes occur: the corruptions are neither all harmless nor all fatal
    assert outcomes["loaded"] > 5 and outcomes["refused"] > 5, outcomes


def test_the_scan_returns_a_record_for_every_corrupted_file(corrupted):
    folder, files = corrupted
    rels = sorted(p.name for p in files)
    records = scan_files(str(folder), rels, b"fuzz", workers=0, progress=False)
    assert sorted(records) == rels
    for record in records.values():
        assert record.kind in ("dicom", "nifti", "skipped", "error")
        if record.kind in ("skipped", "error"):
            assert record.reason and str(folder) not in record.reason and record.rel not in record.reason
    frame = build_manifest(folder, progress=False, salt="fuzz", workers=0)
    covered = {f for row in frame.to_dict("records") for f in (row["files"] if row["files"] is not None else [row["path"]])}
    assert covered == set(rels)
    assert not frame["reason"].fillna("").str.contains("unexpected").any()
