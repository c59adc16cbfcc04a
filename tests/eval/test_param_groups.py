"""Encoder stages, freezing and layer-wise learning-rate decay on small hand-made networks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medssl.config import OptimizerConfig
from medssl.engine.optim import build_optimizer
from medssl.eval.param_groups import (
    FrozenNormEval,
    encoder_stages,
    freeze_parameters,
    layerwise_parameter_groups,
)


class ToyEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv3d(1, 4, 3)
        self.bn1 = nn.BatchNorm3d(4)
        self.layer1 = nn.Sequential(nn.Conv3d(4, 4, 3), nn.BatchNorm3d(4))
        self.layer2 = nn.Sequential(nn.Conv3d(4, 4, 3))
        self.blocks = nn.ModuleList([nn.Sequential(nn.Conv3d(4, 4, 1)) for _ in range(2)])


class ToyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = ToyEncoder()
        self.decoder = nn.Conv3d(4, 2, 1)


def _encoder_names(net):
    return [n for n, _ in net.named_parameters() if n.startswith("encoder.")]


def test_stages_follow_forward_order_with_stem_merged_and_lists_split():
    net = ToyNet()
    stages = encoder_stages(net, _encoder_names(net))
    assert [s.name for s in stages] == ["conv1+bn1+layer1", "layer2", "blocks.0", "blocks.1"]
    assert stages[0].parameter_names[:2] == ["encoder.conv1.weight", "encoder.conv1.bias"]
    assert sum(len(s.parameter_names) for s in stages) == len(_encoder_names(net))


def test_unknown_names_are_refused():
    net = ToyNet()
    with pytest.raises(ValueError, match="not in the network"):
        encoder_stages(net, ["encoder.nope.weight"])


def test_freeze_encoder_and_partial():
    net = ToyNet()
    stages = encoder_stages(net, _encoder_names(net))
    frozen = freeze_parameters(net, stages, "encoder")
    assert set(frozen) == set(_encoder_names(net))
    assert all(p.requires_grad for n, p in net.named_parameters() if n.startswith("decoder."))

    net = ToyNet()
    stages = encoder_stages(net, _encoder_names(net))
    frozen = freeze_parameters(net, stages, "partial")  # default: half of 4 stages
    assert set(frozen) == set(stages[0].parameter_names + stages[1].parameter_names)
    net = ToyNet()
    stages = encoder_stages(net, _encoder_names(net))
    assert len(freeze_parameters(net, stages, "partial", frozen_stages=1)) == len(stages[0].parameter_names)
    with pytest.raises(ValueError, match="stages"):
        freeze_parameters(net, stages, "partial", frozen_stages=9)


def test_frozen_batchnorm_stays_in_eval_mode_and_keeps_statistics():
    net = ToyNet()
    stages = encoder_stages(net, _encoder_names(net))
    frozen = freeze_parameters(net, stages, "encoder")
    keeper = FrozenNormEval(net, frozen)
    assert len(keeper.modules) == 2
    before = net.encoder.bn1.running_mean.clone()
    net.train()
    keeper.apply()
    net.encoder.bn1(torch.randn(2, 4, 3, 3, 3) + 5)
    assert torch.equal(net.encoder.bn1.running_mean, before)


def test_layer_decay_scales_and_optimizer_learning_rates():
    net = ToyNet()
    stages = encoder_stages(net, _encoder_names(net))
    groups = layerwise_parameter_groups(net, stages, decay=0.5, weight_decay=0.01)
    scale_of = {name: g["lr_scale"] for g in groups for name in g["names"]}
    assert scale_of["encoder.conv1.weight"] == 0.5**4
    assert scale_of["encoder.layer2.0.weight"] == 0.5**3
    assert scale_of["encoder.blocks.1.0.weight"] == 0.5
    assert scale_of["decoder.weight"] == 1.0
    no_decay = {name for g in groups if g["weight_decay"] == 0.0 for name in g["names"]}
    assert "encoder.bn1.weight" in no_decay and "decoder.bias" in no_decay and "decoder.weight" not in no_decay
    optimizer = build_optimizer(groups, OptimizerConfig(name="adamw", lr=1e-2))
    lrs = {name: g["lr"] for g in optimizer.param_groups for name in g["names"]}
    assert lrs["encoder.conv1.weight"] == pytest.approx(1e-2 * 0.5**4)
    assert lrs["decoder.weight"] == pytest.approx(1e-2)


def test_frozen_tensors_are_left_out_of_the_groups():
    net = ToyNet()
    stages = encoder_stages(net, _encoder_names(net))
    freeze_parameters(net, stages, "encoder")
    groups = layerwise_parameter_groups(net, stages, decay=None, weight_decay=0.0)
    names = {n for g in groups for n in g["names"]}
    assert names == {"decoder.weight", "decoder.bias"}
