"""A study's report says what each semi-supervised arm's teacher got right on the unlabeled volumes,
and warns where the teacher was rarely confident on a class or mostly wrong about it."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from medssl.study.report import write_report
from medssl.study.teacher_diagnostics import pseudo_label_table, teacher_warning


def write_cell(run_dir, arm, n_train, seed, coverage, accuracy):
    folder = run_dir / "cells" / arm
    folder.mkdir(parents=True, exist_ok=True)
    history = {"steps": 10}
    if coverage is not None:
        history.update(pseudo_label_coverage=coverage, pseudo_label_accuracy=accuracy)
    record = {"arm": arm, "n_train": n_train, "seed": seed, "history": history}
    (folder / f"b{n_train}_s{seed}_f0.json").write_text(json.dumps(record))


def test_the_table_averages_each_arms_cells_and_skips_labels_only_arms(tmp_path):
    write_cell(tmp_path, "scratch", 2, 0, None, None)
    write_cell(tmp_path, "scratch+mean_teacher", 2, 0, [1.0, 0.6, 0.2], [0.99, 0.7, None])
    write_cell(tmp_path, "scratch+mean_teacher", 2, 1, [0.9, 0.4, 0.4], [0.97, 0.9, 0.5])
    write_cell(tmp_path, "scratch+mean_teacher", 8, 0, [1.0, 0.5, 0.0], [0.99, 0.8, None])
    table = pseudo_label_table(tmp_path)
    assert table["arm"].tolist() == ["scratch+mean_teacher"] * 2 and table["labeled cases"].tolist() == [2, 8]
    first = table.iloc[0]
    assert np.isclose(first["coverage 1"], 0.5) and np.isclose(first["accuracy 1"], 0.8)
    assert np.isclose(first["accuracy 2"], 0.5)  # the None of seed 0 is not a zero
    assert pd.isna(table.iloc[1]["accuracy 2"]) and table.iloc[1]["coverage 2"] == 0.0
    assert pseudo_label_table(tmp_path / "nothing").empty


def test_a_class_the_teacher_never_trusts_or_gets_wrong_is_named_and_background_is_not():
    table = pd.DataFrame({"arm": ["a+mean_teacher", "a+mean_teacher"], "labeled cases": [2, 8],
                          "coverage 0": [0.01, 0.01], "coverage 1": [0.6, 0.5], "coverage 2": [0.3, 0.0],
                          "accuracy 1": [0.9, 0.3], "accuracy 2": [0.6, np.nan]})
    text = teacher_warning(table, lambda k: {1: "liver", 2: "kidneys"}[k])
    assert "with 8 labeled cases: kidneys (coverage 0.00)" in text
    assert "with 8 labeled cases: liver (accuracy 0.30)" in text
    assert "with 2 labeled cases" not in text  # background's low coverage is no finding
    fine = table.assign(**{"coverage 2": [0.3, 0.2], "accuracy 1": [0.9, 0.8]})
    assert teacher_warning(fine) is None and teacher_warning(pd.DataFrame()) is None


def test_the_report_shows_the_teacher_table_and_its_warning(tmp_path):
    rows = [dict(init=init, budget=float(b), n_labeled=b, seed=s, fold=0, case_id=c, metric="dice", value=v)
            for init in ("scratch", "scratch+mean_teacher") for b in (2, 8) for s in (0, 1)
            for c, v in (("a", 0.5 + 0.02 * b), ("b", 0.6 + 0.02 * b))]
    teacher = pd.DataFrame({"arm": ["scratch+mean_teacher"] * 2, "labeled cases": [2, 8],
                            "coverage 0": [0.97, 0.98], "accuracy 0": [1.0, 1.0],
                            "coverage 1": [0.4, 0.01], "accuracy 1": [0.8, 0.9]})
    manifest = {"config": {"finetune": {"mask_labels": [1], "class_names": {"1": "liver"}}}}
    text = write_report(pd.DataFrame(rows), tmp_path, n_resamples=50, manifest=manifest,
                        teacher=teacher).markdown.read_text()
    assert "## What the teacher got right on the unlabeled volumes" in text
    assert "coverage liver" in text and "a teacher was rarely confident" in text
    assert "coverage background" in text and text.count("coverage liver") == 1  # class 0 is not a mask label
    assert "with 8 labeled cases: liver" in text
    plain = write_report(pd.DataFrame(rows), tmp_path / "plain", n_resamples=50).markdown.read_text()
    assert "What the teacher got right" not in plain


def test_self_trainings_pseudo_label_dice_joins_the_table_and_the_report(tmp_path):
    """Self-training labels whole volumes: its cells also record the kept pseudo-labels' Dice."""
    write_cell(tmp_path, "scratch+self_training", 2, 0, [0.5, 0.6, 0.5], [0.99, 0.8, 0.7])
    write_cell(tmp_path, "scratch+self_training", 2, 1, [0.5, 0.4, 0.5], [0.99, 0.9, 0.6])
    for seed, dice in ((0, [None, 0.8, 0.6]), (1, [None, 0.7, None])):
        path = tmp_path / "cells" / "scratch+self_training" / f"b2_s{seed}_f0.json"
        record = json.loads(path.read_text())
        record["history"]["pseudo_label_dice"] = dice
        path.write_text(json.dumps(record))
    table = pseudo_label_table(tmp_path)
    assert "dice 0" not in table.columns  # background has no Dice of its own
    assert np.isclose(table.iloc[0]["dice 1"], 0.75) and np.isclose(table.iloc[0]["dice 2"], 0.6)
    rows = [dict(init=init, budget=2.0, n_labeled=2, seed=s, fold=0, case_id=c, metric="dice", value=0.5 + 0.1 * s)
            for init in ("scratch", "scratch+self_training") for s in (0, 1) for c in ("a", "b")]
    manifest = {"config": {"finetune": {"mask_labels": [1, 2], "class_names": {"1": "liver", "2": "kidneys"}}}}
    text = write_report(pd.DataFrame(rows), tmp_path / "report", n_resamples=50, manifest=manifest,
                        teacher=table).markdown.read_text()
    assert "dice kidneys" in text and "dice liver" in text and "*dice* the mean Dice" in text
