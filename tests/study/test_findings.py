"""What a study report must say besides its means: checks of known results, read from report.md."""

from __future__ import annotations

import numpy as np
import pandas as pd

from medssl.study.classification import class_balance_table, confusion_table, per_class_f1_table
from medssl.study.findings import (
    class_presence_table,
    labels_matter_warning,
    lost_class_warning,
    never_predicted_warning,
)
from medssl.study.report import write_report


def _curve(values_by_budget, seeds=(0, 1, 2), n_cases=4, init="scratch"):
    """Per-case Dice rows whose per-run mean is ``values_by_budget[budget] + 0.01 * seed``."""
    rows = []
    for budget, value in values_by_budget.items():
        for seed in seeds:
            for k in range(n_cases):
                rows.append(dict(init=init, budget=float(budget), n_labeled=budget, seed=seed, fold=0,
                                 case_id=f"c{k}", metric="dice", value=value + 0.01 * seed + 0.02 * (k - 1.5)))
    return pd.DataFrame(rows)


def test_a_scratch_arm_that_does_not_rise_with_labels_is_flagged_with_the_remedy(tmp_path):
    falling = _curve({3: 0.461, 6: 0.455, 12: 0.438})  # the study: 12 cases below 3
    warning = labels_matter_warning(falling, "dice", steps=150)
    assert "`scratch` does not rise with labels" in warning and "falls from 3 to 6" in warning
    assert "finetune.steps` (now 150; try 4x)" in warning
    flat = _curve({2: 0.464, 4: 0.473, 8: 0.471}, seeds=(0, 1, 2))
    noisy_flat = flat.copy()
    noisy_flat.loc[(noisy_flat.seed == 1) & (noisy_flat.n_labeled == 8), "value"] += 0.03
    noisy_flat.loc[(noisy_flat.seed == 2) & (noisy_flat.n_labeled == 8), "value"] -= 0.03
    assert "within the seed noise" in labels_matter_warning(noisy_flat, "dice")
    rising = _curve({2: 0.640, 4: 0.700, 8: 0.733})
    assert labels_matter_warning(rising, "dice") is None
    # lower is better for HD95: a falling distance is a rising curve
    assert labels_matter_warning(_curve({2: 30.0, 4: 20.0}).assign(metric="hd95"), "hd95") is None

    files = write_report(falling, tmp_path, n_resamples=50, manifest={"config": {"finetune": {"steps": 150}}})
    text = files.markdown.read_text()
    assert "does not rise with labels" in text and "fine-tune longer" in text
    assert "does not rise with labels" in files.html.read_text()
    # the printed table (medssl study, pipelines) carries the warning too, without markdown marks
    from medssl.study.console import study_table_text

    (tmp_path / "manifest.json").write_text('{"config": {"finetune": {"steps": 150}}}')
    printed = study_table_text(tmp_path, "dice")
    assert "| 3 cases" not in printed and "3 cases" in printed
    assert "Warning: scratch does not rise with labels" in printed and "finetune.steps (now 150; try 4x)" in printed


def _presence_rows(init, n_labeled, seed, case, present, predicted, dice):
    rows = [dict(init=init, budget=float(n_labeled), n_labeled=n_labeled, seed=seed, fold=0, case_id=case,
                 metric="dice", value=np.nanmean(dice))]
    for k, (p, q, d) in enumerate(zip(present, predicted, dice), start=1):
        rows += [dict(init=init, budget=float(n_labeled), n_labeled=n_labeled, seed=seed, fold=0, case_id=case,
                      metric=m, value=v) for m, v in ((f"present_{k}", p), (f"predicted_{k}", q), (f"dice_{k}", d))]
    return rows


def test_classes_are_counted_per_test_case_and_a_class_never_predicted_is_flagged(tmp_path):
    rows = []
    for init in ("scratch", "ssl"):
        for seed in (0, 1):
            for n in (2, 4):
                for case, lesion in (("a", 1), ("b", 1), ("c", 0), ("d", 1)):
                    learned = init == "ssl" and n == 4  # only ssl at 4 cases ever predicts the lesion
                    rows += _presence_rows(init, n, seed, case, (1, lesion), (1, int(learned and lesion)),
                                           (0.8, (0.5 if learned else 0.0) if lesion else np.nan))
    results = pd.DataFrame(rows)
    table = class_presence_table(results)
    assert list(table["test cases containing it"]) == ["4 of 4", "3 of 4"]
    assert list(table["`ssl` predicts it where present (4 cases)"]) == ["100%", "100%"]
    assert list(table["`scratch` predicts it where present (4 cases)"]) == ["100%", "0%"]
    warning = never_predicted_warning(results)
    assert "class 2: never predicted on a test case containing it by `scratch` at 2, 4 labeled case(s); " \
           "`ssl` at 2 labeled case(s)" in warning
    assert "class 1" not in warning

    manifest = {"config": {"finetune": {"mask_labels": [1, 4], "class_names": {4: "lesion"}}}}
    text = write_report(results, tmp_path, n_resamples=50, manifest=manifest).markdown.read_text()
    assert "| lesion (mask 4) | 3 of 4 |" in text
    assert "- lesion (mask 4): never predicted on a test case containing it by `scratch`" in text


def test_one_seed_that_lost_a_class_is_named_even_when_the_other_seeds_learned_it(tmp_path):
    """The built-in cohort's failure: one run of three never predicts the kidneys. The per-arm check
    sees the class predicted (by the other seeds) and stays silent; the per-run check names the run."""
    rows = []
    for seed in (0, 1, 2):
        lost = seed == 0
        for case in ("a", "b", "c"):
            rows += _presence_rows("scratch", 8, seed, case, (1, 1), (1, int(not lost)), (0.8, 0.0 if lost else 0.6))
            rows += _presence_rows("scratch", 2, seed, case, (1, 1), (1, 0), (0.7, 0.0))  # never: the other warning
    results = pd.DataFrame(rows)
    assert "`scratch` at 8" not in never_predicted_warning(results)
    warning = lost_class_warning(results)
    assert "- class 2: `scratch` at 8 labeled case(s), seed 0 (1 of 3 runs)" in warning
    assert "at 2 labeled" not in warning and "class 1" not in warning
    assert lost_class_warning(results[results.seed != 0]) is None

    text = write_report(results, tmp_path, n_resamples=50).markdown.read_text()
    assert "a run lost a class that other runs learned" in text and "seed 0 (1 of 3 runs)" in text


def _classification_rows(init, n_labeled, seed, cases):
    rows = []
    for case, target, p1 in cases:
        for metric, value in (("target", target), ("prob_0", 1 - p1), ("prob_1", p1),
                              ("prediction", int(p1 > 0.5)), ("correct", float(int(p1 > 0.5) == target))):
            rows.append(dict(init=init, budget=float(n_labeled), n_labeled=n_labeled, seed=seed, fold=0,
                             case_id=case, metric=metric, value=float(value)))
    return rows


def test_classification_report_states_balance_per_class_f1_and_confusion(tmp_path):
    cases = [("a", 0, 0.9), ("b", 1, 0.8), ("c", 1, 0.7), ("d", 1, 0.9)]  # an all-positive guess
    results = pd.DataFrame(_classification_rows("scratch", 4, 0, cases) + _classification_rows("scratch", 4, 1, cases)
                           + _classification_rows("scratch", 2, 0, cases) + _classification_rows("scratch", 2, 1, cases))
    assert class_balance_table(results)["test cases"].tolist() == [1, 3]
    f1 = per_class_f1_table(results)
    assert f1.loc[0, "F1 class 1"] == "0.857" and f1.loc[0, "F1 class 0"] == "0.000" and f1.loc[0, "F1 macro"] == "0.429"
    confusion = confusion_table(results, "scratch", 4)
    assert confusion["predicted class 1"].tolist() == [2, 6] and confusion["predicted class 0"].tolist() == [0, 0]

    manifest = {"config": {"study": {"evaluation": "knn_probe", "knn_k": 5}}, "splits": [{"pool_size": 4}]}
    text = write_report(results, tmp_path, n_resamples=50, primary="f1", manifest=manifest).markdown.read_text()
    assert "## F1 (macro) (primary metric)" in text
    assert "Test cases per class" in text and "Confusion matrix of `scratch` with 4 labeled cases" in text
    assert "| class 1 | 3 | 75% |" in text
    assert "one point per seed" in text and "spread over test cases" not in text
    assert "the budget of 4 labeled cases is the whole training pool" in text
    assert "k = 5 (`study.knn_k`) is more than the 2, 4 labeled cases" in text
