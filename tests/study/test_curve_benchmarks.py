"""The two curve benchmarks (benchmarks/unlabeled_curve.py, benchmarks/pretraining_curve.py) turn a
study's per-case results into the points they claim: the right axes, paired differences, the
pseudo-label diagnostics of the semi-supervised cells, and the pretraining compute up to each step."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import pretraining_curve  # noqa: E402
import unlabeled_curve  # noqa: E402


def long_results(arms: dict[str, float], budgets=(2,), seeds=(0, 1), cases=6, rng_seed=0) -> pd.DataFrame:
    """Per-case Dice rows like a study's results.csv: arm -> its mean offset over a shared case
    difficulty (so the paired difference is the offset)."""
    rng = np.random.default_rng(rng_seed)
    difficulty = rng.uniform(0.4, 0.7, size=cases)
    rows = []
    for budget in budgets:
        for seed in seeds:
            for arm, offset in arms.items():
                for i, base in enumerate(difficulty):
                    for metric, value in (("dice", base + offset), ("dice_1", base + offset + 0.1),
                                          ("dice_2", base + offset - 0.1)):
                        rows.append({"init": arm, "budget": float(budget), "n_labeled": budget, "seed": seed,
                                     "fold": 0, "case_id": f"c{i}", "metric": metric, "value": value})
    return pd.DataFrame(rows)


def test_the_two_axes_share_their_crossing_point():
    args = unlabeled_curve.parse_args(["--steps", "300", "600", "--budget", "2", "--budgets", "1", "4",
                                       "--curve-steps", "600"])
    assert unlabeled_curve.study_points(args) == {300: [2.0], 600: [1.0, 2.0, 4.0]}


def test_unlabeled_curve_reports_the_paired_difference_and_the_pseudo_label_diagnostics(tmp_path):
    results = long_results({"scratch": 0.0, "scratch+mean_teacher": 0.05}, budgets=(2,))
    results = results.assign(steps=600, bootstrap=200)
    cells = tmp_path / "steps_600" / "cells"
    for arm in ("scratch", "scratch+mean_teacher"):
        (cells / arm).mkdir(parents=True)
        for seed, accuracy in ((0, [0.9, 0.5, None]), (1, [0.7, 0.7, 0.4])):
            history = {"pseudo_label_accuracy": accuracy, "pseudo_label_coverage": [1.0, 0.5, 0.0]}
            record = {"arm": arm, "budget": 2.0, "seed": seed, "seconds": 10.0 * (seed + 1), "history": history}
            (cells / arm / f"b2_s{seed}_f0.json").write_text(json.dumps(record))
    table = unlabeled_curve.curve_table(results, tmp_path, "scratch+mean_teacher")
    row = table.iloc[0]
    assert (row["steps"], row["labeled"], row["n_seeds"]) == (600, 2, 2)
    assert row["diff"] == pytest.approx(0.05) and row["diff_low"] == pytest.approx(0.05)
    assert row["semi_dice_1"] - row["scratch_dice_1"] == pytest.approx(0.05)
    assert row["pl_accuracy_0"] == pytest.approx(0.8) and row["pl_accuracy_2"] == pytest.approx(0.4)  # None skipped
    assert row["pl_coverage_1"] == pytest.approx(0.5) and row["seconds_scratch"] == pytest.approx(15.0)
    args = unlabeled_curve.parse_args(["--steps", "600", "--budgets", "2"])
    text = unlabeled_curve.format_markdown(table, args, "scratch+mean_teacher")
    assert "| 600 | 2 |" in text and "+0.050 [+0.050, +0.050]" in text and "0.80 / 1.00" in text


def test_pretraining_curve_takes_the_method_recipe_from_its_shipped_config():
    args = pretraining_curve.parse_args(["--method", "spark", "--steps", "1000", "--export-every", "250"])
    config = pretraining_curve.curve_config(args)
    assert config.pretrain.method == "spark" and config.pretrain.method_args["mask_ratio"] == 0.6
    assert config.pretrain.augmentation.num_views == 1 and config.pretrain.encoder.spatial_dims == 2
    assert (config.pretrain.steps, config.pretrain.export_every, config.pretrain.checkpoint_every) == (1000, 250, 250)


def test_pretraining_seconds_add_up_each_logging_interval(tmp_path):
    # 10 steps of batch 4 at 8 samples/s: 5 s; the next 10 at 4 samples/s: 10 s more
    pd.DataFrame({"step": [10, 20], "samples_per_s": [8.0, 4.0], "loss": [1.0, 0.9]}).to_csv(tmp_path / "metrics.csv")
    assert pretraining_curve.pretraining_seconds(tmp_path, batch_size=4) == {10: 5.0, 20: 15.0}


def test_pretraining_curve_finds_each_export_and_names_the_break_even(tmp_path):
    for step in (250, 500):
        (tmp_path / "encoders" / f"step_{step:06d}").mkdir(parents=True)
        (tmp_path / "encoders" / f"step_{step:06d}" / "encoder.pt").write_bytes(b"")
    assert pretraining_curve.encoders_by_step(tmp_path, 750) == {
        250: tmp_path / "encoders/step_000250/encoder.pt", 500: tmp_path / "encoders/step_000500/encoder.pt",
        750: tmp_path / "encoder.pt"}
    results = long_results({"scratch": 0.0, "spark_250": 0.0, "spark_750": 0.04})
    table = pretraining_curve.curve_table(results, None, {250: 100.0, 750: 300.0}, threads=2, bootstrap=200)
    assert table["pretrain_steps"].tolist() == [0, 250, 750]
    assert table["cpu_hours"].tolist() == pytest.approx([0.0, 200 / 3600, 600 / 3600])
    assert table["diff"].tolist() == pytest.approx([0.0, 0.0, 0.04])
    args = pretraining_curve.parse_args([])
    assert "from 750 steps" in pretraining_curve.format_markdown(table, args, threads=2)
    flat = pretraining_curve.curve_table(long_results({"scratch": 0.0, "spark_250": 0.0}), None, {250: 1.0}, 1, 200)
    assert "not reached" in pretraining_curve.format_markdown(flat, args, threads=1)
