"""Summaries (mean, sd over seeds, intervals, paired differences) and report files from known results."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from medssl.study.report import difference_table, performance_table, write_report
from medssl.study.summary import batched_classification_metric, per_run_table, summarize


def _segmentation_results(shift=0.05, n_cases=12, seeds=(0, 1, 2), budgets=(2.0, 4.0)):
    rng = np.random.default_rng(0)
    difficulty = rng.uniform(0.4, 0.8, n_cases)
    rows = []
    for budget in budgets:
        for seed in seeds:
            noise = rng.normal(0, 0.01, n_cases)
            for init, bonus in (("scratch", 0.0), ("ssl", shift)):
                for k in range(n_cases):
                    value = difficulty[k] + 0.03 * budget + bonus + noise[k] + 0.002 * seed
                    rows.append(dict(init=init, budget=budget, n_labeled=int(budget), seed=seed, fold=0,
                                     case_id=f"c{k:02d}", metric="dice", value=value))
                    rows.append(dict(init=init, budget=budget, n_labeled=int(budget), seed=seed, fold=0,
                                     case_id=f"c{k:02d}", metric="hd95", value=10 - 10 * value))
    return pd.DataFrame(rows)


def test_summary_mean_sd_and_paired_difference():
    results = _segmentation_results()
    table = summarize(results, "dice", n_resamples=300)
    assert list(table["init"]) == ["scratch", "ssl", "scratch", "ssl"]
    for _, row in table.iterrows():
        sub = results[(results["init"] == row["init"]) & (results["budget"] == row["budget"])
                      & (results["metric"] == "dice")]
        runs = sub.groupby("seed")["value"].mean()
        assert row["mean"] == pytest.approx(runs.mean())
        assert row["sd"] == pytest.approx(runs.std(ddof=1))
        assert row["n_seeds"] == 3 and row["n_cases"] == 12
        assert row["ci_low"] < row["mean"] < row["ci_high"]
    ssl = table[table["init"] == "ssl"]
    assert np.allclose(ssl["diff"], 0.05) and ssl["diff_excludes_zero"].all()
    # the unpaired intervals overlap although the paired difference is clear
    first = table[table["budget"] == 2.0].set_index("init")
    assert first.loc["ssl", "ci_low"] < first.loc["scratch", "ci_high"]


def test_no_difference_gives_an_interval_around_zero():
    table = summarize(_segmentation_results(shift=0.0), "dice", n_resamples=300)
    ssl = table[table["init"] == "ssl"]
    assert np.allclose(ssl["diff"], 0.0) and not ssl["diff_excludes_zero"].any()


def test_set_level_auc_is_recomputed_per_run():
    rng = np.random.default_rng(1)
    targets = np.array([0, 1] * 8)
    rows = []
    for seed in (0, 1):
        scores = np.clip(targets * 0.3 + rng.uniform(0, 0.7, targets.size), 0, 1)
        for k, (t, p) in enumerate(zip(targets, scores)):
            for metric, value in (("target", t), ("prob_0", 1 - p), ("prob_1", p), ("correct", float((p > 0.5) == t))):
                rows.append(dict(init="scratch", budget=4.0, n_labeled=4, seed=seed, fold=0, case_id=f"c{k}",
                                 metric=metric, value=value))
    results = pd.DataFrame(rows)
    expected = np.mean([roc_auc_score(targets, results[(results.seed == s) & (results.metric == "prob_1")]["value"])
                        for s in (0, 1)])
    table = summarize(results, "auc", n_resamples=200)
    assert table["mean"].iloc[0] == pytest.approx(expected)
    runs = per_run_table(results, "auc")
    assert list(runs["seed"]) == [0, 1] and runs["value"].mean() == pytest.approx(expected)
    # the vectorised metric agrees with scikit-learn on a batch of resamples
    batch_targets = np.stack([targets, targets[::-1]])
    probs = np.stack([results[(results.seed == 0) & results.metric.isin(["prob_0", "prob_1"])]
                      .pivot(index="case_id", columns="metric", values="value").loc[[f"c{k}" for k in range(16)]]
                      .to_numpy()] * 2)
    auc = batched_classification_metric("auc", batch_targets, probs)
    assert auc[0] == pytest.approx(roc_auc_score(batch_targets[0], probs[0, :, 1]))
    assert auc[1] == pytest.approx(roc_auc_score(batch_targets[1], probs[1, :, 1]))


def test_missing_cases_of_an_unfinished_run_are_left_out_of_the_pairing():
    results = _segmentation_results()
    results = results[~((results["init"] == "ssl") & (results["case_id"] == "c00"))]
    table = summarize(results, "dice", n_resamples=100)
    assert set(table.loc[table["init"] == "ssl", "n_cases"]) == {11}
    assert np.allclose(table.loc[table["init"] == "ssl", "diff"], 0.05)


def test_bad_results_are_refused():
    with pytest.raises(ValueError, match="column"):
        summarize(pd.DataFrame({"init": ["a"]}), "dice")
    results = _segmentation_results()
    with pytest.raises(ValueError, match="no results"):
        summarize(results, "surface_dice")
    with pytest.raises(ValueError, match="twice"):
        summarize(pd.concat([results, results]), "dice")


def test_tables_and_report_files(tmp_path):
    results = _segmentation_results()
    table = summarize(results, "dice", n_resamples=100)
    perf = performance_table(table, "dice")
    assert list(perf.columns) == ["init", "2 cases", "4 cases"]
    assert perf.iloc[0, 1].count("±") == 1 and perf.iloc[0, 1].endswith("]")
    diff = difference_table(table, "dice", "scratch")
    assert list(diff["init"]) == ["ssl"] and diff.iloc[0, 1].startswith("+0.050") and diff.iloc[0, 1].endswith("*")

    files = write_report(results, tmp_path, n_resamples=100, manifest={"environment": {"git_commit": "abc", "torch": "9.9"}})
    text = files.markdown.read_text()
    assert text.index("## Dice (primary metric)") < text.index("## HD95 (mm)")
    assert "lower is better" in text and "medssl commit `abc`" in text and "torch 9.9" in text
    assert pd.read_csv(files.results).shape == results.shape
    assert {"dice", "hd95"} == set(pd.read_csv(files.summary)["metric"])
    html = files.html.read_text()
    assert html.count("data:image/png;base64,") == 4
    with pytest.raises(ValueError, match="empty"):
        write_report(results.iloc[:0], tmp_path / "empty")


def test_the_report_states_the_recipe_every_arm_shared(tmp_path):
    """A reader of the report sees the network, the track and the post-processing that were scored."""
    manifest = {"scratch_encoder": {"name": "resnet10"}, "config": {"pretrain": {"encoder": {"name": "resnet10_tiny"}},
                                                                    "finetune": {
        "task": "segmentation", "patch_size": [32, 32, 32], "steps": 300, "batch_size": 4, "class_balanced": False,
        "pos_fraction": 0.9, "intensity_augmentation": "mild", "keep_largest_components": None}}}
    text = write_report(_segmentation_results(), tmp_path, n_resamples=100, manifest=manifest).markdown.read_text()
    line = next(row for row in text.splitlines() if row.startswith("- recipe (every arm):"))
    assert "network `resnet10_tiny`" in line and "3D patches of 32 x 32 x 32" in line and "300 steps of batch 4" in line
    assert "intensity augmentation `mild`" in line and "probability 0.9" in line and "post-processing: none" in line


def test_per_class_table_names_classes_by_mask_value():
    from medssl.study.report import per_class_table

    rows = []
    for init, bonus in (("scratch", 0.0), ("ssl", 0.1)):
        for seed in (0, 1):
            for case in ("a", "b"):
                for k, base in ((1, 0.8), (2, 0.4)):
                    rows.append(dict(init=init, budget=2.0, n_labeled=2, seed=seed, fold=0, case_id=case,
                                     metric=f"dice_{k}", value=base + bonus))
    table = per_class_table(pd.DataFrame(rows), "dice", mask_labels=[3, 1])
    assert list(table.columns) == ["init", "labeled cases", "class 1 (mask 3)", "class 2 (mask 1)"]
    assert table.iloc[1].tolist() == ["ssl", 2, "0.900", "0.500"]
    assert per_class_table(pd.DataFrame(rows[:1]), "dice").empty


def test_per_class_table_uses_class_names_when_given():
    from medssl.study.report import per_class_table

    rows = [dict(init="scratch", budget=2.0, n_labeled=2, seed=0, fold=0, case_id="a", metric=f"dice_{k}", value=v)
            for k, v in ((1, 0.8), (2, 0.4))]
    table = per_class_table(pd.DataFrame(rows), "dice", mask_labels=[1, 2], class_names={1: "liver"})
    assert list(table.columns) == ["init", "labeled cases", "liver (mask 1)", "class 2 (mask 2)"]
    unmapped = per_class_table(pd.DataFrame(rows), "dice", class_names={2: "kidneys"})
    assert list(unmapped.columns) == ["init", "labeled cases", "class 1", "kidneys (mask 2)"]
