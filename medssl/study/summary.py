"""From the tidy per-case results of a study to the table a reader needs: init x budget, with intervals.

``results.csv`` holds one row per ``init x budget x seed x fold x test case x metric`` (columns
:data:`RESULT_COLUMNS`). For one initialisation and budget this module builds the matrix
``values[seed, case]`` (folds pooled: with k-fold every case is a test case exactly once per seed)
and reports:

* ``mean``: the metric of each run (one seed), averaged over seeds; ``sd``: the standard deviation of
  the per-run metric over seeds (the training spread: which cases got labeled, initial weights);
* ``ci_low``, ``ci_high``: a percentile bootstrap interval over test cases and seeds
  (:mod:`medssl.eval.bootstrap`);
* ``diff``, ``diff_low``, ``diff_high``: the difference to the baseline initialisation (``scratch``)
  with its *paired* bootstrap interval: the same resampled cases and seeds for both.

Case-level metrics (Dice, HD95, surface Dice) average over cases. Set-level classification metrics
(AUC, balanced accuracy, F1, accuracy) are recomputed from the per-case predictions of each run,
inside every bootstrap resample; the vectorised versions here (Mann-Whitney rank AUC, confusion
counts) fill the gap that scikit-learn's metrics score one sample set per call, which would make
thousands of resamples slow; they are tested equal to scikit-learn's.

Example:
    >>> import pandas as pd
    >>> rows = [dict(init=i, budget=2.0, n_labeled=2, seed=s, fold=0, case_id=c, metric="dice",
    ...              value=v + (0.1 if i == "ssl" else 0.0))
    ...         for i in ("scratch", "ssl") for s in (0, 1) for c, v in (("a", 0.5), ("b", 0.7))]
    >>> table = summarize(pd.DataFrame(rows), "dice", n_resamples=200)
    >>> table[["init", "n_labeled", "mean", "diff"]].round(3).to_dict("records")
    [{'init': 'scratch', 'n_labeled': 2, 'mean': 0.6, 'diff': 0.0}, {'init': 'ssl', 'n_labeled': 2, 'mean': 0.7, 'diff': 0.1}]
"""

from __future__ import annotations

import logging
import warnings
from typing import Sequence

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from medssl.eval.bootstrap import Interval, bootstrap_statistic
from medssl.eval.metrics import CLASSIFICATION_METRICS, HIGHER_IS_BETTER

log = logging.getLogger(__name__)

RESULT_COLUMNS = ["init", "budget", "n_labeled", "seed", "fold", "case_id", "metric", "value"]
"""Columns of ``results.csv`` (tidy: one row per init x budget x seed x fold x test case x metric)."""

SET_LEVEL_METRICS = set(CLASSIFICATION_METRICS)


def higher_is_better(metric: str) -> bool:
    """Dice-like metrics: True; distances (``hd95``, ``hd95_<k>``): False."""
    base = metric.rsplit("_", 1)[0] if metric.rsplit("_", 1)[-1].isdigit() else metric
    return HIGHER_IS_BETTER.get(base, True)


# ---- vectorised set-level metrics: arrays (..., N) of targets, (..., N, K) of probabilities -------


def batched_auc(targets: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """ROC AUC for each leading index (binary: Mann-Whitney U; more classes: one-vs-rest macro).

    NaN where a resample holds one class only (or, for a class, no positive or no negative).
    """
    num_classes = probabilities.shape[-1]
    if num_classes == 2:
        return _binary_auc(targets == 1, probabilities[..., 1])
    per_class = [_binary_auc(targets == k, probabilities[..., k]) for k in range(num_classes)]
    return np.mean(np.stack(per_class), axis=0)


def _binary_auc(positive: np.ndarray, scores: np.ndarray) -> np.ndarray:
    ranks = rankdata(scores, axis=-1)  # ties get their average rank, as in the U statistic
    n_pos = positive.sum(axis=-1).astype(np.float64)
    n_neg = positive.shape[-1] - n_pos
    rank_sum = np.where(positive, ranks, 0.0).sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)


def batched_classification_metric(metric: str, targets: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """``metric`` in :data:`CLASSIFICATION_METRICS` for each leading index of the arrays."""
    if metric == "auc":
        return batched_auc(targets, probabilities)
    num_classes = probabilities.shape[-1]
    predictions = probabilities.argmax(axis=-1)
    if metric == "accuracy":
        return (predictions == targets).mean(axis=-1)
    true_k = np.stack([targets == k for k in range(num_classes)])  # (K, ..., N)
    pred_k = np.stack([predictions == k for k in range(num_classes)])
    tp = (true_k & pred_k).sum(axis=-1).astype(np.float64)
    support = true_k.sum(axis=-1).astype(np.float64)
    predicted = pred_k.sum(axis=-1).astype(np.float64)
    if metric == "balanced_accuracy":  # mean recall over the classes present (as scikit-learn)
        with np.errstate(divide="ignore", invalid="ignore"):
            recall = np.where(support > 0, tp / support, np.nan)
        return np.nanmean(recall, axis=0)
    if metric == "f1":
        with np.errstate(divide="ignore", invalid="ignore"):
            f1 = np.where(support + predicted > 0, 2 * tp / (support + predicted), 0.0)
        return f1.mean(axis=0)  # macro, binary included (see medssl.eval.metrics.classification_metrics)
    raise ValueError(f"unknown classification metric {metric!r}; choose from {CLASSIFICATION_METRICS}")


# ---- matrices from the tidy table --------------------------------------------------------------


def _pivot(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """``(seed) x (case)`` table of one metric, folds pooled."""
    sub = frame[frame["metric"] == metric]
    if sub.duplicated(["seed", "case_id"]).any():
        raise ValueError(f"results hold a test case twice for one seed (metric {metric}): are folds overlapping?")
    return sub.pivot(index="seed", columns="case_id", values="value").sort_index().sort_index(axis=1)


class _Cell:
    """The data of one (init, budget) for one metric, in the form the statistics need."""

    def __init__(self, frame: pd.DataFrame, metric: str):
        self.metric = metric
        self.set_level = metric in SET_LEVEL_METRICS
        if self.set_level:
            prob_metrics = sorted(
                (m for m in frame["metric"].unique() if str(m).startswith("prob_")), key=lambda m: int(m[5:])
            )
            if not prob_metrics:
                raise ValueError(f"metric {metric!r} needs per-case probabilities (prob_<k> rows) in the results")
            targets = _pivot(frame, "target")
            self.seeds = list(targets.index)
            self.cases = list(targets.columns)
            self.targets = targets.to_numpy()
            self.probabilities = np.stack(
                [_pivot(frame, m).reindex(index=self.seeds, columns=self.cases).to_numpy() for m in prob_metrics],
                axis=-1,
            )  # (S, N, K)
        else:
            values = _pivot(frame, metric)
            self.seeds = list(values.index)
            self.cases = list(values.columns)
            self.values = values.to_numpy()

    def restrict(self, seeds: Sequence, cases: Sequence) -> "_Cell":
        si = [self.seeds.index(s) for s in seeds]
        ci = [self.cases.index(c) for c in cases]
        clone = object.__new__(_Cell)
        clone.metric, clone.set_level, clone.seeds, clone.cases = self.metric, self.set_level, list(seeds), list(cases)
        if self.set_level:
            clone.targets = self.targets[np.ix_(si, ci)]
            clone.probabilities = self.probabilities[np.ix_(si, ci)]
        else:
            clone.values = self.values[np.ix_(si, ci)]
        return clone

    def complete(self) -> tuple[list, list]:
        """Seeds and cases without missing values (a cell still running, a failed case)."""
        data = self.targets if self.set_level else self.values
        finite = np.isfinite(data)
        cases = [c for j, c in enumerate(self.cases) if finite[:, j].all()]
        return list(self.seeds), cases

    def per_run(self, case_idx: np.ndarray, seed_idx: np.ndarray) -> np.ndarray:
        """``(R, S')``: the metric of each picked seed's run on the resampled cases."""
        if self.set_level:
            targets = self.targets[seed_idx[:, :, None], case_idx[:, None, :]]  # (R, S', N)
            probs = self.probabilities[seed_idx[:, :, None], case_idx[:, None, :]]  # (R, S', N, K)
            return batched_classification_metric(self.metric, targets, probs)
        return self.values[seed_idx[:, :, None], case_idx[:, None, :]].mean(axis=-1)

    def statistic(self, case_idx: np.ndarray, seed_idx: np.ndarray) -> np.ndarray:
        runs = self.per_run(case_idx, seed_idx)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a resample whose AUC is undefined in every run
            return np.nanmean(runs, axis=-1)


def _difference(a: _Cell, b: _Cell):
    def statistic(case_idx: np.ndarray, seed_idx: np.ndarray) -> np.ndarray:
        return a.statistic(case_idx, seed_idx) - b.statistic(case_idx, seed_idx)

    return statistic


def summarize(
    results: pd.DataFrame,
    metric: str,
    *,
    baseline: str | None = "scratch",
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    resample_seeds: bool = True,
) -> pd.DataFrame:
    """One row per (init, budget): mean, sd over seeds, bootstrap CI, difference to ``baseline``.

    Columns: ``init, budget, n_labeled, n_seeds, n_cases, mean, sd, ci_low, ci_high, diff, diff_low,
    diff_high, diff_excludes_zero``. The difference columns are NaN when there is no baseline (or it
    lacks that budget); pairs use only the seeds and cases both have.
    """
    missing = set(RESULT_COLUMNS) - set(results.columns)
    if missing:
        raise ValueError(f"results lack the column(s) {sorted(missing)}")
    if metric not in SET_LEVEL_METRICS and not (results["metric"] == metric).any():
        raise ValueError(f"no results for metric {metric!r}; available: {sorted(results['metric'].unique())}")
    inits = list(dict.fromkeys(results["init"]))
    if baseline is not None and baseline in inits:
        inits = [baseline] + [i for i in inits if i != baseline]
    rows = []
    for budget, budget_frame in sorted(results.groupby("budget", sort=True), key=lambda kv: kv[0]):
        cells = {init: _Cell(frame, metric) for init, frame in budget_frame.groupby("init", sort=False)}
        base = cells.get(baseline) if baseline is not None else None
        for init in inits:
            if init not in cells:
                continue
            cell = cells[init]
            seeds, cases = cell.complete()
            cell = cell.restrict(seeds, cases)
            n_labeled = budget_frame.loc[budget_frame["init"] == init, "n_labeled"]
            row: dict[str, object] = {
                "init": init,
                "budget": float(budget),
                "n_labeled": int(round(float(n_labeled.mean()))),
                "n_seeds": len(seeds),
                "n_cases": len(cases),
            }
            identity_cases = np.arange(len(cases))[None, :]
            per_run = cell.per_run(identity_cases, np.arange(len(seeds))[None, :])[0]
            row["mean"] = float(np.nanmean(per_run)) if len(per_run) else float("nan")
            row["sd"] = float(np.nanstd(per_run, ddof=1)) if len(per_run) > 1 else float("nan")
            interval = bootstrap_statistic(
                cell.statistic, n_cases=len(cases), n_seeds=len(seeds), n_resamples=n_resamples,
                level=level, seed=seed, resample_seeds=resample_seeds,
            ) if cases else Interval(float("nan"), float("nan"), float("nan"), level, 0)
            row["ci_low"], row["ci_high"] = interval.low, interval.high
            diff = Interval(float("nan"), float("nan"), float("nan"), level, 0)
            if base is not None and init == baseline:
                diff = Interval(0.0, 0.0, 0.0, level, 0)
            elif base is not None:
                base_seeds, base_cases = base.complete()
                common_seeds = [s for s in seeds if s in base_seeds]
                common_cases = [c for c in cases if c in base_cases]
                if common_seeds and common_cases:
                    a = cell.restrict(common_seeds, common_cases)
                    b = base.restrict(common_seeds, common_cases)
                    diff = bootstrap_statistic(
                        _difference(a, b), n_cases=len(common_cases), n_seeds=len(common_seeds),
                        n_resamples=n_resamples, level=level, seed=seed, resample_seeds=resample_seeds,
                    )
            row["diff"], row["diff_low"], row["diff_high"] = diff.estimate, diff.low, diff.high
            row["diff_excludes_zero"] = bool(init != baseline and diff.excludes_zero)
            rows.append(row)
    return pd.DataFrame(rows)


def per_run_table(results: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per (init, budget, seed): the metric of that run (mean over cases, or set-level)."""
    rows = []
    for (init, budget, seed), frame in results.groupby(["init", "budget", "seed"], sort=True):
        cell = _Cell(frame, metric)
        _, cases = cell.complete()
        cell = cell.restrict(cell.seeds, cases)
        value = cell.per_run(np.arange(len(cases))[None, :], np.arange(len(cell.seeds))[None, :])[0]
        rows.append({
            "init": init, "budget": float(budget), "n_labeled": int(frame["n_labeled"].iloc[0]),
            "seed": seed, "value": float(value[0]) if len(value) else float("nan"),
        })
    return pd.DataFrame(rows)


def available_metrics(results: pd.DataFrame) -> list[str]:
    """The headline metrics a results table supports, in report order (no per-class columns)."""
    present = set(results["metric"].unique())
    ordered = [m for m in ("dice", "surface_dice", "hd95") if m in present]
    if "target" in present and any(str(m).startswith("prob_") for m in present):
        ordered += ["auc", "balanced_accuracy", "f1", "accuracy"]
    return ordered
