"""A designated test set, used as given: a labels-table ``split`` column or a list of test case ids.

A hospital often holds out its own test cases (a later period, another scanner, the cases a
reader study used). Drawing a fresh test set would then compare on the wrong cases, so
:func:`split_with_designated_test` honours, in this order:

1. ``test_cases``: these case ids are the test set, every other case is the training pool;
2. a ``split_column`` in the table (``study.split_column``, default ``split``) with ``train``,
   ``val`` or ``test`` per row (case-insensitive; ``training``, ``validation``, ``testing`` too;
   empty cells join the training pool);
3. otherwise the usual patient-level draw (:func:`medssl.data.splits.split_by_patient`).

Designated test cases are never drawn into training or validation. Other scans of a test patient
that are not themselves test cases are left out of training and validation (with a warning), so
no patient sits on both sides. Validation cases are the rows marked ``val``, else drawn by patient
from the pool with ``val_fraction``.

Example:
    >>> import pandas as pd
    >>> table = pd.DataFrame({"case_id": ["a", "b", "c", "d"], "patient": ["1", "2", "3", "3"]})
    >>> split_with_designated_test(table, test_cases=["c"], patient_col="patient").tolist()
    ['train', 'train', 'test', 'excluded']
"""

from __future__ import annotations

import logging
from typing import Sequence

import pandas as pd

from medssl.errors import ConfigError, DataError

log = logging.getLogger(__name__)

SIDES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
         "test": "test", "testing": "test"}
"""Accepted values of a split column (lower-cased) and the side each means."""

EXCLUDED = "excluded"
"""The side of a case left out of every side (another scan of a designated test patient)."""


def designated_sides(table: pd.DataFrame, split_column: str | None) -> pd.Series | None:
    """The sides a ``split_column`` designates (``train``/``val``/``test``; empty -> ``train``), or
    None when the table has no such column or it designates no test case.

    Raises:
        DataError: a value that is not a side, naming the values and the cases holding them.
    """
    if not split_column or split_column not in table.columns:
        return None
    raw = table[split_column]
    text = raw.astype(str).str.strip().str.lower()
    empty = raw.isna() | text.isin(["", "nan", "none"])
    sides = text.map(SIDES)
    bad = sides.isna() & ~empty
    if bad.any():
        raise DataError(f"labels table column {split_column!r} holds {sorted(set(raw[bad].astype(str)))[:5]} "
                        f"(cases {list(table.loc[bad, 'case_id'][:5])}); use train, val or test "
                        "(or leave the cell empty for the training pool)")
    sides = sides.where(~empty, "train")
    if not (sides == "test").any():
        log.warning("labels table column %r marks no test case; drawing the test set by patient instead", split_column)
        return None
    return sides


def split_with_designated_test(
    table: pd.DataFrame,
    *,
    test_cases: Sequence[str] | None = None,
    split_column: str | None = "split",
    patient_col: str = "patient",
    test_fraction: float = 0.3,
    val_fraction: float = 0.0,
    seed: int = 0,
    stratify_col: str | None = None,
) -> pd.Series:
    """The side of every row (``train``, ``val``, ``test`` or ``excluded``), aligned with ``table``.

    ``table`` needs ``case_id`` and ``patient_col``. See the module docstring for the rules.

    Raises:
        ConfigError: both ``test_cases`` and a split column with test rows are given.
        DataError: unknown test case ids, a bad split value, no training case left.
    """
    from medssl.data.splits import check_no_leakage, split_by_patient

    designated = designated_sides(table, split_column)
    if test_cases:
        if designated is not None:
            raise ConfigError(f"study.test_cases and the labels table's {split_column!r} column both designate a "
                              "test set: keep one (set study.split_column: null to ignore the column)")
        wanted = [str(c) for c in test_cases]
        unknown = sorted(set(wanted) - set(table["case_id"]))
        if unknown:
            raise DataError(f"study.test_cases names {len(unknown)} case(s) not in the labels table (after its "
                            f"filters): {unknown[:5]}")
        designated = pd.Series("train", index=table.index).where(~table["case_id"].isin(wanted), "test")
    if designated is None:
        return split_by_patient(table, patient_col=patient_col, test_fraction=test_fraction,
                                val_fraction=val_fraction, seed=seed, stratify_col=stratify_col)
    sides = designated.copy()
    test_patients = set(table.loc[sides == "test", patient_col])
    shared = (sides != "test") & table[patient_col].isin(test_patients)
    if shared.any():
        log.warning("%d case(s) belong to a patient of the designated test set and are left out of training "
                    "and validation (e.g. %s)", int(shared.sum()), list(table.loc[shared, "case_id"][:3]))
        sides[shared] = EXCLUDED
    check_no_leakage(pd.DataFrame({"split": sides.where(sides.isin(["train", "val"])),
                                   patient_col: table[patient_col]}), "split", patient_col)
    if val_fraction > 0 and not (sides == "val").any():
        pool = table[sides == "train"]
        drawn = split_by_patient(pool, patient_col=patient_col, test_fraction=0.0, val_fraction=val_fraction,
                                 seed=seed, stratify_col=stratify_col)
        sides.loc[drawn.index] = drawn
    if not (sides == "train").any():
        raise DataError("the designated split leaves no training case (every case is test, val or a test "
                        "patient's other scan)")
    log.info("designated split: %s", sides.value_counts().to_dict())
    return sides.rename("split")
