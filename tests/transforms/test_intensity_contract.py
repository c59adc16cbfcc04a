"""The batched intensity-transform contract, checked for every registered transform in 2D and 3D:
shapes and dtypes kept, determinism under a seed, a batched call equal to a loop of single-sample
calls sharing the generator, ``prob`` honoured per sample, clear errors on bad input."""

from __future__ import annotations

import pytest
import torch

from medssl.errors import ConfigError
from medssl.transforms.intensity import INTENSITY_TRANSFORMS, build_intensity_transform, list_intensity_transforms

NAMES = list_intensity_transforms()


def _image(batch: int, spatial: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((batch, 1) + spatial, generator=g) * 0.6 + 0.2  # inside (0, 1), not constant
    return x


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


SHAPES = {3: (12, 10, 8), 2: (16, 14)}


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("name", NAMES)
def test_shape_dtype_and_change(name, dims):
    t = build_intensity_transform(name, prob=1.0)
    x = _image(3, SHAPES[dims])
    y = t(x, _gen(0))
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.isfinite(y).all()
    assert not torch.allclose(y, x), f"{name} with prob=1 left the batch unchanged"


@pytest.mark.parametrize("name", NAMES)
def test_float64_input_keeps_dtype(name):
    t = build_intensity_transform(name, prob=1.0)
    x = _image(2, SHAPES[3]).double()
    assert t(x, _gen(0)).dtype == torch.float64


@pytest.mark.parametrize("name", NAMES)
def test_determinism_under_seed(name):
    t = build_intensity_transform(name, prob=1.0)
    x = _image(2, SHAPES[3])
    a, b, c = t(x, _gen(5)), t(x, _gen(5)), t(x, _gen(6))
    assert torch.equal(a, b)
    if not t.sample(_gen(0), tuple(x.shape[1:])):  # parameter-free (inversion): one map whatever the seed
        assert torch.equal(a, c)
        return
    assert not torch.equal(a, c), f"{name}: two seeds gave the same output"


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("name", NAMES)
def test_batched_equals_per_sample_loop(name, dims):
    t = build_intensity_transform(name, prob=0.6)
    x = _image(5, SHAPES[dims], seed=1)
    batched = t(x, _gen(11))
    g = _gen(11)
    looped = torch.cat([t(x[i : i + 1], g) for i in range(x.shape[0])])
    torch.testing.assert_close(batched, looped, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_prob_selects_samples(name):
    t = build_intensity_transform(name, prob=0.5)
    x = _image(16, SHAPES[2], seed=2)
    flags, _ = t.draw(_gen(3), x.shape[0], tuple(x.shape[1:]))
    y = t(x, _gen(3))
    assert 0 < int(flags.sum()) < 16  # this seed gives a mix
    for i in range(x.shape[0]):
        same = torch.equal(y[i], x[i])
        assert same != bool(flags[i]), f"{name}: sample {i} flag {bool(flags[i])} but unchanged={same}"


@pytest.mark.parametrize("name", NAMES)
def test_prob_zero_is_identity_and_draws_nothing(name):
    t = build_intensity_transform(name, prob=0.0)
    x = _image(2, SHAPES[3])
    g = _gen(0)
    state = g.get_state()
    assert t(x, g) is x
    assert torch.equal(g.get_state(), state)


def test_bad_inputs_raise_clear_errors():
    t = build_intensity_transform("gamma", prob=1.0)
    with pytest.raises(ValueError, match="batch"):
        t(torch.rand(1, 8, 8), _gen(0))  # an unbatched 2D image (C, X, Y)
    with pytest.raises(ValueError, match="batch"):
        t(torch.rand(1, 1, 4, 4, 4, 4), _gen(0))
    with pytest.raises(TypeError, match="floating"):
        t(torch.ones(1, 1, 4, 4, dtype=torch.int64), _gen(0))
    with pytest.raises(ValueError, match="CPU torch.Generator"):
        t(torch.rand(1, 1, 4, 4), None)


@pytest.mark.parametrize(
    "name, args, match",
    [
        ("gamma", {"gamma": (2.0, 1.0)}, "low > high"),
        ("gamma", {"gamma": (0.0, 1.0)}, "> 0"),
        ("gamma", {"prob": 1.5}, "probability"),
        ("blur", {"padding_mode": "mirror"}, "padding_mode"),
        ("gibbs", {"alpha": (0.2, 1.5)}, "<= 1"),
        ("window", {"windows": ["kidney_stone"]}, "unknown window"),
        ("window", {"ct_window": (100, -100)}, "low < high"),
        ("resolution_loss", {"factor": (0.5, 2.0)}, ">= 1"),
        ("ghosting", {"axes": (4,)}, "spatial axes"),
        ("speckle", {"distribution": "poisson"}, "rayleigh or gamma"),
        ("gamma", {"sigma": 1.0}, "does not take sigma"),
        ("not_a_transform", {}, "unknown intensity transform"),
    ],
)
def test_bad_arguments_raise_config_errors(name, args, match):
    with pytest.raises(ConfigError, match=match):
        build_intensity_transform(name, **args)


def test_registry_names_map_to_classes():
    assert set(NAMES) == set(INTENSITY_TRANSFORMS)
    for name in NAMES:
        t = build_intensity_transform(name)
        assert isinstance(t, INTENSITY_TRANSFORMS[name])
        assert t.describe()["name"] == type(t).__name__


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", NAMES)
def test_cuda_matches_cpu_for_the_same_seed(name):
    t = build_intensity_transform(name, prob=0.7)
    x = _image(4, SHAPES[3], seed=4)
    cpu = t(x, _gen(9))
    gpu = t(x.cuda(), _gen(9)).cpu()
    torch.testing.assert_close(gpu, cpu, rtol=1e-4, atol=1e-4)
