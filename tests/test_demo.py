"""`medssl demo --quick`, end to end: every stage runs, the run folder is complete, and no planted
patient identifier reaches any output (manifest, logs, checkpoints, encoders, cache, reports).

The quick demo is the same code path as `make demo` with tiny sizes (see medssl.demo.QUICK_OVERRIDES).
"""

from __future__ import annotations

import json

from pathlib import Path

import pandas as pd
import pydicom
import pytest

from medssl.cli import main

pytestmark = pytest.mark.slow

IDENTIFYING_KEYWORDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "AccessionNumber",
    "InstitutionName",
    "InstitutionAddress",
    "ReferringPhysicianName",
    "OperatorsName",
    "StationName",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
)


def planted_identifiers(archive: Path) -> set[str]:
    """Every identifying value written into the cohort's DICOM headers, as text."""
    values: set[str] = set()
    for path in archive.rglob("*"):
        if not path.is_file():
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        except Exception:
            continue
        for keyword in IDENTIFYING_KEYWORDS:
            value = str(ds.get(keyword, "") or "").strip()
            if len(value) >= 6:
                values.add(value)
                if "^" in value:  # a person name as folders and reports may spell it
                    family, _, given = value.partition("^")
                    values.update({f"{family}_{given}", f"{given} {family}", f"{family}, {given}"})
    return values


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    mp = pytest.MonkeyPatch()
    mp.setenv("MEDSSL_DEID_SALT", "test-salt-not-secret")
    mp.setenv("MEDSSL_PROGRESS", "0")
    try:
        status = main(["demo", "--out", str(out), "--quick"])
    finally:
        mp.undo()
    assert status == 0
    return out


def test_the_demo_writes_a_complete_run_folder(demo_run, capsys):
    for relative in (
        "manifest.csv",
        "manifest.locations.csv",
        "pretrain/simclr/encoder.pt",
        "pretrain/simclr/metrics.csv",
        "pretrain/simclr/config.yaml",
        "study/results.csv",
        "study/summary.csv",
        "study/report.md",
        "study/report.html",
        "study/manifest.json",
    ):
        assert (demo_run / relative).is_file(), relative
    results = pd.read_csv(demo_run / "study" / "results.csv")
    arms = {"scratch", "simclr", "scratch+self_training", "simclr+self_training"}  # inits x self-training
    assert set(results["init"]) == arms
    assert set(results["n_labeled"]) == {2, 4}
    report = (demo_run / "study" / "report.md").read_text()
    assert all(arm in report for arm in arms) and "What each arm cost" in report
    manifest = json.loads((demo_run / "study" / "manifest.json").read_text())
    assert manifest["config"]["study"]["unlabeled"].endswith("manifest.csv")  # the archive a second time


def test_a_rerun_prints_the_studys_warnings_under_its_table(demo_run, capsys, monkeypatch):
    from medssl.demo import run_demo
    from medssl.study import findings

    monkeypatch.setenv("MEDSSL_DEID_SALT", "test-salt-not-secret")  # the fixture's
    monkeypatch.setenv("MEDSSL_PROGRESS", "0")
    # whatever the tiny run measured, the demo prints the study's warnings under its table
    monkeypatch.setattr(findings, "labels_matter_warning", lambda *a, **k: "**Warning: `scratch` is flat**")
    run_demo(demo_run, quick=True)
    out = capsys.readouterr().out
    assert out.index("Mean dice on the test patients") < out.index("Warning: scratch is flat") < out.index("Run folder")


def test_the_manifest_records_the_messy_files_without_stopping(demo_run):
    manifest = pd.read_csv(demo_run / "manifest.csv")
    statuses = set(manifest["status"])
    assert {"ok", "skipped", "error"} <= statuses
    assert (manifest["status"] == "ok").sum() >= 14  # 10 annotated + 4 unlabeled CT volumes


def test_test_patients_are_left_out_of_pretraining(demo_run):
    """Every volume of a test patient (all visits) is absent from what pretraining saw."""
    from medssl.data.manifest import load_manifest, manifest_root

    study = pd.read_json(demo_run / "study" / "manifest.json", typ="series")
    test_cases = set(study["splits"][0]["test"])
    labels = pd.read_csv(demo_run / "cohort" / "labels.csv")
    test_images = {str((demo_run / "cohort" / p).resolve()) for p in labels.loc[labels["case_id"].isin(test_cases), "image"]}
    manifest = load_manifest(demo_run / "manifest.csv")
    root = manifest_root(manifest)
    absolute = manifest["path"].map(lambda p: str((root / p).resolve()) if isinstance(p, str) else "")
    test_patients = set(manifest.loc[absolute.isin(test_images), "patient_key"])
    assert len(test_patients) >= 1
    test_volumes = set(manifest.loc[manifest["patient_key"].isin(test_patients), "volume_id"])
    seen = pd.read_csv(demo_run / "pretrain" / "volumes.csv")
    assert len(seen) >= 4
    assert not set(seen["volume_id"]) & test_volumes
    assert not set(seen["patient_key"]) & test_patients


def test_no_planted_identifier_reaches_any_output(demo_run):
    identifiers = planted_identifiers(demo_run / "cohort" / "archive")
    assert len(identifiers) > 20  # the cohort really plants names, IDs, birth dates, UIDs
    site_local = {demo_run / "manifest.locations.csv"}
    leaks = []
    for path in demo_run.rglob("*"):
        if not path.is_file() or path in site_local or (demo_run / "cohort") in path.parents:
            continue
        data = path.read_bytes()
        for value in identifiers:
            if value.encode() in data:
                leaks.append(f"{path.relative_to(demo_run)}: {value}")
    assert not leaks, "identifiers found in outputs:\n" + "\n".join(leaks[:20])
    # the search does find them where they are allowed: the site-local locations file
    located = (demo_run / "manifest.locations.csv").read_bytes()
    assert any(value.encode() in located for value in identifiers)


def test_a_method_can_have_its_own_augmentation_fields():
    from medssl.demo import load_demo_config, method_augmentation
    from medssl.errors import ConfigError

    config = load_demo_config(False, [
        "demo.method_augmentation={local_contrastive: {patch_size: [40, 40, 40], shared_geometry: true}}"])
    own = method_augmentation(config, "local_contrastive")
    assert own.patch_size == (40, 40, 40) and own.shared_geometry
    assert own.preset == config.pretrain.augmentation.preset  # every other field is the section's
    assert method_augmentation(config, "simclr") == config.pretrain.augmentation
    assert config.pretrain.augmentation.patch_size == (64, 64)  # the section itself is unchanged (2D track)
    bad = load_demo_config(False, ["demo.method_augmentation={simclr: {patchsize: [40, 40, 40]}}"])
    with pytest.raises(ConfigError, match="demo.method_augmentation.simclr"):
        method_augmentation(bad, "simclr")
