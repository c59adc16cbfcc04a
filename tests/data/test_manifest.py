"""The archive manifest: one row per volume from headers only, errors recorded, no identifier in any
output (headers, folder and file names included: locations live in a separate site-local file),
geometry equal to what load_volume gives, parallel == serial, re-scans that skip unchanged files."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medssl.errors import DataError
from medssl.io import Volume, load_volume, save_volume
from medssl.io.dicom_write import write_dicom_series
import medssl.io.scan as scan_module
from medssl.data.manifest import (
    ACQUISITION_COLUMNS,
    LOCATION_COLUMNS,
    SCHEMA,
    build_manifest,
    load_manifest,
    load_manifest_volume,
    locations_path,
    require_locations,
    save_manifest,
    write_manifest,
)
from medssl.io.deid import ACQUISITION_FIELDS
from medssl.io.redaction import redact_locations
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
    # reasons name a file by its index in the row's ``files`` (in the locations file), not by path
    assert broken.reason.startswith("1 of 4 files unreadable: files[1]: file truncated inside the header")
    assert broken.files[1] == "exportB/broken/IM000002.dcm" and "exportB" not in broken.reason
    assert "SR" in _row(manifest, "exportB/report.dcm").reason
    assert "derived object" in _row(manifest, "mixed/seg.dcm").reason
    assert _row(manifest, "README.txt").reason == "not a DICOM or NIfTI file"
    mixed = manifest[(manifest["path"] == "mixed") & (manifest["status"] == "ok")]
    assert sorted(mixed["n_files"]) == [2, 3]  # two series in one folder: two rows
    assert manifest["volume_id"].is_unique
    # ``files`` lists DICOM files only: a NIfTI row (or any single non-DICOM file) has None
    assert manifest.loc[manifest["format"] != "dicom", "files"].isna().all()
    dicom = manifest[manifest["format"] == "dicom"]
    assert all(isinstance(f, list) and len(f) == n for f, n in zip(dicom["files"], dicom["n_files"]))


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
        assert locations_path(path) == tmp_path / f"manifest.locations{suffix}" and locations_path(path).is_file()
        pd.testing.assert_frame_equal(load_manifest(path), manifest)
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # atomic: no temporaries left
    shareable = pd.read_csv(tmp_path / "manifest.csv")
    located = pd.read_csv(tmp_path / "manifest.locations.csv")
    assert list(shareable.columns) == [c for c in SCHEMA if c not in LOCATION_COLUMNS]
    assert list(located.columns) == ["volume_id", *LOCATION_COLUMNS, "scan_root"]
    with pytest.raises(ValueError):
        save_manifest(manifest, tmp_path / "manifest.xlsx")
    with pytest.raises(DataError, match="does not exist"):
        load_manifest(tmp_path / "absent.csv")
    pd.DataFrame({"a": [1]}).to_csv(tmp_path / "bad.csv")
    with pytest.raises(DataError, match="lacks the columns"):
        load_manifest(tmp_path / "bad.csv")
    with pytest.raises(DataError, match="no such folder"):
        build_manifest(tmp_path / "nowhere")
    duplicated = pd.concat([manifest, manifest.iloc[:1]], ignore_index=True)
    with pytest.raises(DataError, match="unique"):
        save_manifest(duplicated, tmp_path / "dup.csv")


def test_rescan_reads_only_new_and_changed_files(tmp_path, monkeypatch):
    root = tmp_path / "archive"
    files_a = write_dicom_series(random_ct((5, 5, 4), np.eye(4), 1), root / "a", patient_id="P1")
    files_b = write_dicom_series(random_ct((5, 5, 3), np.eye(4), 2), root / "b", patient_id="P2")
    save_volume(Volume(np.zeros((1, 4, 4, 4)), np.eye(4)), root / "n" / "scan.nii.gz")
    first = write_manifest(root, tmp_path / "manifest.parquet", workers=0, progress=False, salt=SALT)
    inside = write_manifest(root, root / "manifest.csv", workers=0, progress=False, salt=SALT)
    again = write_manifest(root, root / "manifest.csv", workers=0, progress=False, salt=SALT)
    assert {"manifest.csv", "manifest.locations.csv"}.isdisjoint(again["path"]) and len(again) == len(inside) == len(first)
    os.remove(root / "manifest.csv")
    os.remove(root / "manifest.locations.csv")

    read: list[str] = []
    original = scan_module.scan_file

    def counting(root_arg, rel, *args):
        read.append(rel.replace(os.sep, "/"))
        return original(root_arg, rel, *args)

    monkeypatch.setattr(scan_module, "scan_file", counting)
    unchanged = write_manifest(root, tmp_path / "manifest.parquet", workers=0, progress=False, salt=SALT)
    assert read == []
    pd.testing.assert_frame_equal(unchanged, first)
    raw_parquet = pd.read_parquet(tmp_path / "manifest.parquet").merge(  # lists come back as arrays here
        pd.read_parquet(tmp_path / "manifest.locations.parquet"), on="volume_id")
    pd.testing.assert_frame_equal(build_manifest(root, workers=0, progress=False, salt=SALT, previous=raw_parquet), first)
    assert read == []
    # the shareable manifest alone cannot tell which files are unchanged: everything is read again
    shared_only = tmp_path / "shared" / "manifest.parquet"
    shared_only.parent.mkdir()
    shutil.copy(tmp_path / "manifest.parquet", shared_only)
    pd.testing.assert_frame_equal(build_manifest(root, workers=0, progress=False, salt=SALT, previous=shared_only), first)
    assert len(read) == len(_scan_all(root))
    read.clear()

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


# ---------------------------------------------------------------------------------------------
# Identifiers in folder and file names: the shareable manifest holds no location

PATIENT_FOLDER = f"{PLANTED['patient_name']}_{PLANTED['patient_id']}"  # ZZTOPSECRET^WILHELMINA_MRN-99887766
STUDY_FOLDER = f"{PLANTED['study_date']}_{PLANTED['accession_number']}"  # 20230719_ACC-55443322
FILE_STEM = "ZZTOPSECRET_WILHELMINA"


@pytest.fixture(scope="module")
def named_archive(tmp_path_factory):
    """A PACS-like export whose folders and files are named after the patient (planted identifiers in
    folder names, file names and headers), with an error of each kind whose text could name a path."""
    root = tmp_path_factory.mktemp("named")
    study = root / "CT" / PATIENT_FOLDER / STUDY_FOLDER
    write_planted_series(study / "SE1_AX", seed=1, shape=(6, 5, 3), file_names=[f"{FILE_STEM}_{k}.dcm" for k in range(3)])
    gap = write_planted_series(study / "SE2_GAP", seed=2, shape=(5, 5, 5), series_uid="1.2.826.0.1.3680043.8.498.434344",
                               file_names=[f"{FILE_STEM}_{k}.dcm" for k in range(5)])
    os.remove(gap[2])  # a missing slice
    broken = write_planted_series(study / "SE3_BROKEN", seed=3, shape=(5, 5, 3), series_uid="1.2.826.0.1.3680043.8.498.434345",
                                  file_names=[f"{FILE_STEM}_{k}.dcm" for k in range(3)])
    broken[1].write_bytes(broken[1].read_bytes()[:-20])  # pixel data cut short (the header is whole)
    mr = root / "MR" / PATIENT_FOLDER
    save_volume(Volume(np.ones((1, 5, 4, 3), np.float32), np.diag([1.1, 1.2, 1.3, 1.0]), "MR"), mr / f"{FILE_STEM}_T1w.nii.gz")
    (mr / f"{FILE_STEM}_T1w.json").write_text("{not json")  # an unreadable sidecar: logged
    (mr / f"{PLANTED['patient_id']}_T2w.nii.gz").write_bytes(b"\x1f\x8b" + b"\x00" * 40)  # corrupt: nibabel names the file
    (root / "CT" / PATIENT_FOLDER / f"{FILE_STEM}_notes.txt").write_text("referral letter")
    return root


def _identifiers() -> list[str]:
    return planted_strings() + [PATIENT_FOLDER, STUDY_FOLDER, FILE_STEM, "DR^PLANTEDNAME"]


def _assert_clean(data: bytes, what: str) -> None:
    for planted in _identifiers():
        assert planted.encode() not in data, f"{planted} leaked into the {what}"


@pytest.mark.parametrize("on_uneven", ["error", "resample"])
def test_no_location_or_identifier_reaches_shareable_outputs(named_archive, tmp_path, caplog, on_uneven):
    with caplog.at_level(logging.DEBUG):
        frame = build_manifest(named_archive, workers=0, progress=False, salt=SALT, on_uneven=on_uneven)
        csv = save_manifest(frame, tmp_path / "manifest.csv")
        parquet = save_manifest(frame, tmp_path / "manifest.parquet")
    assert len(frame) == 7 and (frame["status"] == "ok").sum() == (3 if on_uneven == "resample" else 2)
    # the planted identifiers are in the locations (the test can fail) ...
    assert PATIENT_FOLDER in " ".join(frame["path"]) and FILE_STEM in json.dumps(frame["files"].tolist())
    assert PATIENT_FOLDER.encode() in locations_path(csv).read_bytes()
    assert PATIENT_FOLDER.encode() in locations_path(parquet).read_bytes()
    # ... and nowhere else: frame columns, shareable files (raw bytes), log records
    _assert_clean(frame.drop(columns=list(LOCATION_COLUMNS)).to_json().encode(), "frame")
    _assert_clean(csv.read_bytes(), "shareable CSV")
    _assert_clean(parquet.read_bytes(), "shareable Parquet")
    _assert_clean(pd.read_parquet(parquet).to_json().encode(), "decoded Parquet")  # compression could hide bytes
    _assert_clean(caplog.text.encode(), "log")
    assert "sidecar" in caplog.text and "never share" in caplog.text  # the records are there, redacted
    if on_uneven == "resample":
        assert "resampled" in caplog.text

    by_name = {Path(p).name: row for p, row in zip(frame["path"], frame.to_dict("records"))}
    gap = by_name["SE2_GAP"]
    assert "1 missing slice" in gap["reason"]
    broken = by_name["SE3_BROKEN"]
    assert broken["status"] == "error" and broken["reason"].startswith("1 of 3 files unreadable: files[1]: ")
    assert broken["files"][1].endswith(f"{FILE_STEM}_1.dcm")
    corrupt = by_name[f"{PLANTED['patient_id']}_T2w.nii.gz"]
    assert corrupt["status"] == "error" and "not a readable NIfTI file" in corrupt["reason"] and "<file>" in corrupt["reason"]


def test_load_manifest_joins_locations_and_volumes_load(named_archive, tmp_path):
    frame = build_manifest(named_archive, workers=0, progress=False, salt=SALT)
    ok = frame[frame["status"] == "ok"]
    for suffix in (".csv", ".parquet"):
        loaded = load_manifest(save_manifest(frame, tmp_path / f"m{suffix}"))
        pd.testing.assert_frame_equal(loaded, frame)
        for row in loaded[loaded["status"] == "ok"].to_dict("records"):
            volume = load_manifest_volume(row, named_archive, salt=SALT)
            assert volume.spatial_shape == (row["shape_x"], row["shape_y"], row["shape_z"])
            direct = load_volume(named_archive / row["path"], salt=SALT)  # a NIfTI file or a one-series folder
            np.testing.assert_array_equal(direct.array, volume.array)
    assert set(ok["format"]) == {"dicom", "nifti"}


def test_shareable_manifest_alone_cannot_load_volumes(named_archive, tmp_path, caplog):
    frame = build_manifest(named_archive, workers=0, progress=False, salt=SALT)
    save_manifest(frame, tmp_path / "m.parquet")
    shared = tmp_path / "shared" / "m.parquet"  # what leaves the hospital
    shared.parent.mkdir()
    shutil.copy(tmp_path / "m.parquet", shared)
    alone = load_manifest(shared)
    assert not set(LOCATION_COLUMNS) & set(alone.columns)
    pd.testing.assert_frame_equal(alone, frame.drop(columns=list(LOCATION_COLUMNS)))
    with pytest.raises(DataError, match=r"locations file .*m\.locations\.parquet is missing"):
        load_manifest_volume(alone.iloc[0], named_archive)
    with pytest.raises(DataError, match="locations file .* is missing"):
        require_locations(alone)
    with pytest.raises(DataError, match="locations file .* is missing"):
        load_manifest(shared, require_locations=True)
    with pytest.raises(DataError, match="has no file locations"):
        load_manifest_volume(alone.to_dict("records")[0], named_archive)
    require_locations(frame)  # the full frame passes
    # saving it again writes the shareable file only (there is nothing to locate)
    with caplog.at_level(logging.INFO, logger="medssl"):
        save_manifest(alone, tmp_path / "again.csv")
    assert (tmp_path / "again.csv").is_file() and not locations_path(tmp_path / "again.csv").exists()
    assert "without file locations" in caplog.text
    pd.testing.assert_frame_equal(load_manifest(tmp_path / "again.csv"), alone)


def test_manifest_and_locations_that_do_not_match(manifest, tmp_path):
    path = save_manifest(manifest, tmp_path / "m.csv")
    locations = locations_path(path)
    full = pd.read_csv(locations)
    full.iloc[1:].to_csv(locations, index=False)  # a row lost
    with pytest.raises(DataError, match=r"m\.csv and its locations file .*m\.locations\.csv do not match: 1 manifest rows"):
        load_manifest(path)
    extra = pd.concat([full, full.iloc[:1].assign(volume_id="volume-0000000000000000")])
    extra.to_csv(locations, index=False)  # a stale row from another build
    with pytest.raises(DataError, match="1 locations belong to no manifest row"):
        load_manifest(path)
    full.drop(columns=["volume_id"]).to_csv(locations, index=False)
    with pytest.raises(DataError, match="no volume_id column"):
        load_manifest(path)


def test_extra_columns_stay_local_unless_shared(manifest, tmp_path):
    frame = manifest.copy()
    frame["mask_path"] = [f"masks/{p}.nii.gz" for p in frame["path"]]
    frame["split"] = ["train"] * len(frame)
    path = save_manifest(frame, tmp_path / "m.csv", share=["split"])
    assert "split" in pd.read_csv(path).columns and "mask_path" not in pd.read_csv(path).columns
    assert "mask_path" in pd.read_csv(locations_path(path)).columns
    loaded = load_manifest(path)
    assert list(loaded.columns) == [*SCHEMA, "split", "mask_path"]
    pd.testing.assert_frame_equal(loaded[list(frame.columns)], frame, check_dtype=False)
    save_manifest(frame, tmp_path / "strict.csv")  # by default every extra column stays local
    assert "split" not in pd.read_csv(tmp_path / "strict.csv").columns
    for column in ("mask_path", "path"):
        with pytest.raises(ValueError, match="cannot be shared"):
            save_manifest(frame, tmp_path / "x.csv", share=[column])
    with pytest.raises(ValueError, match="not an extra column"):
        save_manifest(frame, tmp_path / "x.csv", share=["nope"])


def test_a_manifest_of_an_older_version_still_loads(manifest, tmp_path, caplog):
    legacy = manifest.copy()
    legacy["files"] = [f if f else [p] for f, p in zip(legacy["files"], legacy["path"])]  # NIfTI rows had files=[path]
    legacy["reason"] = legacy["reason"].str.replace("files[1]", "exportB/broken/IM000002.dcm", regex=False)
    out = legacy.copy()
    for column in ("files", "file_stats"):
        out[column] = [json.dumps(v) if isinstance(v, list) else None for v in out[column]]
    out.to_csv(tmp_path / "old.csv", index=False)  # one file, locations inside
    with caplog.at_level(logging.WARNING, logger="medssl"):
        loaded = load_manifest(tmp_path / "old.csv")
    assert "do not share it" in caplog.text
    assert loaded.loc[loaded["format"] == "nifti", "files"].isna().all()
    # saved again: split in two, and the old reason's path is replaced by the file's index
    path = save_manifest(loaded, tmp_path / "new.csv")
    assert "exportB" not in path.read_text() and "files[1]: file truncated" in path.read_text()
    pd.testing.assert_frame_equal(load_manifest(path), manifest)


def test_nifti_rows_are_single_files_for_the_cache(manifest, archive):
    from medssl.data.cache_requests import request_from_row

    nifti = manifest[manifest["format"] == "nifti"].iloc[0]
    series = _row(manifest, "exportA/study1/ct")
    assert request_from_row(nifti, archive).image == str(archive / nifti["path"])
    assert request_from_row(series, archive).image == [str(archive / f) for f in series["files"]]


def test_an_unlistable_folder_is_an_error_row_named_by_id(named_archive, monkeypatch, caplog):
    locked = named_archive / "CT" / PATIENT_FOLDER / STUDY_FOLDER / "SE1_AX"
    original = os.scandir

    def scandir(path):
        if os.fspath(path) == str(locked):
            raise PermissionError(13, "Permission denied", str(path))
        return original(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with caplog.at_level(logging.DEBUG, logger="medssl"):
        frame = build_manifest(named_archive, workers=0, progress=False, salt=SALT)
    row = frame[frame["reason"].fillna("").str.startswith("folder cannot be listed")]
    assert len(row) == 1 and row.iloc[0]["status"] == "error" and row.iloc[0]["path"] == str(locked.relative_to(named_archive))
    assert "Permission denied" in row.iloc[0]["reason"] and "cannot list a folder" in caplog.text
    _assert_clean(caplog.text.encode(), "log")
    _assert_clean(frame.drop(columns=list(LOCATION_COLUMNS)).to_json().encode(), "frame")


def test_columns_are_allow_listed():
    """Every column is a location, a pseudonym, bookkeeping, geometry or an allow-listed acquisition
    field: a new column has to be added here on purpose."""
    assert set(ACQUISITION_COLUMNS.values()) <= set(ACQUISITION_FIELDS)
    reviewed = {"volume_id", "status", "reason", "format", "n_files", "patient_key", "study_key", "series_key", "sop_class",
                "transfer_syntax", "channels", "shape_x", "shape_y", "shape_z", "spacing_x", "spacing_y", "spacing_z",
                "orientation", "gantry_tilt_deg", "spacing_known", "echo_number", "n_frames", "size_bytes", "salt_id"}
    assert set(SCHEMA) == reviewed | set(ACQUISITION_COLUMNS) | set(LOCATION_COLUMNS)


def test_redact_locations_replaces_whole_paths_only():
    tokens = {"CT/SMITH^JO/ct": "<path>", "CT/SMITH^JO/ct/IM1.dcm": "files[0]", "/data": "<root>"}
    assert redact_locations("cannot read /data/CT/SMITH^JO/ct/IM1.dcm: truncated", tokens) == "cannot read <root>/files[0]: truncated"
    assert redact_locations("series 3 (2 files in CT/SMITH^JO/ct).", tokens) == "series 3 (2 files in <path>)."
    assert redact_locations("derived object, CT/SMITH^JO/ctx", tokens) == "derived object, CT/SMITH^JO/ctx"
    assert redact_locations("in 'CT\\\\SMITH^JO\\\\ct'", tokens) == "in '<path>'"  # repr of a Windows path
    assert redact_locations("an object", {"ct": "<path>"}) == "an object"  # too short to redact
    assert redact_locations(None, tokens) is None


def test_pretraining_refuses_a_manifest_without_its_locations(manifest, archive, tmp_path):
    from medssl.config import load_config
    from medssl.engine.pretrain import resolve_entries

    path = save_manifest(manifest, tmp_path / "m.csv")
    table, root = resolve_entries(load_config(None, [f"data.manifest={path}", f"data.root={archive}"]))
    assert root == archive and table["path"].notna().all() and len(table) == (manifest["status"] == "ok").sum()
    locations_path(path).unlink()
    with pytest.raises(DataError, match="locations file .* is missing"):
        resolve_entries(load_config(None, [f"data.manifest={path}", f"data.root={archive}"]))


def test_the_manifest_remembers_the_scanned_root_so_it_loads_from_anywhere(tmp_path):
    """A manifest saved outside the archive still finds the files: the locations file records the root."""
    from medssl.data.manifest import build_manifest, load_manifest, load_manifest_volume, manifest_root, save_manifest
    from medssl.synthetic import make_tiny_mr_nifti

    archive = tmp_path / "archive"
    make_tiny_mr_nifti(archive / "sub-01" / "t1.nii.gz", seed=0)
    out = tmp_path / "elsewhere" / "manifest.csv"
    save_manifest(build_manifest(archive, workers=1, progress=False), out)
    loaded = load_manifest(out)
    assert manifest_root(loaded) == archive.resolve()
    assert str(archive) not in out.read_text()  # the root is a location: not in the shareable file
    row = loaded[loaded["status"] == "ok"].iloc[0]
    assert load_manifest_volume(row, manifest_root(loaded)).spatial_shape == (24, 24, 24)
