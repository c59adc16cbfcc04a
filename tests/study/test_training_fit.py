"""A study's report shows how well each run fit each class on its own training batches, and names
the runs that never fit a class (a training stall) apart from those that fit it and failed on test."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from medssl.study.report import write_report
from medssl.study.plots import plot_training_fit
from medssl.study.training_fit import (
    stalled_class_warning,
    training_fit_curves,
    training_fit_summary,
    training_fit_table,
)


def write_cell(run_dir, arm, n_train, seed, fit, curve=None, every=50, steps=600):
    folder = run_dir / "cells" / arm
    folder.mkdir(parents=True, exist_ok=True)
    history = {"steps": steps}
    if fit is not None:
        history["train_class_dice"] = fit
    if curve is not None:
        history.update(train_class_dice_curve=curve, train_class_dice_every=every)
    record = {"arm": arm, "n_train": n_train, "seed": seed, "fold": 0, "history": history}
    (folder / f"b{n_train}_s{seed}_f0.json").write_text(json.dumps(record))


def test_one_row_per_run_none_is_missing_and_runs_without_the_record_are_left_out(tmp_path):
    write_cell(tmp_path, "scratch", 8, 1, [None, 0.91, 0.78])
    write_cell(tmp_path, "scratch", 8, 0, [None, 0.66, 0.15])
    write_cell(tmp_path, "scratch", 2, 0, [None, 0.88, None])   # no recent batch held class 2
    write_cell(tmp_path, "plain_monai", 2, 0, None)             # a record from another training loop
    (tmp_path / "cells" / "scratch" / "broken.json").write_text("{not json")
    table = training_fit_table(tmp_path)
    assert table.columns.tolist() == ["arm", "labeled cases", "seed", "fold", "fit 1", "fit 2"]
    assert table[["labeled cases", "seed"]].values.tolist() == [[2, 0], [8, 0], [8, 1]]
    assert np.isnan(table.loc[0, "fit 2"]) and table.loc[1, "fit 2"] == 0.15
    assert training_fit_table(tmp_path / "nothing").empty


def test_the_curves_have_one_row_per_run_class_and_block_at_the_blocks_last_step(tmp_path):
    write_cell(tmp_path, "scratch", 2, 0, [None, 0.9, 0.2], curve=[[None, 0.5, None], [None, 0.9, 0.2]], every=50,
               steps=60)
    write_cell(tmp_path, "scratch+cps", 2, 0, [None, 0.8, 0.7], curve=[[None, 0.6, 0.5]], every=25, steps=30)
    write_cell(tmp_path, "scratch", 4, 0, [None, 0.9, 0.8])   # no curve recorded
    curves = training_fit_curves(tmp_path)
    scratch = curves[curves["arm"] == "scratch"]
    assert scratch[["class", "step"]].values.tolist() == [[1, 50], [2, 50], [1, 60], [2, 60]]  # the last block ends at 60
    assert np.isnan(scratch["soft dice"].iloc[1]) and scratch["soft dice"].iloc[3] == 0.2
    assert curves[curves["arm"] == "scratch+cps"]["step"].tolist() == [25, 25]
    assert training_fit_curves(tmp_path / "nothing").empty


def test_the_plot_has_a_panel_per_arm_and_class(tmp_path):
    curves = pd.DataFrame([dict(arm=arm, **{"labeled cases": n, "seed": 0, "fold": 0, "class": k, "step": step,
                                            "soft dice": 0.1 if (n, k) == (8, 2) else step / 600})
                           for arm in ("scratch", "simclr") for n in (2, 8) for k in (1, 2) for step in (300, 600)])
    path = plot_training_fit(curves, tmp_path / "fit.png", {1: "liver", 2: "kidneys"}.get)
    import matplotlib.image

    picture = matplotlib.image.imread(path)
    assert picture.shape[0] > 500 and picture.shape[1] > 600      # 2 x 2 panels
    one = plot_training_fit(curves[(curves["arm"] == "scratch") & (curves["class"] == 1)], tmp_path / "one.png")
    assert one.stat().st_size > 1000                              # a single panel works too


def test_the_summary_gives_the_mean_and_the_lowest_run():
    table = pd.DataFrame({"arm": ["scratch"] * 3, "labeled cases": [8] * 3, "seed": [0, 1, 2], "fold": [0] * 3,
                          "fit 1": [0.9, 0.8, 0.7], "fit 2": [0.15, 0.75, np.nan]})
    summary = training_fit_summary(table, {1: "liver", 2: "kidneys"}.get)
    assert summary.to_dict("records") == [{"arm": "scratch", "labeled cases": 8, "runs": 3,
                                           "liver": "0.80 (0.70)", "kidneys": "0.45 (0.15)"}]


def test_the_warning_names_each_stalled_run_and_the_arms_other_runs():
    table = pd.DataFrame({"arm": ["scratch"] * 3 + ["simclr"], "labeled cases": [8, 8, 8, 2],
                          "seed": [0, 1, 2, 0], "fold": [0, 0, 0, 1],
                          "fit 1": [0.93, 0.94, 0.92, 0.40], "fit 2": [0.14, 0.81, 0.79, np.nan]})
    warning = stalled_class_warning(table, {1: "liver", 2: "kidneys"}.get)
    lines = [line for line in warning.splitlines() if line.startswith("- ")]
    assert lines == ["- liver: `simclr` at 2 labeled case(s), seed 0 fold 1 (training soft Dice 0.40)",
                     "- kidneys: `scratch` at 8 labeled case(s), seed 0 (training soft Dice 0.14; "
                     "the arm's other runs: 0.80)"]
    assert "more `finetune.steps`" in warning
    assert stalled_class_warning(table, threshold=0.1) is None
    assert stalled_class_warning(pd.DataFrame()) is None


def test_the_report_shows_the_table_and_the_warning(tmp_path):
    rows = [dict(init="scratch", budget=float(b), n_labeled=b, seed=s, fold=0, case_id=c, metric="dice", value=v)
            for b in (2, 8) for s in (0, 1) for c, v in (("a", 0.5 + 0.02 * b), ("b", 0.6 + 0.02 * b))]
    fit = pd.DataFrame({"arm": ["scratch"] * 4, "labeled cases": [2, 2, 8, 8], "seed": [0, 1, 0, 1],
                        "fold": [0] * 4, "fit 1": [0.85, 0.88, 0.12, 0.91]})
    manifest = {"config": {"finetune": {"mask_labels": [1], "class_names": {"1": "liver"}}}}
    curves = pd.DataFrame([{"arm": "scratch", "labeled cases": n, "seed": seed, "fold": 0, "class": 1, "step": 600,
                            "soft dice": 0.5} for n in (2, 8) for seed in (0, 1)])
    text = write_report(pd.DataFrame(rows), tmp_path, n_resamples=50, manifest=manifest,
                        training_fit=fit, training_curves=curves).markdown.read_text()
    assert "| arm | labeled cases | runs | liver (mask 1) |" in text
    assert "| scratch | 8 | 2 | 0.52 (0.12) |" in text
    assert "(plots/training_fit.png)" in text and (tmp_path / "plots" / "training_fit.png").stat().st_size > 1000
    assert ("- liver (mask 1): `scratch` at 8 labeled case(s), seed 0 (training soft Dice 0.12; "
            "the arm's other runs: 0.91)") in text
    plain = write_report(pd.DataFrame(rows), tmp_path / "plain", n_resamples=50).markdown.read_text()
    assert "own labeled training batches" not in plain


def test_medssl_study_prints_the_warning_for_a_finished_run(tmp_path):
    from medssl.study.console import study_warnings

    rows = [dict(init="scratch", budget=float(b), n_labeled=b, seed=s, fold=0, case_id="a", metric="dice",
                 value=0.5 + 0.05 * b + 0.01 * s) for b in (2, 8) for s in (0, 1)]
    pd.DataFrame(rows).to_csv(tmp_path / "results.csv", index=False)
    write_cell(tmp_path, "scratch", 8, 0, [None, 0.93, 0.15])
    write_cell(tmp_path, "scratch", 8, 1, [None, 0.92, 0.80])
    printed = "\n".join(study_warnings(tmp_path, "dice"))
    assert "a run did not fit a class on its own training patches" in printed and "`" not in printed
    assert "- class 2: scratch at 8 labeled case(s), seed 0 (training soft Dice 0.15; the arm's other runs: 0.80)" \
        in printed
