"""Gradient accumulation equals one big batch (BN-free model); mixed precision set-ups."""

import pytest
import torch

from engine_toys import ToyMethod, ToyViews
from medssl.config import OptimizerConfig, PretrainConfig
from medssl.engine.precision import PrecisionPolicy
from medssl.engine.trainer import Trainer
from medssl.errors import ConfigError


def train(tmp_path, **over):
    cfg = PretrainConfig(**{"steps": 3, "batch_size": 8, "checkpoint_every": 3, "log_every": 1,
                            "tensorboard": False, "optimizer": OptimizerConfig(name="sgd", lr=0.1), **over})
    torch.manual_seed(0)
    trainer = Trainer(ToyMethod(loss="mse", batchnorm=False, dropout=0.0), ToyViews(n=10), cfg, tmp_path, seed=0)
    trainer.fit()
    return trainer


def test_two_half_batches_equal_one_batch(tmp_path):
    whole = train(tmp_path / "a", accumulate_grad_batches=1)
    halves = train(tmp_path / "b", accumulate_grad_batches=2)
    quarters = train(tmp_path / "c", accumulate_grad_batches=4)
    initial = ToyMethod(loss="mse", batchnorm=False, dropout=0.0)
    moved = False
    for name, value in whole.method.state_dict().items():
        torch.testing.assert_close(halves.method.state_dict()[name], value, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(quarters.method.state_dict()[name], value, rtol=1e-5, atol=1e-6)
        moved |= not torch.equal(value, initial.state_dict()[name])
    assert moved
    assert halves.micro_batch == 4 and quarters.micro_batch == 2


def test_batch_that_does_not_split_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="multiple of 3"):
        train(tmp_path, accumulate_grad_batches=3)


class DtypeSpy(ToyMethod):
    def forward(self, batch):
        loss, logs = super().forward(batch)
        self.seen_dtype = self.encoder(batch["views"][0]).dtype
        return loss, logs


def test_bf16_autocast_trains_on_cpu(tmp_path):
    cfg = PretrainConfig(steps=3, batch_size=4, precision="bf16", log_every=1, checkpoint_every=3, tensorboard=False)
    torch.manual_seed(0)
    method = DtypeSpy()
    before = {k: v.clone() for k, v in method.state_dict().items()}
    outcome = Trainer(method, ToyViews(), cfg, tmp_path, seed=0).fit()
    assert method.seen_dtype == torch.bfloat16
    assert method.encoder.fc.weight.dtype == torch.float32  # master weights stay fp32
    assert torch.isfinite(torch.tensor(outcome.final_loss))
    assert not torch.equal(before["encoder.fc.weight"], method.state_dict()["encoder.fc.weight"])


def test_fp16_needs_a_gpu():
    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
        PrecisionPolicy("fp16", torch.device("cpu"))
    assert PrecisionPolicy("fp32", torch.device("cpu")).scaler is None
