"""Why a semi-supervised arm helped or hurt: its teacher's pseudo-labels on the unlabeled volumes.

Consistency training (:mod:`medssl.eval.semi_supervised`) trains the student toward its teacher's
predictions on unlabeled patches, so its targets are only as good as that teacher. Where the
unlabeled cases carry an annotation (the study's training pool outside the labeled subset), each
cell record keeps, per class ``k`` (``history`` of ``cells/<arm>/<cell>.json``):

* ``pseudo_label_coverage[k]``: the fraction of the voxels the teacher labelled ``k`` on which its
  confidence reached ``finetune.semi.threshold``;
* ``pseudo_label_accuracy[k]``: of those confident voxels, the fraction the annotation also calls
  ``k`` (None where none could be checked).

For ``cps`` (cross pseudo supervision) the teacher is the peer network: its pseudo-labels are the
ones the evaluated network learned from. For ``self_training`` (:mod:`medssl.eval.self_training`)
the teacher labels whole volumes and a volume is kept or not: coverage is the fraction of the
voxels labelled ``k`` that lie in kept volumes, accuracy their fraction the annotation also calls
``k``, and ``pseudo_label_dice[k]`` (column ``dice k``) the mean Dice of the kept annotated volumes'
pseudo-labels.

:func:`pseudo_label_table` averages them per arm and labeled-case count; :func:`teacher_warning`
names a class the teacher was almost never confident on (coverage below ``min_coverage``) or was
mostly wrong on (accuracy below ``min_accuracy``). On the built-in CT cohort (2D track, 600 steps)
mean teacher's confident kidney labels were 32-76% right, on a tenth to a third of the kidney
voxels, and the arm scored within 0.03 Dice of labels alone (docs/studies.md, section 7).

Example:
    >>> table = pd.DataFrame({"arm": ["scratch+mean_teacher"] * 2, "labeled cases": [2, 8],
    ...                       "coverage 2": [0.31, 0.01], "accuracy 2": [0.33, 0.47]})
    >>> print(teacher_warning(table, lambda k: "kidneys"))  # doctest: +ELLIPSIS
    **Warning: a teacher was rarely confident** ... `scratch+mean_teacher` with 8 labeled cases: kidneys (coverage 0.01). Its targets ...
"""

from __future__ import annotations

import math
import os
from typing import Callable

import pandas as pd

from medssl.study.run_record import cell_records


def pseudo_label_table(run_dir: str | os.PathLike) -> pd.DataFrame:
    """Per semi-supervised arm and labeled-case count, the mean over its cells of each class's
    pseudo-label coverage and accuracy (columns ``coverage k``, ``accuracy k``; self-training adds
    ``dice k``); empty when no cell
    recorded any (labels-only arms, or no annotated unlabeled case)."""
    rows = []
    for record in cell_records(run_dir):
        history = record.get("history") or {}
        coverage, accuracy = history.get("pseudo_label_coverage"), history.get("pseudo_label_accuracy")
        if not coverage or all(value is None for value in coverage):
            continue
        row: dict[str, object] = {"arm": record.get("arm", record.get("init")), "labeled cases": record.get("n_train")}
        for k, value in enumerate(coverage):
            row[f"coverage {k}"] = math.nan if value is None else float(value)
        for k, value in enumerate(accuracy or []):
            row[f"accuracy {k}"] = math.nan if value is None else float(value)
        for k, value in enumerate(history.get("pseudo_label_dice") or []):
            if k:
                row[f"dice {k}"] = math.nan if value is None else float(value)
        rows.append(row)
    if not rows:
        return pd.DataFrame()
    table = pd.DataFrame(rows).groupby(["arm", "labeled cases"], sort=True).mean(numeric_only=True).reset_index()
    ordered = ["arm", "labeled cases"] + sorted((c for c in table.columns if " " in c and c[-1].isdigit()),
                                               key=lambda c: (int(c.rsplit(" ", 1)[1]), c))
    return table[ordered].round(3)


def teacher_warning(table: pd.DataFrame, class_label: Callable[[int], str] = lambda k: f"class {k}", *,
                    min_coverage: float = 0.05, min_accuracy: float = 0.5) -> str | None:
    """A warning naming each (arm, labeled cases, foreground class) whose teacher was confident on
    fewer than ``min_coverage`` of the voxels it gave that class, or right on fewer than
    ``min_accuracy`` of its confident ones; None when every teacher cleared both."""
    if table is None or table.empty:
        return None
    rare, wrong = [], []
    for _, row in table.iterrows():
        where = f"`{row['arm']}` with {int(row['labeled cases'])} labeled cases"
        low_coverage, low_accuracy = [], []
        for column in table.columns:
            if not column.startswith(("coverage ", "accuracy ")):
                continue
            k = int(column.rsplit(" ", 1)[1])
            value = row[column]
            if k == 0 or pd.isna(value):
                continue
            if column.startswith("coverage ") and value < min_coverage:
                low_coverage.append(f"{class_label(k)} (coverage {value:.2f})")
            if column.startswith("accuracy ") and value < min_accuracy:
                low_accuracy.append(f"{class_label(k)} (accuracy {value:.2f})")
        if low_coverage:
            rare.append(f"{where}: {', '.join(low_coverage)}")
        if low_accuracy:
            wrong.append(f"{where}: {', '.join(low_accuracy)}")
    parts = []
    if rare:
        parts.append(f"**Warning: a teacher was rarely confident** (on fewer than {min_coverage:.0%} of the voxels "
                     f"it gave the class) for {'; '.join(rare)}. Its targets for that class are soft or "
                     "background, so consistency training pulls the student away from it: compare that class's "
                     "Dice with the labels-only arm before using this arm.")
    if wrong:
        parts.append(f"**Warning: a teacher's confident pseudo-labels were mostly wrong** (right on fewer than "
                     f"{min_accuracy:.0%}) for {'; '.join(wrong)}: the student learns the teacher's mistakes there.")
    return " ".join(parts) if parts else None
