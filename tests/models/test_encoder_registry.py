"""Every registry encoder builds in 2D and 3D at tiny size and keeps the Encoder contract."""

from __future__ import annotations

import time

import pytest
import torch

from models_tiny_configs import EXPECTED, SIZE, TINY_ARGS, encoder_params
from medssl.errors import ConfigError
from medssl.models import build_encoder, encoder_from_config, list_encoders


def test_registry_lists_every_family():
    # nnunet builds from an nnU-Net plans file (optional package): tests/models/test_nnunet.py
    assert set(TINY_ARGS) | {"nnunet"} == set(list_encoders())


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("name", encoder_params())
def test_encoder_shapes_and_config_round_trip(name, spatial_dims):
    torch.manual_seed(0)
    encoder = build_encoder(name, spatial_dims=spatial_dims, in_channels=2, **TINY_ARGS[name])
    x = torch.randn(2, 2, *(SIZE,) * spatial_dims)
    pooled = encoder(x)
    features = encoder.forward_features(x)
    width, strides = EXPECTED[name]
    assert pooled.shape == (2, width) == (2, encoder.feature_dim)
    assert [f.shape[1] for f in features] == encoder.feature_channels
    assert [SIZE // f.shape[-1] for f in features] == strides
    assert all(f.ndim == spatial_dims + 2 for f in features)
    assert encoder.spatial_dims == spatial_dims and encoder.in_channels == 2
    if name != "vit":  # ViT pools its token sequence, the others their deepest map
        assert torch.allclose(pooled, features[-1].flatten(2).mean(2), atol=1e-6)

    rebuilt = encoder_from_config(encoder.config)
    rebuilt.load_state_dict(encoder.state_dict())  # same architecture, same names
    encoder.eval(), rebuilt.eval()
    assert torch.allclose(rebuilt(x), encoder(x), atol=1e-6)
    assert rebuilt.config == encoder.config


def test_config_survives_yaml_and_pydantic_section():
    import yaml

    from medssl.config import EncoderConfig

    encoder = build_encoder("segresnet", spatial_dims=2, init_filters=8, blocks_down=(1, 1))
    through_yaml = yaml.safe_load(yaml.safe_dump(encoder.config))
    assert through_yaml == encoder.config
    section = EncoderConfig(**through_yaml)
    assert encoder_from_config(section).config == encoder.config


def test_unknown_encoder_and_argument_are_config_errors():
    with pytest.raises(ConfigError, match="available"):
        build_encoder("resnet11")
    with pytest.raises(ConfigError, match="init_filter"):
        build_encoder("segresnet", init_filter=8)
    with pytest.raises(ConfigError, match="widths"):
        build_encoder("resnet10", widths=(8, 8))
    with pytest.raises(ConfigError, match="spatial_dims"):
        build_encoder("resnet10_tiny", spatial_dims=4)


def test_wrong_input_shape_is_explained():
    encoder = build_encoder("resnet10_tiny", spatial_dims=3)
    with pytest.raises(ValueError, match="3 spatial dims"):
        encoder(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match="input channel"):
        encoder(torch.randn(2, 3, 16, 16, 16))


def test_tiny_encoder_is_fast_enough_for_cpu_demos():
    """The demo encoder: forward + backward of 8 patches of 32^3 well under 0.5 s on one core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        encoder = build_encoder("resnet10_tiny", spatial_dims=3)
        x = torch.randn(8, 1, 32, 32, 32)
        timings = []
        for _ in range(3):
            start = time.perf_counter()
            encoder(x).pow(2).mean().backward()
            timings.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    assert min(timings) < 0.5, f"resnet10_tiny took {min(timings):.3f} s"
