"""SSL heads (projection, prediction, DINO, prototypes) and the light restoration decoder."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medssl.errors import ConfigError
from medssl.models import DINOHead, LightDecoder, PredictionHead, ProjectionHead, Prototypes, build_encoder


def _kinds(module: nn.Module) -> list[str]:
    return [type(m).__name__ for m in module]


def test_projection_head_layouts_of_the_papers():
    simclr = ProjectionHead(16, 16, 8, num_layers=2)
    assert _kinds(simclr) == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert simclr[0].bias is None and simclr[3].bias is not None  # BN replaces the hidden bias
    barlow = ProjectionHead(16, 32, 32, num_layers=3, last_bias=False)
    assert _kinds(barlow) == ["Linear", "BatchNorm1d", "ReLU"] * 2 + ["Linear"] and barlow[-1].bias is None
    simsiam = ProjectionHead(16, 32, 32, num_layers=3, last_batch_norm=True, last_batch_norm_affine=False)
    assert _kinds(simsiam)[-2:] == ["Linear", "BatchNorm1d"] and simsiam[-1].weight is None
    moco = ProjectionHead(16, 16, 8, num_layers=2, batch_norm=False)
    assert _kinds(moco) == ["Linear", "ReLU", "Linear"] and moco[0].bias is not None
    assert simclr(torch.randn(4, 16)).shape == (4, 8)
    with pytest.raises(ConfigError):
        ProjectionHead(16, 16, 8, num_layers=0)


def test_prediction_head_shape():
    head = PredictionHead(8, 32, 8)
    assert _kinds(head) == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert head(torch.randn(4, 8)).shape == (4, 8)


def test_dino_head_normalised_last_layer_gives_cosines_and_can_freeze():
    head = DINOHead(12, out_dim=20, hidden_dim=16, bottleneck_dim=8)
    with torch.no_grad():  # unnormalised direction weights: the output must not care
        head.last_layer.parametrizations.weight.original1.mul_(7.0)
    out = head(torch.randn(5, 12))
    assert out.shape == (5, 20) and out.abs().max() <= 1.0 + 1e-5
    magnitude = head.last_layer.parametrizations.weight.original0
    assert not magnitude.requires_grad and torch.all(magnitude == 1)
    direction = head.last_layer.parametrizations.weight.original1
    head(torch.randn(5, 12), freeze_last_layer=True).sum().backward()
    assert direction.grad is not None and torch.count_nonzero(direction.grad) == 0
    assert head.mlp[0].weight.grad.abs().sum() > 0
    free = DINOHead(12, out_dim=20, hidden_dim=16, bottleneck_dim=8, norm_last_layer=False)
    assert free.last_layer.parametrizations.weight.original0.requires_grad


def test_prototypes_are_normalised_and_freezable():
    prototypes = Prototypes(dim=4, num_prototypes=6)
    prototypes.normalize_()
    assert torch.allclose(prototypes.layer.weight.norm(dim=1), torch.ones(6))
    z = torch.nn.functional.normalize(torch.randn(3, 4), dim=1)
    scores = prototypes(z, frozen=True)
    assert scores.abs().max() <= 1 + 1e-6
    scores.sum().backward()
    assert torch.count_nonzero(prototypes.layer.weight.grad) == 0


@pytest.mark.parametrize("name,args", [("resnet10_tiny", {}), ("segresnet", {"init_filters": 8, "blocks_down": (1, 1)})])
def test_light_decoder_restores_the_input_size_from_any_encoder(name, args):
    encoder = build_encoder(name, spatial_dims=3, in_channels=2, **args)
    decoder = LightDecoder(3, encoder.feature_channels, out_channels=2, width=8)
    x = torch.randn(2, 2, 16, 16, 16)
    out = decoder(encoder.forward_features(x), output_size=x.shape[2:])
    assert out.shape == x.shape
    out.mean().backward()
    assert all(p.grad is not None for p in encoder.parameters() if p.requires_grad)
    with pytest.raises(ValueError, match="feature maps"):
        decoder(encoder.forward_features(x)[1:], output_size=x.shape[2:])
