"""Patient-level splits: train/validation/test, k-fold, nested label budgets, and the leakage check.

A patient scanned twice must never have one scan in training and the other in the test set: the
model would be tested on anatomy it has seen, and every reported number would be optimistic. Every
function here draws whole patients (rows sharing ``patient_col``), and every splitter runs
:func:`check_no_leakage` on its result before returning it.

What is reused and what is added:

* train/test and train/val cuts use scikit-learn's ``GroupShuffleSplit`` (no stratification) or
  ``train_test_split(..., stratify=...)`` applied to one row per patient (stratified); k-fold uses
  ``GroupKFold(shuffle=True)`` or ``StratifiedGroupKFold``;
* scikit-learn has no *nested* label budgets (the 2 labeled cases inside the 4, inside the 8) and
  no budget counted in cases while drawing whole patients: :func:`nested_label_budgets` fills that
  gap with a greedy, seeded draw that keeps each budget's class proportions close to the pool's.

A patient's class for stratification is the most frequent value of ``stratify_col`` among its rows
(ties: the largest value, so a patient with one positive and one negative scan counts as positive);
missing values form a class of their own.

Example:
    >>> import pandas as pd
    >>> df = pd.DataFrame({"patient_key": ["a", "a", "b", "c", "d", "e", "f", "g", "h", "i"],
    ...                    "label": [1, 1, 0, 1, 0, 1, 0, 1, 0, 0]})
    >>> split = split_by_patient(df, test_fraction=0.2, val_fraction=0.2, seed=0, stratify_col="label")
    >>> sorted(split.unique())
    ['test', 'train', 'val']
    >>> budgets = nested_label_budgets(df[split == "train"], [1, 2, 3], seed=0)
    >>> set(budgets[1]) <= set(budgets[2]) <= set(budgets[3])
    True
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Hashable, Sequence

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold, GroupShuffleSplit, StratifiedGroupKFold, train_test_split

from medssl.data.tables import read_table, write_table
from medssl.errors import DataError, SplitLeakageError

log = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "val", "test")
_MISSING = "<missing>"


# --------------------------------------------------------------------------------------------
# checks


def _require_columns(df: pd.DataFrame, columns: Sequence[str | None], what: str = "the table") -> None:
    missing = [c for c in columns if c is not None and c not in df.columns]
    if missing:
        raise DataError(
            f"{what} has no column {', '.join(repr(c) for c in missing)}; available columns: "
            f"{', '.join(map(str, df.columns))} (name an existing column: patient_col=/stratify_col=, or --stratify on the command line)"
        )


def _patient_keys(df: pd.DataFrame, patient_col: str, what: str = "the table") -> pd.Series:
    _require_columns(df, [patient_col], what)
    keys = df[patient_col]
    empty = keys.isna() | (keys.astype(str).str.strip() == "")
    if empty.any():
        raise DataError(
            f"{what}: {int(empty.sum())} row(s) have no {patient_col!r} (e.g. index "
            f"{list(df.index[empty][:5])}); every row needs a patient key so that no patient is split "
            "across sides (fill it, or drop those rows)"
        )
    return keys.astype(str)


def check_no_leakage(df: pd.DataFrame, split_col: str = "split", patient_col: str = "patient_key") -> None:
    """Raise :class:`~medssl.errors.SplitLeakageError` when a patient has rows on two sides.

    ``split_col`` holds the side of each row (``train``/``val``/``test``, a fold number, ...);
    rows whose side is missing are ignored. The message names up to ten patient pseudonyms and the
    sides each appears on.

    Example:
        >>> df = pd.DataFrame({"patient_key": ["p1", "p1", "p2"], "split": ["train", "test", "test"]})
        >>> try:
        ...     check_no_leakage(df)
        ... except SplitLeakageError as err:
        ...     print("p1 (test, train)" in str(err))
        True
    """
    _require_columns(df, [split_col, patient_col])
    assigned = df[df[split_col].notna()]
    sides = assigned.groupby(assigned[patient_col].astype(str))[split_col].agg(lambda s: sorted(set(map(str, s))))
    leaking = sides[sides.map(len) > 1]
    if len(leaking):
        named = "; ".join(f"{patient} ({', '.join(where)})" for patient, where in leaking.head(10).items())
        more = f" and {len(leaking) - 10} more" if len(leaking) > 10 else ""
        raise SplitLeakageError(
            f"patient leakage in {split_col!r}: {len(leaking)} patient(s) on more than one side: {named}{more}; "
            "split by patient (medssl.data.splits) instead of by row"
        )


# --------------------------------------------------------------------------------------------
# per-patient tables


def _patient_classes(df: pd.DataFrame, keys: pd.Series, stratify_col: str | None) -> pd.Series | None:
    """One class per patient (index: patient key), or None without stratification."""
    if stratify_col is None:
        return None
    _require_columns(df, [stratify_col])
    values = df[stratify_col].astype(object).where(df[stratify_col].notna(), _MISSING).astype(str)

    def majority(group: pd.Series) -> str:
        counts = group.value_counts()
        best = counts[counts == counts.max()].index
        return str(max(best))

    return values.groupby(keys.values).agg(majority)


def _count_for(fraction: float, n: int, name: str) -> int:
    """Patients for a fraction: ``round(fraction * n)``, at least one when the fraction is > 0."""
    if not 0.0 <= fraction < 1.0:
        raise DataError(f"{name} must be in [0, 1), got {fraction}")
    if fraction == 0.0:
        return 0
    return max(1, int(round(fraction * n)))


def _draw_patients(
    patients: np.ndarray,
    classes: pd.Series | None,
    n_take: int,
    seed: int,
    side: str = "test",
) -> np.ndarray:
    """Choose ``n_take`` of ``patients`` (stratified by ``classes`` when given and possible) for
    ``side`` (``test`` or ``validation``, named in the warning when stratification is impossible)."""
    if n_take == 0:
        return np.array([], dtype=patients.dtype)
    if classes is not None:
        strata = classes.loc[patients].to_numpy()
        counts = pd.Series(strata).value_counts()
        n_rest = len(patients) - n_take
        if counts.min() >= 2 and n_take >= len(counts) and n_rest >= len(counts):
            _, taken = train_test_split(patients, test_size=n_take, random_state=seed, stratify=strata)
            return np.asarray(taken)
        log.warning(
            "a stratified draw of the %d %s patient(s) from %d is impossible (patients per class %s); drawing "
            "them unstratified", n_take, side, len(patients), counts.to_dict(),
        )
    splitter = GroupShuffleSplit(n_splits=1, test_size=n_take, random_state=seed)
    _, taken = next(splitter.split(patients, groups=patients))
    return patients[taken]


# --------------------------------------------------------------------------------------------
# splitters


def split_by_patient(
    df: pd.DataFrame,
    *,
    patient_col: str = "patient_key",
    test_fraction: float = 0.2,
    val_fraction: float = 0.1,
    seed: int = 0,
    stratify_col: str | None = None,
) -> pd.Series:
    """Assign every row to ``train``, ``val`` or ``test``, whole patients at a time.

    Fractions are of patients (``round(f * n_patients)``, at least one patient when ``f > 0``);
    with ``stratify_col`` the class proportions of the patients are kept on each side when every
    class has at least two patients (else an unstratified draw, with a warning).

    Returns:
        a string Series named ``split`` aligned with ``df.index``.

    Raises:
        DataError: a missing column, a row without a patient key, fractions that leave no
            training patient.
    """
    keys = _patient_keys(df, patient_col)
    patients = np.array(sorted(keys.unique()))
    n = len(patients)
    n_test = _count_for(test_fraction, n, "test_fraction")
    n_val = _count_for(val_fraction, n, "val_fraction")
    if n_test + n_val >= n:
        raise DataError(
            f"cannot split {n} patient(s) into test ({test_fraction}) and val ({val_fraction}) and keep a "
            f"training patient: that needs {n_test} + {n_val} + at least 1 patients; lower the fractions "
            "or add patients"
        )
    classes = _patient_classes(df, keys, stratify_col)
    test = _draw_patients(patients, classes, n_test, seed, "test")
    rest = np.setdiff1d(patients, test)
    val = _draw_patients(rest, classes, n_val, seed + 1, "validation")
    side = pd.Series("train", index=patients)
    side.loc[test] = "test"
    side.loc[val] = "val"
    split = pd.Series(side.loc[keys.to_numpy()].to_numpy(), index=df.index, name="split")
    check_no_leakage(pd.DataFrame({"split": split, patient_col: keys}), "split", patient_col)
    log.info("patient split: %s", split.value_counts().to_dict())
    return split


def kfold_by_patient(
    df: pd.DataFrame,
    k: int,
    *,
    seed: int = 0,
    patient_col: str = "patient_key",
    stratify_col: str | None = None,
) -> pd.Series:
    """Fold ids ``0 .. k-1`` for every row, whole patients at a time (``GroupKFold(shuffle=True)``,
    or ``StratifiedGroupKFold`` with ``stratify_col``). Fold ``i`` is the validation part of round ``i``.

    Returns:
        an int Series named ``fold`` aligned with ``df.index``.

    Raises:
        DataError: ``k < 2``, more folds than patients, a missing column.
    """
    keys = _patient_keys(df, patient_col)
    n_patients = keys.nunique()
    if int(k) != k or k < 2:
        raise DataError(f"k-fold needs k >= 2 folds, got {k}")
    if k > n_patients:
        raise DataError(f"cannot make {k} folds from {n_patients} patient(s): each fold needs a patient; lower k")
    classes = _patient_classes(df, keys, stratify_col)
    rows = np.arange(len(df))
    if classes is None:
        splitter = GroupKFold(n_splits=int(k), shuffle=True, random_state=seed)
        folds_iter = splitter.split(rows, groups=keys.to_numpy())
    else:
        row_classes = classes.loc[keys.to_numpy()].to_numpy()
        smallest = pd.Series(classes).value_counts().min()
        if smallest < k:
            log.warning("stratified %d-fold: a class has only %d patient(s); some folds will miss it", k, smallest)
        splitter = StratifiedGroupKFold(n_splits=int(k), shuffle=True, random_state=seed)
        folds_iter = splitter.split(rows, row_classes, groups=keys.to_numpy())
    fold = np.full(len(df), -1, dtype=np.int64)
    for index, (_, held_out) in enumerate(folds_iter):
        fold[held_out] = index
    result = pd.Series(fold, index=df.index, name="fold")
    check_no_leakage(pd.DataFrame({"fold": result, patient_col: keys}), "fold", patient_col)
    return result


def _budget_sizes(budgets: Sequence[float], n_cases: int) -> list[tuple[Hashable, int]]:
    sizes = []
    for budget in budgets:
        value = float(budget)
        if value >= 1.0:
            if value != int(value):
                raise DataError(f"label budget {budget!r}: a case count must be a whole number (or a fraction < 1)")
            size = int(value)
        elif value > 0.0:
            size = max(1, int(round(value * n_cases)))
        else:
            raise DataError(f"label budget {budget!r} must be a case count >= 1 or a fraction 0 < f < 1")
        if size > n_cases:
            raise DataError(
                f"label budget {budget!r} asks for {size} labeled cases but the pool holds only {n_cases}; "
                "lower the budget or enlarge the training pool"
            )
        sizes.append((budget, size))
    return sizes


def nested_label_budgets(
    df: pd.DataFrame,
    budgets: Sequence[float],
    *,
    seed: int = 0,
    patient_col: str = "patient_key",
    stratify_col: str | None = None,
    id_col: str | None = None,
) -> dict[Hashable, list]:
    """Nested labeled subsets of the pool ``df`` for each budget, drawn patient by patient.

    Budgets are case counts (``>= 1``) or fractions of the pool's cases (``0 < f < 1``, rounded, at
    least 1). The subsets are nested - each list is a prefix of the next larger budget's list - so a
    label-efficiency curve compares growing sets, not different draws.

    The draw: patients in a seeded random order; to grow the selection to ``b`` cases, repeatedly
    give priority to the classes still absent from the selection, then to the class with the
    largest deficit ``p_c * b - n_c`` (``p_c``: the class's share of the pool's cases, ``n_c``: cases
    of class ``c`` selected so far), and take the first patient (in that order) of such a class whose
    cases all fit in what is left of ``b`` - leaving room for one case of every other absent class,
    and preferring patients no larger than the deficit. So a budget of 2 holds one case of each of
    two classes whenever both exist, and larger budgets keep the pool's proportions within about one
    case. When no whole patient fits, some cases of the first patient of the most deserving class
    are taken and the rest stay available for the larger budgets: budgets count cases exactly, and a
    patient may be partly labeled at a budget's edge (harmless inside a training pool).

    Args:
        df: the pool (typically the training rows of a patient split).
        budgets: case counts or fractions, in any order.
        id_col: return this column's values (e.g. ``case_id``) instead of ``df`` index labels.

    Returns:
        ``{budget: [index label or id, ...]}`` with the budgets as given; lists in selection order.

    Raises:
        DataError: a budget larger than the pool or not positive, a missing column, rows without
            a patient key.
    """
    if len(df) == 0:
        raise DataError("cannot draw label budgets from an empty pool")
    keys = _patient_keys(df, patient_col, "the label-budget pool")
    _require_columns(df, [stratify_col, id_col], "the label-budget pool")
    sizes = _budget_sizes(budgets, len(df))
    rng = np.random.default_rng(seed)
    if stratify_col is not None:
        case_class = df[stratify_col].astype(object).where(df[stratify_col].notna(), _MISSING).astype(str).to_numpy()
    else:
        case_class = np.full(len(df), "all", dtype=object)
    patient_class = _patient_classes(df, keys, stratify_col)
    class_names = sorted(set(case_class))
    share = {c: float(np.mean(case_class == c)) for c in class_names}

    # remaining cases per patient, each patient's cases in a seeded random order
    positions = np.arange(len(df))
    patients = list(rng.permutation(np.array(sorted(keys.unique()), dtype=object)))
    remaining: dict[str, list[int]] = {}
    for patient in patients:
        rows = positions[keys.to_numpy() == patient]
        remaining[patient] = list(rng.permutation(rows))
    selected: list[int] = []
    counts = {c: 0 for c in class_names}

    def patient_label(patient: str) -> str:
        return "all" if patient_class is None else str(patient_class[patient])

    for _, size in sorted(sizes, key=lambda item: item[1]):
        while len(selected) < size:
            need = size - len(selected)
            deficit = {c: share[c] * size - counts[c] for c in class_names}
            absent = {c for c in class_names if counts[c] == 0 and share[c] > 0}
            priority = {c: deficit[c] + (1e6 if c in absent else 0.0) for c in class_names}
            available = {patient_label(p) for p in patients if remaining[p]}
            due = {c for c in available if deficit[c] >= 0.5 or c in absent} or available

            def allowed(label: str) -> int:  # leave room for one case of every other absent class
                return max(1, need - len(absent - {label}))

            first_position = {}
            for order, patient in enumerate(patients):
                if remaining[patient]:
                    first_position.setdefault(patient_label(patient), order)
            ranked_classes = sorted(due, key=lambda c: (-round(priority[c], 9), first_position[c]))
            taken: list[int] = []
            partial_label = ranked_classes[0]
            for label in ranked_classes:
                best_key, best_patient = None, None
                for order, patient in enumerate(patients):
                    cases = remaining[patient]
                    if not cases or patient_label(patient) != label or len(cases) > allowed(label):
                        continue
                    small = len(cases) <= max(1, int(np.floor(deficit[label] + 0.5)))
                    key = (not small, order)
                    if best_key is None or key < best_key:
                        best_key, best_patient = key, patient
                if best_patient is not None:  # a whole patient of this class fits
                    taken, remaining[best_patient] = remaining[best_patient], []
                    break
                if label in absent:  # coverage first: part of a patient rather than no case of the class
                    partial_label = label
                    break
            if not taken:
                # no whole patient fits: part of the first patient of the most deserving class
                label = partial_label
                best_patient = next(p for p in patients if remaining[p] and patient_label(p) == label)
                cases = remaining[best_patient]
                ranked = sorted(cases, key=lambda r: -deficit[case_class[r]])  # stable: keeps the seeded order
                taken = ranked[: allowed(label)]
                remaining[best_patient] = [r for r in cases if r not in taken]
            for row in taken:
                counts[case_class[row]] += 1
            selected.extend(taken)

    labels = df[id_col].to_numpy() if id_col is not None else df.index.to_numpy()
    prefix = {size: [labels[r] for r in selected[:size]] for size in {s for _, s in sizes}}
    result = {budget: list(prefix[size]) for budget, size in sizes}
    if stratify_col is not None:
        for budget, size in sizes:
            mix = pd.Series(case_class[selected[:size]]).value_counts().to_dict()
            log.debug("label budget %s: %d cases, classes %s", budget, size, mix)
    return result


# --------------------------------------------------------------------------------------------
# files


def write_splits(
    manifest_path: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    k: int | None = None,
    test_fraction: float = 0.2,
    val_fraction: float = 0.1,
    stratify_col: str | None = None,
    seed: int = 0,
    patient_col: str = "patient_key",
) -> Path:
    """Read a manifest (or label table), add a ``split`` or ``fold`` column, write it atomically.

    Without ``k``: ``split`` in ``train``/``val``/``test`` from :func:`split_by_patient`. With ``k``:
    ``fold`` ids ``0 .. k-1`` from :func:`kfold_by_patient` instead (the fractions are not used).
    When the table has a ``status`` column (a manifest from ``medssl manifest``), only rows with
    ``status == "ok"`` are split; the others keep an empty split (or fold ``-1``). The output format
    follows ``out_path``'s suffix (``.csv`` or ``.parquet``). This is what ``medssl split`` runs.

    Returns:
        ``out_path``.
    """
    table = read_table(manifest_path, missing_hint=f"build one with `medssl manifest ROOT --out {Path(manifest_path).name}`")
    usable = table["status"].astype(str) == "ok" if "status" in table.columns else pd.Series(True, index=table.index)
    if not usable.any():
        raise DataError(f"{manifest_path}: no row with status 'ok' to split")
    where = f"{manifest_path}"
    try:
        if k is None:
            split = split_by_patient(table[usable], patient_col=patient_col, test_fraction=test_fraction,
                                     val_fraction=val_fraction, seed=seed, stratify_col=stratify_col)
            table["split"] = pd.Series(pd.NA, index=table.index, dtype="object")
            table.loc[usable, "split"] = split
        else:
            if test_fraction or val_fraction:
                log.info("k-fold requested: test/val fractions are not used")
            fold = kfold_by_patient(table[usable], k, seed=seed, patient_col=patient_col, stratify_col=stratify_col)
            table["fold"] = -1
            table.loc[usable, "fold"] = fold
    except DataError as exc:
        raise type(exc)(f"{where}: {exc}") from None
    written = write_table(table, out_path)
    log.info("splits of %d rows written to %s", int(usable.sum()), written)
    return written
