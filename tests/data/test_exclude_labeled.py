"""data.exclude: pretraining leaves out every volume of the patients of a labels table."""

from __future__ import annotations

import pandas as pd
import pytest

from medssl.config import load_config
from medssl.data.manifest import load_manifest, write_manifest
from medssl.engine.pretrain import resolve_entries
from medssl.errors import DataError
from medssl.synthetic import make_synthetic_cohort


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("exclude")
    mp = pytest.MonkeyPatch()
    mp.setenv("MEDSSL_DEID_SALT", "exclude-test-salt")
    make_synthetic_cohort(root / "cohort", n_ct=0, n_mr=6, n_unlabeled_ct=0, n_unlabeled_mr=3, size=16,
                          messy=False, progress=False)
    write_manifest(root / "cohort" / "archive", root / "manifest.csv", progress=False)
    yield root
    mp.undo()


def _entries(archive, *overrides):
    config = load_config(None, [f"data.manifest={archive / 'manifest.csv'}", "data.modalities=[MR]", *overrides])
    table, _ = resolve_entries(config)
    return table


def test_every_volume_of_a_labeled_patient_is_left_out(archive):
    everything = _entries(archive)
    kept = _entries(archive, f"data.exclude={archive / 'cohort' / 'labels.csv'}")
    # the synth labels table has its own patient pseudonyms: matched by image path, then by patient
    labels = pd.read_csv(archive / "cohort" / "labels.csv")
    assert len(everything) == 9 and len(kept) == 3  # the unlabeled volumes only
    labeled_patients = set(everything["patient_key"]) - set(kept["patient_key"])
    assert len(labeled_patients) == labels["patient_key"].nunique()


def test_a_labels_table_built_from_the_manifest_matches_by_patient_key(archive, tmp_path):
    manifest = load_manifest(archive / "manifest.csv", require_locations=True)
    one_patient = manifest[manifest["status"] == "ok"].iloc[[0]]
    table = tmp_path / "labels.csv"  # no image column: the patient key alone
    pd.DataFrame({"case_id": ["a"], "patient_key": one_patient["patient_key"]}).to_csv(table, index=False)
    kept = _entries(archive, f"data.exclude={table}")
    assert one_patient["patient_key"].iloc[0] not in set(kept["patient_key"])
    assert len(kept) == 9 - (manifest["patient_key"] == one_patient["patient_key"].iloc[0]).sum()


def test_a_labels_table_that_matches_nothing_is_an_error(archive, tmp_path):
    table = tmp_path / "labels.csv"
    pd.DataFrame({"case_id": ["a"], "patient_key": ["Pother-salt"], "image": ["elsewhere/a.nii.gz"]}).to_csv(
        table, index=False)
    with pytest.raises(DataError, match="none of the 1 labeled case"):
        _entries(archive, f"data.exclude={table}")
