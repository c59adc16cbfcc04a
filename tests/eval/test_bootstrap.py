"""Percentile bootstrap intervals: coverage, determinism, pairing, agreement with SciPy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from medssl.eval.bootstrap import bootstrap_ci, bootstrap_statistic, paired_bootstrap_ci


def test_coverage_of_the_mean_is_near_nominal():
    rng = np.random.default_rng(123)
    true_mean, trials, covered = 0.6, 200, 0
    for trial in range(trials):
        sample = rng.normal(true_mean, 0.15, size=40)
        ci = bootstrap_ci(sample, n_resamples=400, seed=trial)
        covered += ci.low <= true_mean <= ci.high
    # the percentile interval of a mean of 40 normal values covers close to 95% (binomial sd ~1.5%)
    assert 0.88 <= covered / trials <= 0.99


def test_same_seed_same_interval_other_seed_differs():
    values = np.random.default_rng(0).uniform(size=(3, 25))
    a = bootstrap_ci(values, n_resamples=300, seed=5)
    b = bootstrap_ci(values, n_resamples=300, seed=5)
    c = bootstrap_ci(values, n_resamples=300, seed=6)
    assert a == b
    assert (a.low, a.high) != (c.low, c.high)
    assert a.estimate == pytest.approx(values.mean())


def test_agrees_with_scipy_percentile_bootstrap():
    sample = np.random.default_rng(1).exponential(size=60)
    ours, theirs = [], []
    for seed in range(6):  # average out the Monte Carlo noise of each (sd ~0.01 at 2000 resamples)
        ci = bootstrap_ci(sample, n_resamples=2000, seed=seed)
        ours.append((ci.low, ci.high))
        ref = stats.bootstrap((sample,), np.mean, n_resamples=2000, method="percentile",
                              rng=np.random.default_rng(seed)).confidence_interval
        theirs.append((ref.low, ref.high))
    np.testing.assert_allclose(np.mean(ours, axis=0), np.mean(theirs, axis=0), atol=0.02)


def test_paired_interval_is_narrower_and_detects_a_small_shift():
    rng = np.random.default_rng(2)
    case_difficulty = rng.uniform(0.3, 0.9, size=30)           # shared by both inits
    scratch = case_difficulty + rng.normal(0, 0.02, size=(3, 30))
    ssl = case_difficulty + 0.03 + rng.normal(0, 0.02, size=(3, 30))
    paired = paired_bootstrap_ci(ssl, scratch, n_resamples=1000, seed=0)
    separate_a = bootstrap_ci(ssl, n_resamples=1000, seed=0)
    separate_b = bootstrap_ci(scratch, n_resamples=1000, seed=0)
    assert paired.estimate == pytest.approx(0.03, abs=0.01)
    assert paired.excludes_zero
    # two separate intervals overlap: without pairing the shift would look like noise
    assert separate_a.low < separate_b.high
    assert (paired.high - paired.low) < 0.3 * (separate_a.high - separate_a.low)


def test_seed_resampling_widens_interval_when_seeds_disagree():
    rng = np.random.default_rng(3)
    values = rng.normal(0.5, 0.01, size=(4, 30)) + np.array([[0.0], [0.2], [-0.2], [0.1]])
    with_seeds = bootstrap_ci(values, n_resamples=800, seed=0, resample_seeds=True)
    cases_only = bootstrap_ci(values, n_resamples=800, seed=0, resample_seeds=False)
    assert (with_seeds.high - with_seeds.low) > 3 * (cases_only.high - cases_only.low)


def test_statistic_nan_resamples_are_dropped():
    targets = np.array([0, 1] * 5)

    def fraction_positive_or_nan(case_idx, seed_idx):
        picked = targets[case_idx]
        out = picked.mean(axis=1)
        return np.where(picked.all(axis=1), np.nan, out)

    ci = bootstrap_statistic(fraction_positive_or_nan, n_cases=10, n_resamples=200, seed=0)
    assert np.isfinite(ci.low) and np.isfinite(ci.high)


def test_bad_values_are_refused():
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_ci(np.array([0.5, np.nan]))
    with pytest.raises(ValueError, match="same shape"):
        paired_bootstrap_ci(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci(np.zeros(3), level=1.5)
