"""Channels-last 3D networks (``medssl.utils.memory_format``): same outputs and gradients, NDHWC layout."""

from __future__ import annotations

import torch
from torch import nn

from medssl.models import build_encoder, build_segmentation_network
from medssl.utils.memory_format import use_channels_last, wants_channels_last


def twin_networks():
    torch.manual_seed(0)
    encoder = build_encoder("resnet10", spatial_dims=3, widths=(4, 8, 8, 16))
    a = build_segmentation_network(encoder.config, out_channels=3)
    b = build_segmentation_network(encoder.config, out_channels=3)
    b.load_state_dict(a.state_dict())
    return a, b


def test_channels_last_network_gives_the_same_outputs_and_gradients():
    reference, fast = twin_networks()
    handles = use_channels_last(fast)
    assert len(handles) == sum(isinstance(m, nn.Conv3d) for m in fast.modules()) > 0
    x = torch.rand(2, 1, 32, 32, 32)
    out_ref, out_fast = reference(x), fast(x)
    assert out_fast.is_contiguous(memory_format=torch.channels_last_3d)
    assert torch.allclose(out_ref, out_fast, atol=1e-4)
    out_ref.square().mean().backward()
    out_fast.square().mean().backward()
    for (name, p), q in zip(reference.named_parameters(), fast.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-4, rtol=1e-3), name
    handles.remove()
    assert len(handles) == 0
    assert torch.allclose(fast(x), out_ref, atol=1e-4)  # still correct without the hooks


def test_channels_last_reaches_encoders_called_through_other_methods():
    encoder = build_encoder("resnet10", spatial_dims=3, widths=(4, 8, 8, 16))
    use_channels_last(encoder)
    features = encoder.forward_features(torch.rand(2, 1, 16, 16, 16))  # not encoder.__call__
    assert features[-1].is_contiguous(memory_format=torch.channels_last_3d)


def test_only_3d_cpu_networks_ask_for_it():
    assert wants_channels_last(True, "cpu", 3)
    assert not wants_channels_last(False, "cpu", 3)
    assert not wants_channels_last(True, "cpu", 2)
    assert not wants_channels_last(True, torch.device("cuda", 0), 3)
    net2d = nn.Conv2d(2, 4, 3)
    use_channels_last(net2d)  # 2D weights and inputs are left alone
    assert net2d.weight.is_contiguous() and net2d(torch.rand(2, 2, 8, 8)).is_contiguous()
