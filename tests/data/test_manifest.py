"""The archive manifest: one row per volume from headers only, errors recorded, no identifier in any
output, geometry equal to what load_volume gives, parallel == serial, re-scans that skip unchanged files."""

from __future__ import annotations

import logging
import os
import shutil

import numpy as np
import pandas as pd
import pytest

from medssl.errors import DataError
from medssl.io import Volume, load_volume, save_volume
from medssl.io.dicom_write import write_dicom_series
import medssl.io.scan as scan_module
from medssl.data.manifest import SCHEMA, build_manifest, load_manifest, load_manifest_volume, save_manifest, write_manifest
from tests.io.helpers import (
    PLANTED,
    PYDICOM_TEST_ROOT,
    oblique_affine,
    planted_strings,
    random_ct,
    truncate,
    write_enhanced_ct,
    write_planted_series,
)

SALT = "manifest-test-salt"


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """A small, messy PACS-like export."""
    root = tmp_path_factory.mktemp("archive")
    rng = np.random.default_rng(0)
    # patient A: a baseline and a follow-up study (same patient, two studies), names without extension
    write_planted_series(root / "exportA" / "study1" / "ct", seed=1, shape=(8, 8, 6),
                         file_names=[f"{n}" for n in rng.permutation(6) + 1000], instance_order="shuffled")
    write_planted_series(root / "exportA" / "study2" / "ct", seed=2, shape=(8, 8, 5), study_uid="1.2.826.0.1.3680043.8.498.51",
                         series_uid="1.2.826.0.1.3680043.8.498.52")
    # patient B: an oblique series, a series with a missing slice, a truncated file, an SR, an enhanced CT
    b = dict(patient_id="PB-0002", patient_name="OTHER^PERSON", study_uid="1.2.826.0.1.3680043.8.498.60")
    write_dicom_series(random_ct((8, 9, 5), oblique_affine(), 3), root / "exportB" / "oblique", **b,
                       series_uid="1.2.826.0.1.3680043.8.498.61", series_number=1)
    gap = write_dicom_series(random_ct((6, 6, 7), np.diag([1.0, 1.0, 3.0, 1.0]), 4), root / "exportB" / "gap", **b,
                             series_uid="1.2.826.0.1.3680043.8.498.62", series_number=2, series_description="WITH GAP")
    os.remove(gap[3])
    broken = write_dicom_series(random_ct((6, 6, 4), np.diag([1.0, 1.0, 3.0, 1.0]), 5), root / "exportB" / "broken", **b,
                                series_uid="1.2.826.0.1.3680043.8.498.63", series_number=3)
    truncate(broken[1], 0.7)
    shutil.copy(PYDICOM_TEST_ROOT / "test-SR.dcm", root / "exportB" / "report.dcm")
    write_enhanced_ct(random_ct((6, 7, 4), np.diag([0.8, 0.8, 2.0, 1.0]), 6), root / "exportB" / "enhanced.dcm",
                      patient_id="PB-0002", patient_name="OTHER^PERSON")
    # two series in one folder, a radiograph without extension, a SEG, junk
    write_dicom_series(random_ct((5, 5, 3), np.eye(4), 7), root / "mixed", series_uid="1.2.826.0.1.3680043.8.498.71",
                       file_names=["s1a", "s1b", "s1c"], patient_id="PC-3")
    write_dicom_series(random_ct((4, 4, 2), np.eye(4), 8), root / "mixed", series_uid="1.2.826.0.1.3680043.8.498.72",
                       file_names=["s2a", "s2b"], patient_id="PC-3")
    shutil.copy(PYDICOM_TEST_ROOT / "dicomdirtests/77654033/CR1/6154", root / "mixed" / "cr_film")
    shutil.copy(PYDICOM_TEST_ROOT / "liver_1frame.dcm", root / "mixed" / "seg.dcm")
    (root / "README.txt").write_text("PACS export")
    (root / "mixed" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" * 10)
    # BIDS NIfTI: two sessions of one subject
    for session in ("ses-1", "ses-2"):
        save_volume(Volume(np.ones((1, 6, 6, 6), np.float32), np.diag([1.2, 1.2, 1.2, 1.0]), "MR"),
                    root / "bids" / "sub-07" / session / "anat" / f"sub-07_{session}_T1w.nii.gz")
    return root


@pytest.fixture(scope="module")
def manifest(archive):
    return build_manifest(archive, workers=0, progress=False, salt=SALT)


def _row(frame: pd.DataFrame, path: str) -> pd.Series:
    rows = frame[frame["path"] == path]
    assert len(rows) == 1, f"{path}: {len(rows)} rows"
    return rows.iloc[0]


def test_rows_status_and_reasons(manifest):
    assert list(manifest.columns) == list(SCHEMA)
    status = {(row.path, row.status) for row in manifest.itertuples()}
    for expected in [
        ("exportA/study1/ct", "ok"), ("exportA/study2/ct", "ok"), ("exportB/oblique", "ok"), ("exportB/gap", "error"),
        ("exportB/broken", "error"), ("exportB/report.dcm", "skipped"), ("exportB/enhanced.dcm", "ok"),
        ("mixed/cr_film", "ok"), ("mixed/seg.dcm", "skipped"), ("README.txt", "skipped"), ("mixed/.DS_Store", "skipped"),
        ("bids/sub-07/ses-1/anat/sub-07_ses-1_T1w.nii.gz", "ok"),
    ]:
        assert expected in status, expected
    assert "missing slice" in _row(manifest, "exportB/gap").reason
    broken = _row(manifest, "exportB/broken")
    assert "1 of 4 files unreadable" in broken.reason and "exportB/broken/IM000002.dcm" in broken.reason and "truncated" in broken.reason
    assert "SR" in _row(manifest, "exportB/report.dcm").reason
    assert "derived object" in _row(manifest, "mixed/seg.dcm").reason
    assert _row(manifest, "README.txt").reason == "not a DICOM or NIfTI file"
    mixed = manifest[(manifest["path"] == "mixed") & (manifest["status"] == "ok")]
    assert sorted(mixed["n_files"]) == [2, 3]  # two series in one folder: two rows
    assert manifest["volume_id"].is_unique


def test_geometry_is_what_load_volume_gives(manifest, archive):
    ok = manifest[manifest["status"] == "ok"]
    assert len(ok) >= 8
    for row in ok.to_dict("records"):
        volume = load_manifest_volume(row, archive, salt=SALT)
        assert volume.spatial_shape == (row["shape_x"], row["shape_y"], row["shape_z"]), row["path"]
        assert volume.spacing == pytest.approx((row["spacing_x"], row["spacing_y"], row["spacing_z"]), abs=1e-5)
        assert volume.orientation == row["orientation"] and volume.num_channels == row["channels"]
        assert volume.modality == row["modality"]
        if row["format"] == "dicom":
            assert volume.meta["series_key"] == row["series_key"] and volume.meta["patient_key"] == row["patient_key"]
    oblique = _row(manifest, "exportB/oblique")
    assert (oblique.shape_x, oblique.shape_y, oblique.shape_z) == load_volume(archive / "exportB" / "oblique", salt=SALT).spatial_shape
    assert _row(manifest, "mixed/cr_film").shape_z == 1


def test_patient_and_study_keys_group_correctly(manifest):
    first, follow_up = _row(manifest, "exportA/study1/ct"), _row(manifest, "exportA/study2/ct")
    assert first.patient_key == follow_up.patient_key and first.study_key != follow_up.study_key
    b_rows = manifest[manifest["path"].str.startswith("exportB/") & (manifest["path"] != "exportB/report.dcm")]  # SR: pydicom's patient
    assert b_rows["patient_key"].nunique() == 1 and b_rows["patient_key"].iloc[0] != first.patient_key
    sessions = manifest[manifest["format"] == "nifti"]
    assert sessions["patient_key"].nunique() == 1 and sessions["study_key"].nunique() == 2
    assert all(key.startswith("patient-") for key in manifest["patient_key"].dropna())


def test_no_identifier_in_any_output(archive, tmp_path, caplog):
    with caplog.at_level(logging.DEBUG, logger="medssl"):
        frame = build_manifest(archive, workers=0, progress=False, salt=SALT)
    save_manifest(frame, tmp_path / "m.csv")
    save_manifest(frame, tmp_path / "m.parquet")
    outputs = {
        "csv": (tmp_path / "m.csv").read_bytes(),
        "parquet": (tmp_path / "m.parquet").read_bytes(),
        "frame": frame.to_json().encode(),
        "logs": caplog.text.encode(),
    }
    identifiers = planted_strings() + ["PB-0002", "OTHER^PERSON", "1.2.826.0.1.3680043.8.498.6", "ENHANCED^EDNA"]
    for name, data in outputs.items():
        for planted in identifiers:
            assert planted.encode() not in data, f"{planted} leaked into the {name}"
    assert PLANTED["patient_id"] not in " ".join(frame["patient_key"].dropna())


def test_parallel_scan_equals_serial_scan(archive, manifest):
    parallel = build_manifest(archive, workers=2, progress=False, salt=SALT)
    pd.testing.assert_frame_equal(parallel, manifest)


def test_volume_ids_are_stable_and_salted(archive, manifest):
    again = build_manifest(archive, workers=0, progress=False, salt=SALT)
    assert list(again["volume_id"]) == list(manifest["volume_id"])
    other = build_manifest(archive, workers=0, progress=False, salt="another-salt")
    assert set(other["volume_id"]).isdisjoint(manifest["volume_id"])
    assert set(other["patient_key"].dropna()).isdisjoint(manifest["patient_key"].dropna())


def test_save_and_load_round_trip(manifest, tmp_path):
    for suffix in (".csv", ".parquet"):
        path = save_manifest(manifest, tmp_path / f"manifest{suffix}")
        pd.testing.assert_frame_equal(load_manifest(path), manifest)
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # atomic: no temporaries left
    with pytest.raises(ValueError):
        save_manifest(manifest, tmp_path / "manifest.xlsx")
    with pytest.raises(DataError, match="does not exist"):
        load_manifest(tmp_path / "absent.csv")
    pd.DataFrame({"a": [1]}).to_csv(tmp_path / "bad.csv")
    with pytest.raises(DataError, match="lacks the columns"):
        load_manifest(tmp_path / "bad.csv")
    with pytest.raises(DataError, match="no such folder"):
        build_manifest(tmp_path / "nowhere")


def test_rescan_reads_only_new_and_changed_files(tmp_path, monkeypatch):
    root = tmp_path / "archive"
    files_a = write_dicom_series(random_ct((5, 5, 4), np.eye(4), 1), root / "a", patient_id="P1")
    files_b = write_dicom_series(random_ct((5, 5, 3), np.eye(4), 2), root / "b", patient_id="P2")
    save_volume(Volume(np.zeros((1, 4, 4, 4)), np.eye(4)), root / "n" / "scan.nii.gz")
    first = write_manifest(root, tmp_path / "manifest.parquet", workers=0, progress=False, salt=SALT)
    inside = write_manifest(root, root / "manifest.csv", workers=0, progress=False, salt=SALT)
    again = write_manifest(root, root / "manifest.csv", workers=0, progress=False, salt=SALT)
    assert "manifest.csv" not in set(again["path"]) and len(again) == len(inside) == len(first)
    os.remove(root / "manifest.csv")

    read: list[str] = []
    original = scan_module.scan_file

    def counting(root_arg, rel, *args):
        read.append(rel.replace(os.sep, "/"))
        return original(root_arg, rel, *args)

    monkeypatch.setattr(scan_module, "scan_file", counting)
    unchanged = write_manifest(root, tmp_path / "manifest.parquet", workers=0, progress=False, salt=SALT)
    assert read == []
    pd.testing.assert_frame_equal(unchanged, first)
    raw_parquet = pd.read_parquet(tmp_path / "manifest.parquet")  # lists come back as arrays here
    pd.testing.assert_frame_equal(build_manifest(root, workers=0, progress=False, salt=SALT, previous=raw_parquet), first)
    assert read == []

    # a changed file re-reads its series; a new file of series b re-reads b; a new series is read
    os.utime(files_a[0], ns=(1, 1))
    extra = write_dicom_series(random_ct((5, 5, 5), np.eye(4), 2), tmp_path / "tmp", series_uid=None, patient_id="P2")
    new_series = write_dicom_series(random_ct((5, 5, 2), np.eye(4), 3), root / "c", patient_id="P3")
    import pydicom

    donor = pydicom.dcmread(files_b[0])
    added = pydicom.dcmread(extra[3])
    added.SeriesInstanceUID, added.StudyInstanceUID = donor.SeriesInstanceUID, donor.StudyInstanceUID
    added.save_as(root / "b" / "IM000004.dcm")
    read.clear()
    rescanned = build_manifest(root, workers=0, progress=False, salt=SALT, previous=tmp_path / "manifest.parquet")
    assert sorted(read) == sorted(
        [f"a/{p.name}" for p in files_a] + [f"b/{p.name}" for p in files_b] + ["b/IM000004.dcm"] + [f"c/{p.name}" for p in new_series]
    )
    assert _row(rescanned, "b").n_files == 4 and _row(rescanned, "b").shape_z == 4
    assert _row(rescanned, "b").volume_id == _row(first, "b").volume_id
    read.clear()
    fresh = build_manifest(root, workers=0, progress=False, salt=SALT)
    pd.testing.assert_frame_equal(rescanned, fresh)

    # a deleted file: the series is rebuilt from what is left
    os.remove(root / "b" / "IM000004.dcm")
    after_delete = build_manifest(root, workers=0, progress=False, salt=SALT, previous=rescanned)
    assert _row(after_delete, "b").n_files == 3
    # another salt: nothing is reused
    read.clear()
    build_manifest(root, workers=0, progress=False, salt="new-salt", previous=after_delete)
    assert len(read) == len(_scan_all(root))


def _scan_all(root) -> list[str]:
    return [os.path.join(d, f) for d, _, names in os.walk(root) for f in names]


def test_uneven_series_can_be_described_as_resampled(archive):
    frame = build_manifest(archive / "exportB", workers=0, progress=False, salt=SALT, on_uneven="resample")
    gap = _row(frame, "gap")
    assert gap.status == "ok" and "missing slice" in gap.reason and gap.shape_z == 7
    volume = load_manifest_volume(gap, archive / "exportB", on_uneven="resample", salt=SALT)
    assert volume.spatial_shape[2] == 7


def test_load_manifest_volume_refuses_rows_that_are_not_ok(manifest, archive):
    with pytest.raises(DataError, match="status error"):
        load_manifest_volume(_row(manifest, "exportB/gap"), archive)


def test_a_series_of_radiographs_gives_one_row_per_image(tmp_path):
    import pydicom

    source = PYDICOM_TEST_ROOT / "dicomdirtests/77654033/CR1/6154"
    for k in range(3):  # three views in one series (same SeriesInstanceUID), no positions
        dataset = pydicom.dcmread(source)
        dataset.SOPInstanceUID = f"1.2.826.0.1.3680043.8.498.9{k}"
        dataset.save_as(tmp_path / f"view{k}")
    frame = build_manifest(tmp_path, workers=0, progress=False, salt=SALT)
    assert len(frame) == 3 and set(frame["status"]) == {"ok"} and frame["volume_id"].is_unique
    assert frame["series_key"].nunique() == 1 and set(frame["shape_z"]) == {1}
    assert frame["manufacturer"].notna().all()  # acquisition fields decoded once per series, shared by its rows
    with pytest.raises(Exception, match="3 separate images"):
        load_volume(tmp_path, salt=SALT)
    assert load_manifest_volume(frame.iloc[1], tmp_path, salt=SALT).spatial_shape[2] == 1


def test_a_crashed_worker_does_not_stop_the_scan(archive, manifest, monkeypatch, caplog):
    parent = os.getpid()
    original = scan_module._scan_chunk

    def dies_in_workers(*args):
        if os.getpid() != parent:
            os._exit(1)  # a worker killed by the OOM killer or a crashing codec
        return original(*args)

    monkeypatch.setattr(scan_module, "_scan_chunk", dies_in_workers)
    with caplog.at_level(logging.WARNING, logger="medssl.io.scan"):
        frame = build_manifest(archive, workers=2, progress=False, salt=SALT)
    pd.testing.assert_frame_equal(frame, manifest)
    assert "header worker failed" in caplog.text
