"""Scores by subgroup of the test cases, split by whether a run's labeled cases had that subgroup.

Two labeled cases cover one or two of an archive's contrast phases, scanners or sites. A network
trained on portal-venous cases can miss the kidneys on the non-contrast ones: on the built-in
development cohort (2D track, 600 steps), two venous labeled cases gave kidney Dice 0.01 on the
plain-CT test cases and 0.63 on the venous ones. The mean over all test cases hides that. This
table shows it for each column of the labels table named in ``study.subgroup_columns``.

For column ``k``, value ``v``, arm ``a`` and budget ``n``, with ``T_v`` the test cases where
``k = v`` and ``m(r, c)`` the metric of run ``r`` on case ``c``::

    seen(v)   = mean over runs r of (a, n) whose labeled cases include one with k = v,  c in T_v, of m(r, c)
    unseen(v) = the same over the runs whose labeled cases include none

Runs are the (seed, fold) cells; their labeled cases are in the study's ``manifest.json``
(``labeled_cases``), the values in ``subgroups``. A value missing from the labels table (an empty
cell) is the subgroup ``(missing)``.

Example:
    >>> import pandas as pd
    >>> results = pd.DataFrame({"init": "scratch", "budget": 1.0, "n_labeled": 1, "seed": [0, 0, 1, 1],
    ...                         "fold": 0, "case_id": ["t1", "t2", "t1", "t2"], "metric": "dice",
    ...                         "value": [0.9, 0.2, 0.5, 0.8]})
    >>> groups = {"t1": "venous", "t2": "plain", "a": "venous", "b": "plain"}
    >>> labeled = {(1.0, 0, 0): ["a"], (1.0, 1, 0): ["b"]}
    >>> table = subgroup_table(results, groups, labeled, "dice", column="contrast")
    >>> table[["contrast", "seen", "unseen"]].values.tolist()
    [['plain', 0.8, 0.2], ['venous', 0.9, 0.5]]
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import pandas as pd

__all__ = ["MISSING", "subgroup_table", "subgroup_blocks_data", "subgroup_values", "unseen_gap_warning"]

MISSING = "(missing)"
"""The subgroup of a case whose value is empty in the labels table."""

RunKey = tuple[float, int, int]
"""A run's ``(budget, seed, fold)``."""


def subgroup_values(table: pd.DataFrame, column: str, case_column: str = "case_id") -> dict[str, str]:
    """``case id -> value`` of ``column`` as text (empty or NaN -> :data:`MISSING`)."""
    values = {}
    for case, value in zip(table[case_column].astype(str), table[column]):
        missing = value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == ""
        values[case] = MISSING if missing else str(value)
    return values


def subgroup_table(results: pd.DataFrame, groups: Mapping[str, str], labeled: Mapping[RunKey, Sequence[str]],
                   metric: str, *, column: str = "subgroup") -> pd.DataFrame:
    """Rows ``(labeled, init, <column>)`` with the test cases in the subgroup and the mean ``metric``
    over the runs that had it among their labeled cases (``seen``) and those that did not (``unseen``).

    Args:
        results: the study's tidy results (``init, budget, n_labeled, seed, fold, case_id, metric, value``).
        groups: case id -> subgroup value, for the test cases and the labeled cases.
        labeled: ``(budget, seed, fold)`` -> that run's labeled case ids.
        metric: the per-case metric to average (for example ``dice``, the mean over classes).
        column: the name of the subgroup column in the returned table.

    Returns:
        Columns ``labeled, init, <column>, test cases, seen, seen runs, unseen, unseen runs``; a mean is
        NaN where no run falls on that side. Empty when the metric or the groups are absent.
    """
    frame = results[results["metric"] == metric]
    frame = frame[frame["case_id"].astype(str).isin(groups)]
    if frame.empty:
        return pd.DataFrame()
    frame = frame.assign(group=frame["case_id"].astype(str).map(groups))
    seen = []
    for budget, seed, fold, group in zip(frame["budget"], frame["seed"], frame["fold"], frame["group"]):
        cases = labeled.get((float(budget), int(seed), int(fold)))
        seen.append(None if cases is None else group in {groups.get(str(c), MISSING) for c in cases})
    frame = frame.assign(seen=seen).dropna(subset=["seen"])
    rows = []
    for (n_labeled, init, group), part in frame.groupby(["n_labeled", "init", "group"], sort=True):
        row: dict[str, Any] = {"labeled": int(n_labeled), "init": init, column: group,
                               "test cases": int(part["case_id"].nunique())}
        for side, flag in (("seen", True), ("unseen", False)):
            mine = part[part["seen"] == flag]
            row[side] = float(mine["value"].mean()) if len(mine) else float("nan")
            row[f"{side} runs"] = int(mine[["seed", "fold"]].drop_duplicates().shape[0])
        rows.append(row)
    order = list(dict.fromkeys(results["init"]))
    table = pd.DataFrame(rows)
    table["_arm"] = table["init"].map({name: i for i, name in enumerate(order)})
    return table.sort_values(["labeled", "_arm", column], kind="stable").drop(columns="_arm").reset_index(drop=True)


def unseen_gap_warning(table: pd.DataFrame, column: str, *, gap: float = 0.1) -> str | None:
    """A sentence naming the subgroups that scored at least ``gap`` lower (a higher-is-better metric
    such as Dice) in runs whose labeled cases lacked them than in runs that had them, same arm and
    budget; None when none did."""
    if table.empty:
        return None
    worse = table[(table["seen"] - table["unseen"]) >= gap].dropna(subset=["seen", "unseen"])
    if worse.empty:
        return None
    parts = [f"`{r[column]}` with {r['labeled']} labeled case(s), `{r['init']}`: {r['unseen']:.3f} without one "
             f"among the labeled cases against {r['seen']:.3f} with one" for _, r in worse.iterrows()]
    return (f"Warning: test cases of a `{column}` the labeled cases lacked scored worse: " + "; ".join(parts)
            + ". Label at least one case of each such subgroup, or use an augmentation that covers the "
              "difference (docs/augmentations.md).")


def subgroup_blocks_data(results: pd.DataFrame, manifest: Mapping[str, Any] | None, metric: str
                         ) -> list[tuple[str, pd.DataFrame]]:
    """``(column, table)`` for each subgroup column the study's manifest records."""
    manifest = manifest or {}
    subgroups = manifest.get("subgroups") or {}
    runs = {(float(r["budget"]), int(r["seed"]), int(r["fold"])): [str(c) for c in r["case_ids"]]
            for r in manifest.get("labeled_cases") or []}
    tables = []
    for column, groups in subgroups.items():
        table = subgroup_table(results, {str(k): str(v) for k, v in groups.items()}, runs, metric, column=column)
        if not table.empty:
            tables.append((column, table))
    return tables
