"""Did each run of a study fit its own labeled cases? Training stalls apart from generalisation failures.

Every segmentation cell record keeps, per class ``k``, the soft Dice of its labeled training
batches over the last steps (``history.train_class_dice``, :mod:`medssl.eval.class_fit`).
:func:`training_fit_table` gathers them, one row per run; :func:`training_fit_summary` gives each
arm and labeled-case count the mean and the lowest run; :func:`stalled_class_warning` names each run
whose class stayed below ``threshold`` on its own training patches; :func:`training_fit_curves`
gives each run's curve over the steps (``history.train_class_dice_curve``), drawn by
:func:`medssl.study.plots.plot_training_fit`.

Why it matters: a run whose test Dice for a class is 0 either never fit that class (a stall: its
score measures the schedule, and more ``finetune.steps`` is the remedy) or fit it and failed on
test cases unlike its labeled ones (more steps do not help). On the built-in CT cohort (2D track,
600 steps) one held-out run's kidneys stayed at soft Dice 0.14 in training and scored 0.00 on
test; 1200 steps learned them (0.73). Another run fit the kidneys in training (0.75) and scored
0.01 on the non-contrast test cases its venous-only labeled cases did not cover.

Example:
    >>> table = pd.DataFrame({"arm": ["scratch", "scratch"], "labeled cases": [8, 8], "seed": [0, 1],
    ...                       "fold": [0, 0], "fit 1": [0.93, 0.94], "fit 2": [0.14, 0.81]})
    >>> print(stalled_class_warning(table, lambda k: "kidneys"))  # doctest: +ELLIPSIS
    **Warning: a run did not fit a class on its own training patches.** ...
    - kidneys: `scratch` at 8 labeled case(s), seed 0 (training soft Dice 0.14; the arm's other runs: 0.81)
"""

from __future__ import annotations

import os
from typing import Callable

import numpy as np
import pandas as pd

from medssl.study.run_record import cell_records

__all__ = ["training_fit_table", "training_fit_curves", "training_fit_summary", "stalled_class_warning"]

_KEYS = ["arm", "labeled cases", "seed", "fold"]


def _fit_columns(table: pd.DataFrame) -> list[str]:
    return sorted((c for c in table.columns if c.startswith("fit ")), key=lambda c: int(c.split(" ")[1]))


def training_fit_table(run_dir: str | os.PathLike) -> pd.DataFrame:
    """One row per cell of ``run_dir/cells`` that recorded it: arm, labeled cases, seed, fold and
    ``fit k``, class ``k``'s training soft Dice over the run's last steps (NaN where no recent batch
    held the class); empty when no cell did (classification, or records from before it existed)."""
    rows = []
    for record in cell_records(run_dir):
        fit = (record.get("history") or {}).get("train_class_dice")
        if not fit:
            continue
        row: dict[str, object] = {"arm": record.get("arm", record.get("init")), "labeled cases": record.get("n_train"),
                                  "seed": record.get("seed"), "fold": record.get("fold", 0)}
        for k, value in enumerate(fit):
            if k > 0:
                row[f"fit {k}"] = np.nan if value is None else float(value)
        rows.append(row)
    if not rows:
        return pd.DataFrame()
    table = pd.DataFrame(rows)
    return table[_KEYS + _fit_columns(table)].sort_values(_KEYS, kind="stable").reset_index(drop=True)


def training_fit_curves(run_dir: str | os.PathLike) -> pd.DataFrame:
    """One row per (run, foreground class, block of steps): arm, labeled cases, seed, fold, class,
    step (the block's last training step) and soft Dice (NaN where no batch of the block held the
    class); empty when no cell recorded a curve."""
    rows = []
    for record in cell_records(run_dir):
        history = record.get("history") or {}
        curve, every = history.get("train_class_dice_curve"), history.get("train_class_dice_every")
        if not curve or not every:
            continue
        steps = history.get("steps")
        for block, values in enumerate(curve):
            step = (block + 1) * float(every)
            for k, value in enumerate(values):
                if k == 0:
                    continue
                rows.append({"arm": record.get("arm", record.get("init")), "labeled cases": record.get("n_train"),
                             "seed": record.get("seed"), "fold": record.get("fold", 0), "class": k,
                             "step": min(step, steps) if steps else step,
                             "soft dice": np.nan if value is None else float(value)})
    return pd.DataFrame(rows)


def training_fit_summary(table: pd.DataFrame, class_label: Callable[[int], str] = lambda k: f"class {k}"
                         ) -> pd.DataFrame:
    """Per arm and labeled-case count, each class's training soft Dice as ``mean (lowest run)``."""
    if table is None or table.empty:
        return pd.DataFrame()
    rows = []
    for (arm, n_labeled), group in table.groupby(["arm", "labeled cases"], sort=True):
        row: dict[str, object] = {"arm": arm, "labeled cases": int(n_labeled), "runs": len(group)}
        for column in _fit_columns(table):
            values = group[column].dropna()
            label = class_label(int(column.split(" ")[1]))
            row[label] = "n/a" if values.empty else f"{values.mean():.2f} ({values.min():.2f})"
        rows.append(row)
    return pd.DataFrame(rows)


def stalled_class_warning(table: pd.DataFrame, class_label: Callable[[int], str] = lambda k: f"class {k}", *,
                          threshold: float = 0.5) -> str | None:
    """A warning naming each run (arm, labeled cases, seed, fold) whose training soft Dice of a
    class stayed below ``threshold``, with the mean of the arm's other runs at that budget; None
    when every run fit every class it saw."""
    if table is None or table.empty:
        return None
    lines = []
    for column in _fit_columns(table):
        k = int(column.split(" ")[1])
        for (arm, n_labeled), group in table.groupby(["arm", "labeled cases"], sort=True):
            others = group.loc[group[column] >= threshold, column]
            context = f"; the arm's other runs: {others.mean():.2f}" if len(others) else ""
            for _, row in group[group[column] < threshold].iterrows():
                where = f"seed {int(row['seed'])}" + (f" fold {int(row['fold'])}" if int(row["fold"]) else "")
                lines.append(f"- {class_label(k)}: `{arm}` at {int(n_labeled)} labeled case(s), {where} "
                             f"(training soft Dice {row[column]:.2f}{context})")
    if not lines:
        return None
    return ("**Warning: a run did not fit a class on its own training patches.** Its soft Dice for the "
            f"class on its labeled training batches stayed below {threshold:.2f} over its last steps, so its "
            "test score for the class measures the schedule, not the labels: a training stall. The remedy: more "
            "`finetune.steps` (on the built-in cohort, 1200 steps learned the kidneys where 600 had stalled). "
            "A run that the lost-class warning names but this one does not "
            "fit its training cases and failed on test cases unlike them: more steps will not help there.\n\n"
            + "\n".join(lines))
