"""The 3D ResNet stem pads explicitly: its weight gradient is exact on the 5-7 voxel inputs where
torch 2.13's oneDNN CPU kernel reads uninitialised memory (medssl.models.explicit_padding)."""

from __future__ import annotations

import pytest
import torch

from medssl.models import build_encoder
from medssl.models.explicit_padding import ExplicitPaddingConv3d


@pytest.mark.parametrize("size", [6, 7])
def test_stem_weight_gradient_is_the_same_every_time_on_tiny_tiles(size):
    torch.manual_seed(0)
    encoder = build_encoder("resnet10_tiny", spatial_dims=3)
    stem = encoder.encoder.conv1
    assert isinstance(stem, ExplicitPaddingConv3d)
    x = torch.rand(16, 1, size, size, size)
    gradients = []
    for _ in range(20):  # with the bug, most runs of 20 calls saw a NaN or a ~1e35 entry
        stem.weight.grad = None
        stem(x).square().sum().backward()
        gradients.append(stem.weight.grad.clone())
    assert all(torch.isfinite(g).all() for g in gradients)
    assert all(torch.equal(g, gradients[0]) for g in gradients)
    with torch.backends.mkldnn.flags(enabled=False):  # the reference path, exact but slower
        stem.weight.grad = None
        torch.nn.functional.conv3d(x, stem.weight, None, 2, 3).square().sum().backward()
    torch.testing.assert_close(gradients[0], stem.weight.grad, rtol=1e-4, atol=1e-3)


def test_the_stem_keeps_its_parameter_names_and_output():
    encoder = build_encoder("resnet10_tiny", spatial_dims=3)
    assert "encoder.conv1.weight" in encoder.state_dict()
    plain = torch.nn.Conv3d(1, 16, 7, stride=2, padding=3, bias=False)
    plain.weight = encoder.encoder.conv1.weight
    x = torch.rand(2, 1, 32, 32, 32)
    torch.testing.assert_close(encoder.encoder.conv1(x), plain(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="zero padding"):
        ExplicitPaddingConv3d.replacing(torch.nn.Conv3d(1, 1, 3, padding="same"))
