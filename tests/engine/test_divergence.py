"""A NaN loss stops the run with a clear error and leaves the last good checkpoint intact."""

import hashlib

import pandas as pd
import pytest
import torch

from engine_toys import ToyMethod, ToyViews
from medssl.config import OptimizerConfig, PretrainConfig
from medssl.engine.checkpoint import load_checkpoint
from medssl.engine.trainer import Trainer
from medssl.errors import TrainingDivergedError


@pytest.mark.parametrize("log_every", [1, 3])
def test_nan_loss_raises_and_keeps_last_good_checkpoint(tmp_path, log_every):
    cfg = PretrainConfig(steps=8, batch_size=4, checkpoint_every=4, log_every=log_every, tensorboard=False,
                         optimizer=OptimizerConfig(name="sgd", lr=0.05))
    torch.manual_seed(0)
    trainer = Trainer(ToyMethod(loss="nan_after", nan_step=5), ToyViews(), cfg, tmp_path, seed=0)
    checkpoint = tmp_path / "checkpoints/last.pt"
    with pytest.raises(TrainingDivergedError) as info:
        trainer.fit()
    message = str(info.value)
    assert "step 5 of 8" in message  # the first bad step, even when detected at a later log step
    assert str(checkpoint) in message and "(step 4)" in message
    state = load_checkpoint(checkpoint)
    assert state["position"]["step"] == 4
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())
    rows = pd.read_csv(tmp_path / "metrics.csv")  # whole rows only, all finite
    assert rows["step"].max() <= 4 and rows["loss"].notna().all()


def test_nan_before_any_checkpoint_says_so(tmp_path):
    cfg = PretrainConfig(steps=4, batch_size=4, checkpoint_every=4, log_every=1, tensorboard=False)
    torch.manual_seed(0)
    trainer = Trainer(ToyMethod(loss="nan_after", nan_step=1), ToyViews(), cfg, tmp_path, seed=0)
    with pytest.raises(TrainingDivergedError, match="step 1 of 4.*no checkpoint had been written"):
        trainer.fit()
    assert not (tmp_path / "checkpoints/last.pt").exists()


def test_later_nan_never_overwrites_checkpoint(tmp_path):
    cfg = PretrainConfig(steps=6, batch_size=4, checkpoint_every=2, log_every=5, tensorboard=False)
    torch.manual_seed(0)
    trainer = Trainer(ToyMethod(loss="nan_after", nan_step=3), ToyViews(), cfg, tmp_path, seed=0)
    with pytest.raises(TrainingDivergedError, match="step 3 of 6"):
        trainer.fit()  # NaN at step 3: the save due at step 4 is refused
    path = tmp_path / "checkpoints/last.pt"
    assert load_checkpoint(path)["position"]["step"] == 2
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(TrainingDivergedError):
        Trainer(ToyMethod(loss="nan_after", nan_step=3), ToyViews(), cfg, tmp_path, seed=0).fit(resume=True)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
