"""LARS against a hand computation, the warm-up/cosine schedule, and optimiser construction."""

import math

import numpy as np
import pytest
import torch

from medssl.config import OptimizerConfig
from medssl.engine.lars import LARS
from medssl.engine.optim import build_optimizer, default_parameter_groups, peak_learning_rate
from medssl.engine.schedules import WarmupCosineFactor, build_scheduler
from medssl.errors import ConfigError


def lars_by_hand(w, grads, lr, momentum, wd, eta, exclude):
    """Two-or-more steps of LARS written independently in NumPy (You et al. 2017, Barlow Twins form)."""
    w = np.array(w, dtype=np.float64)
    v = np.zeros_like(w)
    for g in grads:
        d = np.asarray(g, dtype=np.float64) + wd * w
        if not exclude:
            wn, dn = np.linalg.norm(w), np.linalg.norm(d)
            d = d * (eta * wn / dn if wn > 0 and dn > 0 else 1.0)
        v = momentum * v + d
        w = w - lr * v
    return w


def run_lars(w0, grads, **group):
    w = torch.nn.Parameter(torch.tensor(w0, dtype=torch.float64))
    opt = LARS([{"params": [w], **group}], lr=0.4, momentum=0.9, eta=0.02)
    for g in grads:
        w.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    return w.detach().numpy()


def test_lars_matches_hand_computation():
    w0 = [0.5, -1.0, 2.0, 0.25]
    grads = [[0.1, 0.3, -0.2, 0.05], [-0.4, 0.2, 0.1, 0.0], [0.3, -0.1, 0.2, 0.6]]
    got = run_lars(w0, grads, weight_decay=0.01)
    want = lars_by_hand(w0, grads, lr=0.4, momentum=0.9, wd=0.01, eta=0.02, exclude=False)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    # first step: the update norm is exactly lr * eta * ||w|| whatever the gradient's scale
    one = run_lars(w0, [[100 * g for g in grads[0]]], weight_decay=0.0)
    assert np.linalg.norm(one - np.array(w0)) == pytest.approx(0.4 * 0.02 * np.linalg.norm(w0))


def test_lars_exclusion_is_plain_sgd_with_momentum():
    w0 = [0.5, -1.0]
    grads = [[0.1, 0.3], [-0.4, 0.2]]
    got = run_lars(w0, grads, weight_decay=0.0, lars_exclude=True)
    want = lars_by_hand(w0, grads, lr=0.4, momentum=0.9, wd=0.0, eta=0.02, exclude=True)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    sgd_w = torch.nn.Parameter(torch.tensor(w0, dtype=torch.float64))
    sgd = torch.optim.SGD([sgd_w], lr=0.4, momentum=0.9)
    for g in grads:
        sgd_w.grad = torch.tensor(g, dtype=torch.float64)
        sgd.step()
    np.testing.assert_allclose(got, sgd_w.detach().numpy(), rtol=1e-12)


def test_lars_zero_weights_fall_back_to_trust_one():
    got = run_lars([0.0, 0.0], [[1.0, -2.0]], weight_decay=0.0)
    np.testing.assert_allclose(got, [-0.4, 0.8])


def test_schedule_values():
    f = WarmupCosineFactor(total_steps=12, warmup_steps=3, min_lr_ratio=0.1)
    assert [f(s) for s in range(3)] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert f(3) == pytest.approx(1.0)  # first step after warm-up at the peak
    assert f(11) == pytest.approx(0.1)  # last step at min_lr_ratio
    mid = 3 + (11 - 3) / 2
    assert f(7) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (7 - 3) / 8)))
    assert f(mid) == pytest.approx(0.55)
    values = [f(s) for s in range(3, 12)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert WarmupCosineFactor(10, 2, schedule="constant")(9) == 1.0
    with pytest.raises(ConfigError):
        WarmupCosineFactor(0)


def test_scheduler_drives_optimizer_lr_per_step_and_resumes():
    w = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([w], lr=0.2)
    sched = build_scheduler(opt, total_steps=6, warmup_steps=2)
    seen = []
    for _ in range(6):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    f = WarmupCosineFactor(6, 2)
    assert seen == pytest.approx([0.2 * f(s) for s in range(6)])
    # resume as the trainer does (optimiser then scheduler state): the next rate follows the schedule
    w2 = torch.nn.Parameter(torch.ones(2))
    opt2 = torch.optim.SGD([w2], lr=0.2)
    sched2 = build_scheduler(opt2, total_steps=6, warmup_steps=2)
    opt_mid = torch.optim.SGD([torch.nn.Parameter(torch.ones(2))], lr=0.2)
    sched_mid = build_scheduler(opt_mid, total_steps=6, warmup_steps=2)
    for _ in range(3):
        opt_mid.step()
        sched_mid.step()
    opt2.load_state_dict(opt_mid.state_dict())
    sched2.load_state_dict(sched_mid.state_dict())
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.2 * f(3))
    opt2.step()
    sched2.step()
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.2 * f(4))


def test_build_optimizer_groups_and_kinds():
    model = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3), torch.nn.BatchNorm3d(2), torch.nn.Linear(2, 2))
    groups = default_parameter_groups(model, 0.05)
    assert [len(g["params"]) for g in groups] == [2, 4]
    assert groups[1]["weight_decay"] == 0.0 and groups[1]["lars_exclude"]
    for name, kind in [("sgd", torch.optim.SGD), ("adamw", torch.optim.AdamW), ("lars", LARS)]:
        opt = build_optimizer(model, OptimizerConfig(name=name, lr=0.1, weight_decay=0.05))
        assert isinstance(opt, kind)
        assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]
    assert build_optimizer(model, OptimizerConfig(name="adamw")).defaults["fused"]  # one kernel per step
    assert not build_optimizer(model.double(), OptimizerConfig(name="adamw")).defaults.get("fused")
    model.float()
    model[0].weight.requires_grad_(False)  # frozen tensors are left out
    opt = build_optimizer(model, OptimizerConfig(name="sgd"))
    assert sum(len(g["params"]) for g in opt.param_groups) == 5


def test_lr_scaling_and_group_scale():
    cfg = OptimizerConfig(name="lars", lr=0.3, lr_scaling="linear", reference_batch_size=256)
    assert peak_learning_rate(cfg, 512) == pytest.approx(0.6)
    assert peak_learning_rate(cfg.model_copy(update={"lr_scaling": "sqrt"}), 1024) == pytest.approx(0.6)
    assert peak_learning_rate(cfg.model_copy(update={"lr_scaling": "none"}), 1024) == pytest.approx(0.3)
    a, b = torch.nn.Parameter(torch.ones(2, 2)), torch.nn.Parameter(torch.ones(2, 2))
    opt = build_optimizer([{"params": [a]}, {"params": [b], "lr_scale": 0.5}], cfg, batch_size=512)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.6, 0.3])
    with pytest.raises(ConfigError, match="no trainable"):
        build_optimizer([{"params": [torch.nn.Parameter(torch.ones(1), requires_grad=False)]}], cfg)
