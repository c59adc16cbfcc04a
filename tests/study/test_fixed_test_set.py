"""A designated test set is used as given: the labels table's ``split`` column or ``study.test_cases``,
honoured by the label-efficiency study and by ``medssl finetune``; never drawn into training."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from medssl.config import load_config
from medssl.data.fixed_split import split_with_designated_test
from medssl.errors import ConfigError, DataError, SplitLeakageError
from medssl.eval.run import run_finetuning
from medssl.study.label_efficiency import run_label_efficiency

from tests.study.cohort import write_disk_cohort

BASE = [
    "pretrain.encoder.name=resnet10_tiny", "pretrain.encoder.spatial_dims=2",
    "data.preprocess.target_spacing=null", "data.preprocess.crop_foreground=false",
    "finetune.patch_size=[32,32]", "finetune.steps=2", "finetune.batch_size=2", "finetune.device=cpu",
    "finetune.mask_labels=[1,2]", "finetune.num_classes=3", "finetune.eval_metrics=[dice]",
    "study.budgets=[2,3]", "study.seeds=[0,1]", "study.bootstrap=20",
]
# write_disk_cohort: patients P001 = case00 + case01, P002 = case02, P003 = case03 + case04, ...
DESIGNATED = ["case02", "case05", "case08", "case11"]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    labels = write_disk_cohort(tmp_path_factory.mktemp("cohort"), 12)
    table = pd.read_csv(labels)
    table["split"] = ["test" if c in DESIGNATED else "train" for c in table["case_id"]]
    table.loc[table["case_id"].isin(["case09", "case10"]), "split"] = "val"  # patient P007's two scans
    with_column = labels.parent / "labels_split.csv"
    table.to_csv(with_column, index=False)
    return labels, with_column


def _config(labels, tmp_path, *extra):
    return load_config(None, BASE + [f"study.labels={labels}", f"data.cache_dir={tmp_path / 'cache'}", *extra])


def test_the_study_honours_the_split_column(cohort, tmp_path):
    _, with_column = cohort
    results = run_label_efficiency(_config(with_column, tmp_path), tmp_path / "run")
    assert set(results["case_id"]) == set(DESIGNATED)  # every cell scored exactly the designated cases
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["test_set"] == "designated"
    assert manifest["splits"][0]["test"] == DESIGNATED and manifest["splits"][0]["val"] == ["case09", "case10"]
    for record in (tmp_path / "run" / "cells" / "scratch").glob("*.json"):
        train = set(json.loads(record.read_text())["train_ids"])
        assert train and not train & (set(DESIGNATED) | {"case09", "case10"})


def test_medssl_finetune_honours_test_cases_and_leaves_out_other_scans_of_test_patients(cohort, tmp_path, caplog):
    labels, _ = cohort
    config = _config(labels, tmp_path, "study.test_cases=[case00, case06]")
    run = run_finetuning(config, tmp_path / "ft")
    record = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    assert record["test_ids"] == ["case00", "case06"] and run.n_test == 2
    # case01 is P001's second scan, case07 is P005's (case06): neither trains
    assert not {"case00", "case01", "case06", "case07"} & set(record["train_ids"])
    assert len(record["train_ids"]) == 8
    assert "left out of training" in caplog.text


def test_a_drawn_split_is_unchanged_without_a_designation(cohort, tmp_path):
    labels, _ = cohort
    run_finetuning(_config(labels, tmp_path, "study.test_fraction=0.3"), tmp_path / "drawn")
    record = json.loads((tmp_path / "drawn" / "metrics.json").read_text())
    assert record["test_ids"] and not set(record["test_ids"]) & set(record["train_ids"])


def _table(**columns):
    base = {"case_id": ["a", "b", "c", "d", "e"], "patient": ["1", "2", "3", "4", "4"]}
    return pd.DataFrame({**base, **columns})


def test_values_validation_draw_and_errors():
    sides = split_with_designated_test(_table(split=["Training", "TEST", None, "validation", "VAL"]))
    assert sides.tolist() == ["train", "test", "train", "val", "val"]
    drawn_val = split_with_designated_test(_table(), test_cases=["b"], val_fraction=0.3, seed=0)
    assert drawn_val.tolist().count("val") == 1 and drawn_val["b" == _table()["case_id"]].item() == "test"
    with pytest.raises(DataError, match=r"holds \['hold-out'\] \(cases \['c'\]\)"):
        split_with_designated_test(_table(split=["train", "test", "hold-out", "train", "train"]))
    with pytest.raises(DataError, match=r"not in the labels table.*\['z'\]"):
        split_with_designated_test(_table(), test_cases=["a", "z"])
    with pytest.raises(ConfigError, match="both designate a test set"):
        split_with_designated_test(_table(split=["test", "train", "train", "train", "train"]), test_cases=["a"])
    with pytest.raises(SplitLeakageError, match="4"):  # patient 4 on train and val
        split_with_designated_test(_table(split=["test", "train", "train", "val", "train"]))
    with pytest.raises(DataError, match="no training case"):
        split_with_designated_test(_table(), test_cases=["a", "b", "c", "d"])
    with pytest.raises(ConfigError, match="do not combine with folds"):
        load_config(None, ["study.test_cases=[a]", "study.folds=3"])
    with pytest.raises(ConfigError, match="non-empty list"):
        load_config(None, ["study.test_cases=a"])
