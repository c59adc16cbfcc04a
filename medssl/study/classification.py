"""Tables a classification study needs besides its headline metric: class balance, per-class F1, confusion.

A mean AUC or F1 hides what a clinician asks first: how many test cases of each class there were,
which classes the classifier confuses, and whether one class carries the score. From the tidy
results (rows ``target``, ``prediction`` and ``prob_<k>`` per test case and run) this module
builds, with scikit-learn's ``f1_score`` and ``confusion_matrix``:

* :func:`class_balance_table`: test cases per class (``n``, share);
* :func:`per_class_f1_table`: per initialisation and budget, the F1 of every class and their
  macro mean (the ``f1`` metric of the report), each the mean over seeds;
* :func:`confusion_table`: true class x predicted class counts of one initialisation and budget,
  summed over seeds (each test case counted once per seed).

Example:
    >>> import pandas as pd
    >>> rows = [dict(init="scratch", budget=4.0, n_labeled=4, seed=0, fold=0, case_id=c, metric=m, value=v)
    ...         for c, t, p in (("a", 0, 1), ("b", 1, 1), ("c", 1, 1), ("d", 1, 1))
    ...         for m, v in (("target", t), ("prediction", p), ("prob_0", 1.0 - p), ("prob_1", float(p)))]
    >>> class_balance_table(pd.DataFrame(rows)).to_dict("records")
    [{'class': 'class 0', 'test cases': 1, 'share': '25%'}, {'class': 'class 1', 'test cases': 3, 'share': '75%'}]
    >>> per_class_f1_table(pd.DataFrame(rows)).iloc[0].to_dict()
    {'init': 'scratch', 'labeled cases': 4, 'F1 class 0': '0.000', 'F1 class 1': '0.857', 'F1 macro': '0.429'}
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd


def _cases(results: pd.DataFrame) -> pd.DataFrame:
    """One row per (init, n_labeled, seed, fold, case_id): target, prediction (argmax of the probabilities)."""
    sub = results[results["metric"].astype(str).str.match(r"^(target|prob_\d+)$")]
    if sub.empty:
        return pd.DataFrame()
    wide = sub.pivot_table(index=["init", "n_labeled", "seed", "fold", "case_id"], columns="metric",
                           values="value", aggfunc="first").reset_index()
    probs = sorted((c for c in wide.columns if str(c).startswith("prob_")), key=lambda c: int(str(c)[5:]))
    wide["prediction"] = wide[probs].to_numpy().argmax(axis=1)
    wide["target"] = wide["target"].astype(int)
    wide.attrs["num_classes"] = len(probs)
    return wide


def _label(k: int) -> str:
    return f"class {k}"


def class_balance_table(results: pd.DataFrame, class_label: Callable[[int], str] = _label) -> pd.DataFrame:
    """Test cases per class (each case once, whatever the runs) and its share of the test set."""
    cases = _cases(results)
    if cases.empty:
        return pd.DataFrame()
    targets = cases.drop_duplicates("case_id").set_index("case_id")["target"]
    counts = targets.value_counts().reindex(range(cases.attrs["num_classes"]), fill_value=0)
    return pd.DataFrame([{"class": class_label(k), "test cases": int(n), "share": f"{n / len(targets):.0%}"}
                         for k, n in counts.items()])


def per_class_f1_table(results: pd.DataFrame, class_label: Callable[[int], str] = _label) -> pd.DataFrame:
    """Rows (init, labeled cases): the F1 of each class and the macro F1, means over seeds."""
    from sklearn.metrics import f1_score

    cases = _cases(results)
    if cases.empty:
        return pd.DataFrame()
    labels = list(range(cases.attrs["num_classes"]))
    rows = []
    for (init, n_labeled), frame in cases.groupby(["init", "n_labeled"], sort=False):
        per_seed = np.stack([f1_score(run["target"], run["prediction"], labels=labels, average=None, zero_division=0.0)
                             for _, run in frame.groupby("seed")])
        row = {"init": init, "labeled cases": int(n_labeled)}
        for k in labels:
            row[f"F1 {class_label(k)}"] = f"{per_seed[:, k].mean():.3f}"
        row["F1 macro"] = f"{per_seed.mean(axis=1).mean():.3f}"
        rows.append(row)
    order = {init: i for i, init in enumerate(dict.fromkeys(results["init"]))}
    return pd.DataFrame(rows).sort_values(["init", "labeled cases"], key=lambda s: s.map(order) if s.name == "init"
                                          else s, kind="stable").reset_index(drop=True)


def confusion_table(results: pd.DataFrame, init: str, n_labeled: int,
                    class_label: Callable[[int], str] = _label) -> pd.DataFrame:
    """True class (rows) x predicted class (columns) counts of ``init`` at ``n_labeled``, summed over seeds."""
    from sklearn.metrics import confusion_matrix

    cases = _cases(results)
    if cases.empty:
        return pd.DataFrame()
    frame = cases[(cases["init"] == init) & (cases["n_labeled"] == n_labeled)]
    labels = list(range(cases.attrs["num_classes"]))
    matrix = confusion_matrix(frame["target"], frame["prediction"], labels=labels)
    table = pd.DataFrame(matrix, columns=[f"predicted {class_label(k)}" for k in labels])
    table.insert(0, "true class", [class_label(k) for k in labels])
    return table
