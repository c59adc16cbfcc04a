"""How ``benchmarks/methods_on_cohort.py`` decides whether a method's loss falls.

MoCo's queue starts as random unit vectors (easy negatives), so its loss first rises while real keys
replace them; the benchmark compares windows from the first step whose negatives are all real keys
(``ceil(queue_size / keys per step)`` steps in). The comparison must still be able to say NO.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medssl.config import load_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("methods_on_cohort", ROOT / "benchmarks" / "methods_on_cohort.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def metrics(loss: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"step": np.arange(1, len(loss) + 1), "loss": loss})


def queue_like_loss(steps: int = 150, fill: int = 64, seed: int = 0) -> np.ndarray:
    """Rises while the random queue is replaced (steps 1..fill), then falls slowly, with noise."""
    rng = np.random.default_rng(seed)
    steps_index = np.arange(1, steps + 1)
    rise = 4.8 + 1.6 * np.minimum(steps_index, fill) / fill
    fall = -0.003 * np.maximum(steps_index - fill, 0)
    return rise + fall + rng.normal(0, 0.03, steps)


def test_moco_is_measured_after_its_queue_first_fills(bench):
    config = load_config(ROOT / "configs" / "pretrain" / "moco.yaml")
    args = config.pretrain.method_args
    skip, note = bench.warmup_steps("moco", config)
    assert skip == -(-args["queue_size"] // config.pretrain.batch_size)
    assert f"step {skip + 1}" in note and "random queue" in note
    symmetric = load_config(ROOT / "configs" / "pretrain" / "moco.yaml", ["pretrain.method_args.symmetric=true"])
    assert bench.warmup_steps("moco", symmetric)[0] == -(-args["queue_size"] // (2 * config.pretrain.batch_size))
    assert bench.warmup_steps("simclr", load_config(ROOT / "configs" / "pretrain" / "simclr.yaml")) == (0, "")


def test_queue_warm_up_rise_is_left_out_but_a_flat_or_rising_loss_still_says_no(bench):
    loss = queue_like_loss()
    from_start = bench.summarise("moco", metrics(loss), 1.0, 1.0, skip=0)
    assert from_start["falls"] == "NO" and from_start["from"] == 1  # the queue warm-up hides the fall
    after_fill = bench.summarise("moco", metrics(loss), 1.0, 1.0, skip=64)
    assert after_fill["from"] == 65 and after_fill["falls"] == "yes"
    assert after_fill["first10"] == pytest.approx(loss[64:74].mean())
    assert after_fill["last10"] == pytest.approx(loss[-10:].mean())

    flat = queue_like_loss()
    flat[64:] = flat[63] + np.random.default_rng(1).normal(0, 0.03, len(flat) - 64)
    assert bench.summarise("moco", metrics(flat), 1.0, 1.0, skip=64)["falls"] == "NO"
    rising = queue_like_loss()
    rising[64:] += np.linspace(0, 0.5, len(rising) - 64)
    assert bench.summarise("moco", metrics(rising), 1.0, 1.0, skip=64)["falls"] == "NO"


def test_a_run_too_short_to_measure_after_the_warm_up_is_not_a_fall(bench):
    loss = np.linspace(7.0, 5.0, 30)  # falls, but the queue would only fill at step 64
    row = bench.summarise("moco", metrics(loss), 1.0, 1.0, skip=64)
    assert row["falls"] == "NO" and np.isnan(row["z"])
    assert "NO" in bench.format_table([row])


def test_non_finite_loss_anywhere_is_not_a_fall(bench):
    loss = np.linspace(7.0, 5.0, 150)
    loss[10] = np.nan  # inside the skipped warm-up: still a failed run
    assert bench.summarise("moco", metrics(loss), 1.0, 1.0, skip=64)["falls"] == "NO"


def test_dino_is_measured_once_its_zero_initialised_centre_has_warmed_up(bench):
    config = load_config(ROOT / "configs" / "pretrain" / "dino.yaml")
    momentum = config.pretrain.method_args.get("center_momentum", 0.9)
    skip, note = bench.warmup_steps("dino", config)
    assert momentum ** skip < bench.CENTRE_LEFT <= momentum ** (skip - 1)
    assert f"step {skip + 1}" in note and "centre" in note
    # the default run's shape: low while the centre warms up, then flat at log K -> still NO
    rng = np.random.default_rng(0)
    steps = np.arange(1, 151)
    flat = np.log(1024) - 0.4 * momentum ** steps + rng.normal(0, 0.003, 150)
    assert bench.summarise("dino", metrics(flat), 1.0, 1.0, skip=skip)["falls"] == "NO"
