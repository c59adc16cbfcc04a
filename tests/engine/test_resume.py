"""A run stopped after a checkpoint and resumed ends bit-identical to one never interrupted (CPU)."""

import pandas as pd
import pytest
import torch

from engine_toys import ToyMethod, ToyViews
from medssl.config import OptimizerConfig, PretrainConfig
from medssl.engine.checkpoint import load_checkpoint
from medssl.engine.trainer import Trainer
from medssl.errors import CheckpointError


class Killed(Exception):
    pass


class KilledAt(ToyMethod):
    def __init__(self, kill_step: int, **kw):
        super().__init__(**kw)
        self.kill_step = kill_step

    def on_train_step_end(self, step, max_steps):
        super().on_train_step_end(step, max_steps)
        if step == self.kill_step:
            raise Killed


def make_cfg(**over) -> PretrainConfig:
    base = dict(
        steps=7, batch_size=4, accumulate_grad_batches=2, checkpoint_every=3, log_every=1, tensorboard=False,
        optimizer=OptimizerConfig(name="lars", lr=0.5, weight_decay=1e-4, warmup_steps=2), max_grad_norm=5.0,
    )
    base.update(over)
    return PretrainConfig(**base)


def build(method_cls=ToyMethod, seed=0, **kw):
    torch.manual_seed(seed)
    return method_cls(**kw)


def test_killed_and_resumed_run_equals_uninterrupted_run(tmp_path):
    cfg = make_cfg()
    straight = Trainer(build(), ToyViews(n=6, device_side=True), cfg, tmp_path / "a", seed=3)
    outcome_a = straight.fit()

    # the "killed" run: stops after step 5, its last checkpoint is step 3; a fresh process resumes
    killed = Trainer(build(KilledAt, kill_step=5), ToyViews(n=6, device_side=True), cfg, tmp_path / "b", seed=3)
    with pytest.raises(Killed):
        killed.fit()
    assert load_checkpoint(tmp_path / "b/checkpoints/last.pt")["position"]["step"] == 3
    torch.manual_seed(1234)  # a new process: other global RNG state, other initial weights
    resumed = Trainer(build(seed=99), ToyViews(n=6, device_side=True), cfg, tmp_path / "b", seed=3)
    outcome_b = resumed.fit(resume=True)

    assert outcome_b.resumed_from_step == 3 and outcome_b.steps == outcome_a.steps == 7
    state_a, state_b = straight.method.state_dict(), resumed.method.state_dict()
    assert state_a.keys() == state_b.keys()
    for name in state_a:
        assert torch.equal(state_a[name], state_b[name]), name
    opt_a, opt_b = straight.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    for index in opt_a:
        for key in opt_a[index]:
            assert torch.equal(opt_a[index][key], opt_b[index][key])
    assert resumed.method.step_calls == [(s, 7) for s in range(4, 8)]  # the hook continued from step 4

    # metrics: the rows of steps 4-5 written before the kill were replaced, none duplicated
    rows_a = pd.read_csv(tmp_path / "a/metrics.csv")
    rows_b = pd.read_csv(tmp_path / "b/metrics.csv")
    assert rows_b["step"].tolist() == list(range(1, 8))
    pd.testing.assert_series_equal(rows_a["loss"], rows_b["loss"])
    assert outcome_a.final_loss == outcome_b.final_loss


def test_resume_refuses_missing_corrupt_or_foreign_checkpoints(tmp_path):
    cfg = make_cfg(steps=3, accumulate_grad_batches=1)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        Trainer(build(), ToyViews(), cfg, tmp_path, seed=0).fit(resume=True)

    Trainer(build(), ToyViews(), cfg, tmp_path, seed=0).fit()
    path = tmp_path / "checkpoints/last.pt"
    other = make_cfg(steps=3, accumulate_grad_batches=1, optimizer=OptimizerConfig(name="lars", lr=0.1))
    with pytest.raises(CheckpointError, match="different configuration"):
        Trainer(build(), ToyViews(), other, tmp_path, seed=0).fit(resume=True)
    with pytest.raises(CheckpointError, match="different configuration"):
        Trainer(build(), ToyViews(), cfg, tmp_path, seed=1).fit(resume=True)

    # logging and checkpoint frequency may change on resume; a finished run resumes to a no-op
    relaxed = make_cfg(steps=3, accumulate_grad_batches=1, log_every=2, checkpoint_every=5)
    outcome = Trainer(build(), ToyViews(), relaxed, tmp_path, seed=0).fit(resume=True)
    assert outcome.steps == 3 and outcome.final_loss == pytest.approx(pd.read_csv(tmp_path / "metrics.csv")["loss"].iloc[-1])

    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        Trainer(build(), ToyViews(), cfg, tmp_path, seed=0).fit(resume=True)
    torch.save({"something": 1}, path)
    with pytest.raises(CheckpointError, match="not a medssl pretraining checkpoint"):
        Trainer(build(), ToyViews(), cfg, tmp_path, seed=0).fit(resume=True)


def test_checkpoint_holds_everything_needed(tmp_path):
    cfg = make_cfg(steps=3, accumulate_grad_batches=1, precision="bf16")
    Trainer(build(), ToyViews(), cfg, tmp_path, seed=0, data_fingerprint="abc").fit()
    state = load_checkpoint(tmp_path / "checkpoints/last.pt")
    assert {"teacher.conv.weight", "steps_seen", "head.1.running_mean"} <= set(state["model"])
    assert int(state["model"]["steps_seen"]) == 3
    assert state["optimizer"]["state"] and state["scheduler"]["last_epoch"] == 3
    assert state["precision"]["precision"] == "bf16"
    assert {"torch", "numpy", "python", "cuda"} <= set(state["rng"][0])
    assert state["position"] == {"step": 3, "epoch": 1, "batch_in_epoch": 1}  # 6 items / batch 4: 2 per epoch
    assert state["data_fingerprint"] == "abc"


def test_staged_fit_continues_in_memory(tmp_path):
    cfg = make_cfg(steps=6, accumulate_grad_batches=1, checkpoint_every=6)
    straight = Trainer(build(), ToyViews(), cfg, tmp_path / "a", seed=2)
    straight.fit()
    staged = Trainer(build(), ToyViews(), cfg, tmp_path / "b", seed=2)
    first = staged.fit(until_step=4)
    assert first.steps == 4 and not (tmp_path / "b/checkpoints/last.pt").exists()
    staged.fit()
    for name, value in straight.method.state_dict().items():
        assert torch.equal(value, staged.method.state_dict()[name]), name
    assert pd.read_csv(tmp_path / "b/metrics.csv")["step"].tolist() == list(range(1, 7))
