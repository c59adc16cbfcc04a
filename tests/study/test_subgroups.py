"""Scores by subgroup of the test cases, for runs whose labeled cases had the subgroup and runs whose
labeled cases lacked it: the table that shows a network trained on one contrast phase failing on the other."""

from __future__ import annotations

import pandas as pd
import pytest

from medssl.study.subgroups import MISSING, subgroup_blocks_data, subgroup_table, subgroup_values, unseen_gap_warning


def _results() -> pd.DataFrame:
    """Two seeds at 2 labeled cases, one arm; test cases p1 (plain) and v1, v2 (venous)."""
    rows = []
    values = {0: {"p1": 0.2, "v1": 0.8, "v2": 0.6}, 1: {"p1": 0.7, "v1": 0.7, "v2": 0.5}}
    for seed, cases in values.items():
        for case, value in cases.items():
            rows.append({"init": "scratch", "budget": 2.0, "n_labeled": 2, "seed": seed, "fold": 0, "case_id": case,
                         "metric": "dice", "value": value})
            rows.append({"init": "scratch", "budget": 2.0, "n_labeled": 2, "seed": seed, "fold": 0, "case_id": case,
                         "metric": "dice_1", "value": 1.0})
    return pd.DataFrame(rows)


GROUPS = {"p1": "plain", "v1": "venous", "v2": "venous", "a": "venous", "b": "venous", "c": "plain"}
LABELED = {(2.0, 0, 0): ["a", "b"], (2.0, 1, 0): ["a", "c"]}  # seed 0 saw only venous cases, seed 1 both


def test_each_subgroup_is_scored_separately_for_runs_with_and_without_it_labeled():
    table = subgroup_table(_results(), GROUPS, LABELED, "dice", column="contrast")
    plain = table[table["contrast"] == "plain"].iloc[0]
    assert plain["test cases"] == 1
    assert plain["seen"] == pytest.approx(0.7) and plain["seen runs"] == 1  # seed 1 had a plain case
    assert plain["unseen"] == pytest.approx(0.2) and plain["unseen runs"] == 1  # seed 0 had none
    venous = table[table["contrast"] == "venous"].iloc[0]
    assert venous["seen"] == pytest.approx((0.8 + 0.6 + 0.7 + 0.5) / 4) and venous["seen runs"] == 2
    assert pd.isna(venous["unseen"]) and venous["unseen runs"] == 0
    assert list(table["contrast"]) == ["plain", "venous"]


def test_a_run_without_a_record_of_its_labeled_cases_is_left_out():
    table = subgroup_table(_results(), GROUPS, {(2.0, 0, 0): ["a", "b"]}, "dice", column="contrast")
    assert table["seen runs"].sum() + table["unseen runs"].sum() == 2  # seed 0 only, in both subgroups


def test_empty_values_form_their_own_subgroup():
    table = pd.DataFrame({"case_id": ["a", "b", "c", "d"], "scanner": ["GE", None, "  ", float("nan")]})
    assert subgroup_values(table, "scanner") == {"a": "GE", "b": MISSING, "c": MISSING, "d": MISSING}


def test_the_warning_names_a_subgroup_that_scored_far_lower_when_unseen():
    table = subgroup_table(_results(), GROUPS, LABELED, "dice", column="contrast")
    warning = unseen_gap_warning(table, "contrast")
    assert "`plain` with 2 labeled case(s)" in warning and "0.200" in warning and "0.700" in warning
    assert "venous" not in warning.split("lacked scored worse:")[1]
    assert unseen_gap_warning(table, "contrast", gap=0.6) is None


def test_tables_come_from_the_study_manifest():
    manifest = {"subgroups": {"contrast": GROUPS},
                "labeled_cases": [{"budget": b, "seed": s, "fold": f, "case_ids": ids}
                                  for (b, s, f), ids in LABELED.items()]}
    [(column, table)] = subgroup_blocks_data(_results(), manifest, "dice")
    pd.testing.assert_frame_equal(table, subgroup_table(_results(), GROUPS, LABELED, "dice", column="contrast"))
    assert subgroup_blocks_data(_results(), {}, "dice") == []
