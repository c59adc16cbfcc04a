"""Modality presets: each builds, augments within [0, 1], deterministically, batched == looped;
overrides are applied or refused with a clear error."""

from __future__ import annotations

import json

import pytest
import torch

from medssl.errors import ConfigError
from medssl.transforms import build_preset, list_presets
from medssl.transforms.intensity_ct import HUGaussianNoise, RandomWindow
from medssl.transforms.presets import AugmentationPreset, preset_arguments
from medssl.transforms.spatial import SpatialAugmentation

DEFAULT_DIMS = {"ct": 3, "mr": 3, "xr": 2, "us": 2, "none": 3}


def _batch(dims: int, batch: int = 4, seed: int = 0) -> torch.Tensor:
    spatial = (16, 16, 12) if dims == 3 else (24, 20)
    return torch.rand((batch, 1) + spatial, generator=torch.Generator().manual_seed(seed))


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_the_documented_presets_exist():
    assert list_presets() == ["ct", "mr", "none", "us", "xr"]


@pytest.mark.parametrize("name", sorted(DEFAULT_DIMS))
@pytest.mark.parametrize("dims", [2, 3])
def test_preset_augments_within_range_deterministically(name, dims):
    preset = build_preset(name, spatial_dims=dims)
    assert isinstance(preset, AugmentationPreset) and isinstance(preset.spatial, SpatialAugmentation)
    assert preset.name == name and preset.spatial_dims == dims
    x = _batch(dims)
    y = preset.apply_intensity(x, _gen(1))
    assert y.shape == x.shape and y.dtype == x.dtype
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    torch.testing.assert_close(preset.apply_intensity(x, _gen(1)), y, rtol=0, atol=0)
    if name == "none":
        assert torch.equal(y, x)
    else:
        assert not torch.allclose(y, x)


@pytest.mark.parametrize("name", ["ct", "mr", "xr", "us"])
def test_preset_batched_equals_per_sample_loop(name):
    dims = DEFAULT_DIMS[name]
    preset = build_preset(name)
    x = _batch(dims, batch=4, seed=2)
    batched = preset.apply_intensity(x, _gen(3))
    g = _gen(3)
    looped = torch.cat([preset.apply_intensity(x[i : i + 1], g) for i in range(4)])
    torch.testing.assert_close(batched, looped, rtol=1e-5, atol=1e-5)


def test_default_spatial_dims_per_modality():
    for name, dims in DEFAULT_DIMS.items():
        assert build_preset(name).spatial_dims == dims


def test_ct_preset_orders_physics_then_display_and_uses_ct_window():
    preset = build_preset("ct", ct_window=(-200.0, 300.0), noise_std_hu=(5.0, 10.0), window_prob=1.0)
    kinds = [type(t).__name__ for t in preset.intensity]
    assert kinds.index("HUGaussianNoise") < kinds.index("RandomWindow")
    noise = next(t for t in preset.intensity if isinstance(t, HUGaussianNoise))
    window = next(t for t in preset.intensity if isinstance(t, RandomWindow))
    assert noise.std == pytest.approx((5.0 / 500.0, 10.0 / 500.0))
    assert (window.scale.low, window.scale.high) == (-200.0, 300.0)
    assert window.prob == 1.0


def test_overrides_spatial_intensity_and_clip():
    preset = build_preset(
        "mr",
        spatial={"flip_prob": [0.5, 0.5, 0.5], "elastic_prob": 0.0},
        intensity=[{"name": "gamma", "prob": 1.0, "gamma": [2.0, 2.0]}],
        clip=None,
    )
    assert preset.spatial.flip_prob == (0.5, 0.5, 0.5) and preset.spatial.elastic_prob == 0.0
    assert preset.spatial.rotate_range_deg == build_preset("mr").spatial.rotate_range_deg  # others kept
    assert [type(t).__name__ for t in preset.intensity] == ["Gamma"] and preset.clip is None
    whole = SpatialAugmentation.identity()
    assert build_preset("ct", spatial=whole).spatial is whole


@pytest.mark.parametrize(
    "name, overrides, match",
    [
        ("ct", {"noise_sigma": 3}, "does not take noise_sigma"),
        ("ct", {"spatial": {"flip": 0.5}}, "unknown fields"),
        ("ct", {"spatial_dims": 4}, "2 or 3"),
        ("mr", {"intensity": [{"prob": 0.5}]}, "'name' key"),
        ("mr", {"intensity": [{"name": "sparkle"}]}, "unknown intensity transform"),
        ("pet", {}, "unknown augmentation preset"),
        ("ct", {"noise_std_hu": (30.0, 10.0)}, "low > high"),
    ],
)
def test_bad_overrides_raise_config_errors(name, overrides, match):
    with pytest.raises(ConfigError, match=match):
        build_preset(name, **overrides)


def test_preset_arguments_and_describe_are_json_friendly():
    assert "noise_std_hu" in preset_arguments("ct") and preset_arguments("ct")["window_prob"] == 0.8
    for name in list_presets():
        json.dumps(build_preset(name).describe())


def test_apply_intensity_refuses_an_unbatched_view():
    with pytest.raises(ValueError, match="batch"):
        build_preset("xr").apply_intensity(torch.rand(1, 16, 16), _gen(0))
