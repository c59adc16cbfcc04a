"""Patient-level splits: no leakage, nesting, stratification, fractions, files, and clear errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medssl.data.splits import (
    check_no_leakage,
    kfold_by_patient,
    nested_label_budgets,
    split_by_patient,
    write_splits,
)
from medssl.errors import DataError, SplitLeakageError


def make_table(n_patients: int = 40, seed: int = 0, second_visit_every: int = 3) -> pd.DataFrame:
    """Patients with 1 or 2 cases, a balanced patient-level label, shuffled rows."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        label = p % 2
        for visit in range(1 + (p % second_visit_every == 0)):
            rows.append({"case_id": f"case_{p:03d}_{visit}", "patient_key": f"P{p:03d}", "label": label,
                         "visit": visit + 1})
    df = pd.DataFrame(rows)
    return df.iloc[rng.permutation(len(df))].set_index(pd.Index([f"r{i}" for i in range(len(df))]))


def sides_per_patient(df: pd.DataFrame, column: str) -> pd.Series:
    return df.groupby("patient_key")[column].nunique()


# ---------------------------------------------------------------------------------------------
# train / val / test


def test_split_by_patient_keeps_patients_whole_and_hits_the_fractions():
    df = make_table()
    split = split_by_patient(df, test_fraction=0.25, val_fraction=0.1, seed=0)
    assert split.index.equals(df.index) and split.name == "split"
    assert set(split) == {"train", "val", "test"}
    assert (sides_per_patient(df.assign(split=split), "split") == 1).all()
    patients = df.assign(split=split).groupby("split")["patient_key"].nunique()
    assert patients["test"] == 10 and patients["val"] == 4 and patients["train"] == 26


def test_split_is_deterministic_under_a_seed_and_changes_with_it():
    df = make_table()
    a = split_by_patient(df, test_fraction=0.3, val_fraction=0.0, seed=7)
    b = split_by_patient(df, test_fraction=0.3, val_fraction=0.0, seed=7)
    c = split_by_patient(df, test_fraction=0.3, val_fraction=0.0, seed=8)
    pd.testing.assert_series_equal(a, b)
    assert not a.equals(c)
    assert set(a) == {"train", "test"}
    # row order does not matter: the same patients land on the same sides
    shuffled = split_by_patient(df.iloc[::-1], test_fraction=0.3, val_fraction=0.0, seed=7)
    pd.testing.assert_series_equal(shuffled.loc[a.index], a)


def test_stratified_split_keeps_class_proportions():
    df = make_table(n_patients=40)
    for seed in range(5):
        split = split_by_patient(df, test_fraction=0.25, val_fraction=0.25, seed=seed, stratify_col="label")
        per_patient = df.assign(split=split).groupby("patient_key").agg(split=("split", "first"),
                                                                        label=("label", "first"))
        for side in ("test", "val"):
            labels = per_patient[per_patient["split"] == side]["label"]
            assert len(labels) == 10 and labels.sum() == 5, (seed, side, labels.tolist())


def test_split_errors_name_the_problem():
    df = make_table(n_patients=6)
    with pytest.raises(DataError, match="'subject'.*available columns"):
        split_by_patient(df, patient_col="subject", test_fraction=0.2, val_fraction=0.1, seed=0)
    with pytest.raises(DataError, match="'diagnosis'"):
        split_by_patient(df, test_fraction=0.2, val_fraction=0.1, seed=0, stratify_col="diagnosis")
    with pytest.raises(DataError, match="keep a training patient"):
        split_by_patient(df, test_fraction=0.5, val_fraction=0.45, seed=0)
    with pytest.raises(DataError, match=r"test_fraction must be in \[0, 1\)"):
        split_by_patient(df, test_fraction=1.2, val_fraction=0.0, seed=0)
    missing = df.copy()
    missing.iloc[0, missing.columns.get_loc("patient_key")] = None
    with pytest.raises(DataError, match="no 'patient_key'"):
        split_by_patient(missing, test_fraction=0.2, val_fraction=0.0, seed=0)


def test_impossible_stratification_falls_back_and_still_splits_by_patient(caplog):
    df = make_table(n_patients=10)
    df.loc[df["patient_key"] == "P001", "label"] = 2  # a class with a single patient
    split = split_by_patient(df, test_fraction=0.2, val_fraction=0.0, seed=0, stratify_col="label")
    assert "unstratified" in caplog.text
    assert (sides_per_patient(df.assign(split=split), "split") == 1).all()


# ---------------------------------------------------------------------------------------------
# k-fold


@pytest.mark.parametrize("stratify_col", [None, "label"])
def test_kfold_assigns_each_patient_to_one_fold(stratify_col):
    df = make_table(n_patients=30)
    fold = kfold_by_patient(df, 5, seed=1, stratify_col=stratify_col)
    assert fold.name == "fold" and set(fold) == set(range(5))
    assert (sides_per_patient(df.assign(fold=fold), "fold") == 1).all()
    patients_per_fold = df.assign(fold=fold).groupby("fold")["patient_key"].nunique()
    assert patients_per_fold.max() - patients_per_fold.min() <= 2
    if stratify_col:
        per_fold = df.assign(fold=fold).groupby("fold")["label"].agg(["min", "max"])
        assert (per_fold["min"] == 0).all() and (per_fold["max"] == 1).all()
    pd.testing.assert_series_equal(fold, kfold_by_patient(df, 5, seed=1, stratify_col=stratify_col))


def test_kfold_errors():
    df = make_table(n_patients=4)
    with pytest.raises(DataError, match="cannot make 5 folds from 4 patient"):
        kfold_by_patient(df, 5, seed=0)
    with pytest.raises(DataError, match="k >= 2"):
        kfold_by_patient(df, 1, seed=0)


# ---------------------------------------------------------------------------------------------
# nested label budgets


def test_budgets_are_nested_exact_and_drawn_by_patient():
    df = make_table(n_patients=30)
    budgets = nested_label_budgets(df, [8, 2, 4, 16], seed=3, stratify_col="label")
    assert list(budgets) == [8, 2, 4, 16]
    for small, large in ((2, 4), (4, 8), (8, 16)):
        assert budgets[large][: len(budgets[small])] == budgets[small]  # a prefix: nested
    for size, chosen in budgets.items():
        assert len(chosen) == size == len(set(chosen))
        assert set(chosen) <= set(df.index)
        # whole patients, except at most one patient cut at the budget's edge
        chosen_keys = df.loc[chosen, "patient_key"]
        partial = [p for p, n in chosen_keys.value_counts().items() if n < (df["patient_key"] == p).sum()]
        assert len(partial) <= 1


def test_small_budgets_hold_both_classes_and_larger_ones_stay_balanced():
    balanced = make_table(n_patients=30)
    skewed = make_table(n_patients=30, second_visit_every=2)  # every negative patient has two cases
    for df in (balanced, skewed):
        share = df["label"].mean()
        for seed in range(10):
            budgets = nested_label_budgets(df, [2, 4, 8, 16], seed=seed, stratify_col="label")
            assert sorted(df.loc[budgets[2], "label"]) == [0, 1], seed
            for size, chosen in budgets.items():
                positives = int(df.loc[chosen, "label"].sum())
                assert abs(positives - share * size) <= 1, (seed, size, positives)


def test_unbalanced_pool_keeps_its_proportions():
    df = make_table(n_patients=40, second_visit_every=1000)
    df["label"] = (df["patient_key"].str[1:].astype(int) % 4 == 0).astype(int)  # 25 % positive
    budgets = nested_label_budgets(df, [4, 8, 20], seed=0, stratify_col="label")
    assert [int(df.loc[budgets[b], "label"].sum()) for b in (4, 8, 20)] == [1, 2, 5]


def test_budgets_as_fractions_and_ids():
    df = make_table(n_patients=20)
    budgets = nested_label_budgets(df, [0.1, 0.5], seed=0, id_col="case_id")
    n = len(df)
    assert len(budgets[0.1]) == round(0.1 * n) and len(budgets[0.5]) == round(0.5 * n)
    assert set(budgets[0.1]) <= set(budgets[0.5]) <= set(df["case_id"])
    assert nested_label_budgets(df, [0.1, 0.5], seed=0, id_col="case_id") == budgets
    assert nested_label_budgets(df, [0.1, 0.5], seed=1, id_col="case_id") != budgets
    assert nested_label_budgets(df, [2.0], seed=0)[2] == nested_label_budgets(df, [2], seed=0)[2]


def test_budget_errors():
    df = make_table(n_patients=5)
    with pytest.raises(DataError, match="only 7"):
        nested_label_budgets(df, [2, 50], seed=0)
    with pytest.raises(DataError, match="case count >= 1 or a fraction"):
        nested_label_budgets(df, [0], seed=0)
    with pytest.raises(DataError, match="whole number"):
        nested_label_budgets(df, [2.5], seed=0)
    with pytest.raises(DataError, match="'grade'"):
        nested_label_budgets(df, [2], seed=0, stratify_col="grade")
    with pytest.raises(DataError, match="empty pool"):
        nested_label_budgets(df.iloc[:0], [1], seed=0)


# ---------------------------------------------------------------------------------------------
# the leakage check


def test_leakage_check_names_patients_and_sides():
    df = pd.DataFrame({"patient_key": ["Pa", "Pa", "Pb", "Pc", "Pc"],
                       "split": ["train", "test", "train", "val", None]})
    with pytest.raises(SplitLeakageError) as caught:
        check_no_leakage(df, "split", "patient_key")
    message = str(caught.value)
    assert "Pa (test, train)" in message and "Pb" not in message and "Pc" not in message
    check_no_leakage(df.iloc[2:], "split", "patient_key")  # a missing side is not a side
    with pytest.raises(DataError, match="'fold'"):
        check_no_leakage(df, "fold", "patient_key")


def test_leakage_check_catches_a_row_level_split():
    df = make_table(n_patients=20)
    rng = np.random.default_rng(0)
    row_level = pd.Series(np.where(rng.uniform(size=len(df)) < 0.5, "train", "test"), index=df.index)
    with pytest.raises(SplitLeakageError, match="patient leakage"):
        check_no_leakage(df.assign(split=row_level), "split", "patient_key")


# ---------------------------------------------------------------------------------------------
# files and the synthetic cohort


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_write_splits_reads_and_writes_manifests(tmp_path, suffix):
    df = make_table(n_patients=12).reset_index(drop=True)
    df["status"] = "ok"
    df.loc[0, "status"] = "error"
    manifest = tmp_path / f"manifest{suffix}"
    df.to_csv(manifest, index=False) if suffix == ".csv" else df.to_parquet(manifest, index=False)
    out = write_splits(manifest, tmp_path / f"splits{suffix}", test_fraction=0.25, val_fraction=0.0,
                       stratify_col="label", seed=0)
    written = pd.read_csv(out) if suffix == ".csv" else pd.read_parquet(out)
    assert len(written) == len(df) and pd.isna(written.loc[0, "split"])
    assert set(written["split"].dropna()) == {"train", "test"}
    check_no_leakage(written, "split", "patient_key")
    folds = write_splits(manifest, tmp_path / f"folds{suffix}", k=3, seed=0)
    written = pd.read_csv(folds) if suffix == ".csv" else pd.read_parquet(folds)
    assert written.loc[0, "fold"] == -1 and set(written["fold"][1:]) == {0, 1, 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([manifest.name, f"splits{suffix}", f"folds{suffix}"])


def test_write_splits_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        write_splits(tmp_path / "missing.csv", tmp_path / "out.csv")
    bad = tmp_path / "manifest.csv"
    pd.DataFrame({"path": ["a", "b"], "status": ["ok", "ok"]}).to_csv(bad, index=False)
    with pytest.raises(DataError, match=r"manifest\.csv.*'patient_key'"):
        write_splits(bad, tmp_path / "out.csv")
    assert not (tmp_path / "out.csv").exists()


def test_synthetic_cohort_follow_ups_stay_on_one_side(tmp_path):
    from medssl.synthetic import make_synthetic_cohort

    info = make_synthetic_cohort(tmp_path / "cohort", n_ct=8, n_mr=4, n_unlabeled_ct=0, n_unlabeled_mr=0, seed=1,
                                 size=16, messy=False, progress=False)
    labels = pd.read_csv(info.labels_csv)
    assert labels["patient_key"].duplicated().any()  # follow-up visits exist
    split = split_by_patient(labels, test_fraction=0.3, val_fraction=0.0, seed=0, stratify_col="label")
    check_no_leakage(labels.assign(split=split), "split", "patient_key")
    budgets = nested_label_budgets(labels[split == "train"], [2, 4], seed=0, stratify_col="label", id_col="case_id")
    assert set(budgets[2]) <= set(budgets[4]) <= set(labels.loc[split == "train", "case_id"])
    assert labels.set_index("case_id").loc[budgets[2], "label"].nunique() == 2


def test_a_designated_test_set_draws_no_test_patients_and_names_the_side_it_draws(caplog):
    """The issue's run: a designated test set kept intact, yet "stratified patient split impossible"
    was logged. Only the validation patients are drawn; the warning says so."""
    from medssl.data.fixed_split import split_with_designated_test

    table = pd.DataFrame({"case_id": [f"c{i}" for i in range(8)], "patient": [f"p{i}" for i in range(8)],
                          "label": [0, 0, 0, 0, 0, 0, 1, 1]})
    with caplog.at_level("WARNING"):
        sides = split_with_designated_test(table, test_cases=["c0", "c6"], patient_col="patient", stratify_col="label")
    assert list(table.loc[sides == "test", "case_id"]) == ["c0", "c6"] and not caplog.records
    with caplog.at_level("WARNING"):
        sides = split_with_designated_test(table, test_cases=["c0", "c6"], patient_col="patient", stratify_col="label",
                                           val_fraction=0.2)
    assert list(table.loc[sides == "test", "case_id"]) == ["c0", "c6"]
    messages = [r.getMessage() for r in caplog.records]
    assert messages and all("validation patient(s)" in m and "test" not in m for m in messages)
