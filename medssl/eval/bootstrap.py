"""Percentile bootstrap confidence intervals over test cases (and over training seeds).

A label-efficiency result has two sources of noise: which test cases happened to be in the test set,
and which labeled cases / initial weights a training seed drew. The study keeps, for one
initialisation and budget, a matrix ``values[s, n]`` (seed ``s``, test case ``n``); the same test
cases are scored under every seed and every initialisation, so two initialisations can be compared
*paired*, on the same cases and the same seeds (the seed fixes the labeled subset, see
:func:`medssl.data.splits.nested_label_budgets`).

The interval is the percentile bootstrap (Efron & Tibshirani, 1993, ch. 13): draw ``R`` resamples,
each picking ``N`` test cases with replacement (and, with ``resample_seeds=True``, ``S`` seeds with
replacement: a two-level bootstrap that also carries the training-seed spread), compute the statistic
on each, and report the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles. The paired difference
between two initialisations resamples the *same* case and seed indices for both.

Gap filled: ``scipy.stats.bootstrap`` resamples observations along one axis; it has no two-level
(seeds x cases) resampling and no way to recompute a set-level statistic such as the AUC from
resampled case indices shared by two runs. This module draws indices once and hands them to any
vectorised statistic.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> values = rng.normal(0.7, 0.1, size=(3, 40))       # 3 seeds x 40 test cases
    >>> ci = bootstrap_ci(values, n_resamples=500, seed=0)
    >>> ci.low < ci.estimate < ci.high
    True
    >>> diff = paired_bootstrap_ci(values + 0.05, values, n_resamples=500, seed=0)
    >>> round(diff.estimate, 3), diff.excludes_zero
    (0.05, True)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from medssl.utils.seeding import make_rng

Statistic = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``statistic(case_idx (R, N), seed_idx (R, S)) -> (R,)``: the statistic of each resample."""


@dataclass(frozen=True)
class Interval:
    """A point estimate with its percentile bootstrap interval."""

    estimate: float
    low: float
    high: float
    level: float
    n_resamples: int

    @property
    def excludes_zero(self) -> bool:
        """True when the whole interval lies on one side of zero (for differences)."""
        return bool(self.low > 0 or self.high < 0)

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}{k}": v for k, v in asdict(self).items()}

    def format(self, digits: int = 3) -> str:
        """``"0.712 [0.650, 0.771]"``."""
        if math.isnan(self.estimate):
            return "n/a"
        return f"{self.estimate:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def _as_matrix(values: np.ndarray, name: str) -> np.ndarray:
    matrix = np.asarray(values, dtype=np.float64)
    if matrix.ndim == 1:
        matrix = matrix[None, :]
    if matrix.ndim != 2 or matrix.shape[1] == 0:
        raise ValueError(f"{name} must be (cases,) or (seeds, cases) with at least one case, got {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise ValueError(f"{name} holds NaN or infinite values; bootstrap intervals need finite per-case values")
    return matrix


def bootstrap_statistic(
    statistic: Statistic,
    *,
    n_cases: int,
    n_seeds: int = 1,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    resample_seeds: bool = True,
    chunk: int = 256,
) -> Interval:
    """Percentile interval of any statistic of resampled ``(case, seed)`` indices.

    ``statistic`` receives integer index arrays ``case_idx (R, n_cases)`` and
    ``seed_idx (R, n_seeds)`` and returns ``R`` values; the point estimate is the statistic of the
    identity resample (all cases, all seeds once). Resamples whose statistic is NaN (an AUC of a
    resample holding one class) are left out of the quantiles.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    rng = make_rng(seed, "bootstrap")
    identity_cases = np.arange(n_cases)[None, :]
    identity_seeds = np.arange(n_seeds)[None, :]
    estimate = float(np.asarray(statistic(identity_cases, identity_seeds))[0])
    draws = []
    for start in range(0, n_resamples, chunk):
        r = min(chunk, n_resamples - start)
        case_idx = rng.integers(0, n_cases, size=(r, n_cases))
        if resample_seeds and n_seeds > 1:
            seed_idx = rng.integers(0, n_seeds, size=(r, n_seeds))
        else:
            seed_idx = np.broadcast_to(identity_seeds, (r, n_seeds))
        draws.append(np.asarray(statistic(case_idx, seed_idx), dtype=np.float64))
    samples = np.concatenate(draws)
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return Interval(estimate, float("nan"), float("nan"), level, n_resamples)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(samples, [alpha, 1.0 - alpha])
    return Interval(estimate, float(low), float(high), level, n_resamples)


def _mean_statistic(matrix: np.ndarray) -> Statistic:
    def statistic(case_idx: np.ndarray, seed_idx: np.ndarray) -> np.ndarray:
        picked = matrix[seed_idx[:, :, None], case_idx[:, None, :]]  # (R, S, N)
        return picked.mean(axis=(1, 2))

    return statistic


def bootstrap_ci(
    values: np.ndarray,
    *,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    resample_seeds: bool = True,
) -> Interval:
    """Interval of the mean of ``values`` (``(cases,)`` or ``(seeds, cases)``).

    The estimate is the grand mean (every seed weighs the same, every case the same).
    """
    matrix = _as_matrix(values, "values")
    return bootstrap_statistic(
        _mean_statistic(matrix),
        n_cases=matrix.shape[1],
        n_seeds=matrix.shape[0],
        n_resamples=n_resamples,
        level=level,
        seed=seed,
        resample_seeds=resample_seeds,
    )


def paired_bootstrap_ci(
    values_a: np.ndarray,
    values_b: np.ndarray,
    *,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    resample_seeds: bool = True,
) -> Interval:
    """Interval of ``mean(a) - mean(b)`` when ``a`` and ``b`` score the same cases under the same seeds.

    Each resample uses the same case (and seed) indices for both, so the case-to-case variation
    they share cancels: the interval is much narrower than two separate intervals would suggest.
    """
    a = _as_matrix(values_a, "values_a")
    b = _as_matrix(values_b, "values_b")
    if a.shape != b.shape:
        raise ValueError(f"paired values must have the same shape (seeds, cases): {a.shape} vs {b.shape}")
    return bootstrap_ci(a - b, n_resamples=n_resamples, level=level, seed=seed, resample_seeds=resample_seeds)
