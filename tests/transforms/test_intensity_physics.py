"""Each intensity transform does what its docstring says: the artefact, its units, its statistics."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from monai.networks.layers.convutils import gaussian_1d

from medssl.transforms.intensity_bias_field import BiasField, bias_field_terms
from medssl.transforms.intensity_contrast import Contrast, Gamma
from medssl.transforms.intensity_ct import TISSUE_WINDOWS, HounsfieldScale, HUGaussianNoise, RandomWindow
from medssl.transforms.intensity_filters import GaussianBlur, ResolutionLoss, blur_matrix
from medssl.transforms.intensity_kspace import Ghosting, GibbsRinging, KSpaceSpikes, Motion
from medssl.transforms.intensity_noise import (
    GaussianNoise,
    RicianNoise,
    bank_length_for,
    draw_field_parameters,
    noise_bank,
    standard_normal_field,
)
from medssl.transforms.intensity_speckle import Speckle


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# --- noise bank and noise ------------------------------------------------------------------


def test_noise_bank_is_fixed_and_standard_normal():
    bank = noise_bank(bank_length_for(1000))
    assert torch.equal(bank, noise_bank(bank_length_for(1000)))
    assert abs(float(bank.mean())) < 2e-3 and abs(float(bank.std()) - 1.0) < 2e-3


def test_bank_field_is_white_unit_gaussian():
    shape = (1, 32, 32, 32)
    params = draw_field_parameters(gen(1), math.prod(shape))
    field = standard_normal_field(shape, params["offsets"][0], float(params["angle"][0]))
    assert abs(float(field.mean())) < 0.01 and abs(float(field.std()) - 1.0) < 0.01
    neighbour = torch.corrcoef(torch.stack([field[..., :-1].flatten(), field[..., 1:].flatten()]))[0, 1]
    assert abs(float(neighbour)) < 0.02
    other = draw_field_parameters(gen(2), math.prod(shape))
    second = standard_normal_field(shape, other["offsets"][0], float(other["angle"][0]))
    assert abs(float(torch.corrcoef(torch.stack([field.flatten(), second.flatten()]))[0, 1])) < 0.02


def test_gaussian_noise_has_the_drawn_std():
    x = torch.full((4, 1, 24, 24, 24), 0.5)
    t = GaussianNoise(prob=1.0, std=(0.01, 0.1))
    _, params = t.draw(gen(3), 4, tuple(x.shape[1:]))
    y = t(x, gen(3))
    for b in range(4):
        assert abs(float((y[b] - x[b]).std()) / float(params["std"][b]) - 1.0) < 0.03


def test_hu_noise_speaks_hounsfield_units():
    x = torch.full((2, 1, 24, 24, 24), 0.5)
    for window in ((-1000.0, 1000.0), (-200.0, 300.0)):
        scale = HounsfieldScale.from_window(window)
        y = HUGaussianNoise(prob=1.0, std_hu=(20.0, 20.0), ct_window=window)(x, gen(4))
        std_hu = float((scale.to_hu(y) - scale.to_hu(x)).std())
        assert abs(std_hu - 20.0) < 0.6


def test_rician_noise_follows_its_formula_and_biases_dark_regions():
    x = torch.zeros(1, 1, 20, 20, 20)
    t = RicianNoise(prob=1.0, std=(0.05, 0.05))
    _, params = t.draw(gen(5), 1, tuple(x.shape[1:]))
    y = t.apply(x, **params)
    shape = tuple(x.shape[1:])
    n1 = standard_normal_field(shape, params["offsets"][0, 0], float(params["angle"][0, 0]))
    n2 = standard_normal_field(shape, params["offsets"][0, 1], float(params["angle"][0, 1]))
    torch.testing.assert_close(y[0], torch.hypot(0.05 * n1, 0.05 * n2))
    # on zero signal the Rician law is Rayleigh: mean sigma * sqrt(pi / 2)
    assert abs(float(y.mean()) - 0.05 * math.sqrt(math.pi / 2)) < 0.002


# --- CT windows ----------------------------------------------------------------------------


def test_hounsfield_scale_round_trip():
    scale = HounsfieldScale(-1000.0, 1000.0)
    assert scale.to_hu(0.0) == -1000.0 and scale.to_hu(1.0) == 1000.0
    assert scale.from_hu(scale.to_hu(0.37)) == pytest.approx(0.37)
    assert HounsfieldScale.from_window([-160, 240]).width == 400.0


def test_window_maps_level_to_half_and_clips():
    scale = HounsfieldScale(-1000.0, 1000.0)
    hu = torch.tensor([-1000.0, -160.0, 40.0, 240.0, 1000.0])
    x = scale.from_hu(hu).reshape(1, 1, 5, 1)
    y = RandomWindow(prob=1.0).apply(x, level=torch.tensor([40.0]), width=torch.tensor([400.0]))
    torch.testing.assert_close(y.flatten(), torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0]))


def test_random_window_draws_around_the_named_windows():
    t = RandomWindow(prob=1.0, windows=["lung"], level_jitter=(-0.1, 0.1), width_scale=(0.8, 1.25))
    _, params = t.draw(gen(6), 200, (1, 4, 4))
    level0, width0 = TISSUE_WINDOWS["lung"]
    assert ((params["level"] - level0).abs() <= 0.1 * width0 + 1e-6).all()
    assert ((params["width"] >= 0.8 * width0 - 1e-6) & (params["width"] <= 1.25 * width0 + 1e-6)).all()


# --- blur and resolution ---------------------------------------------------------------------


def test_blur_preserves_mass_and_sigma_zero_is_identity():
    x = torch.zeros(2, 1, 15, 15, 15)
    x[:, 0, 7, 7, 7] = 1.0
    y = GaussianBlur(prob=1.0).apply(x, sigma=torch.tensor([[1.5] * 3, [0.0] * 3]))
    assert float(y[0].sum()) == pytest.approx(1.0, abs=1e-4)  # MONAI's erf kernel, truncated at 4 sigma
    torch.testing.assert_close(y[1], x[1])
    # variance of the blurred impulse along x is sigma^2 (plus the 1/12 of the erf kernel's bins)
    profile = y[0, 0].sum(dim=(1, 2))
    positions = torch.arange(15.0) - 7
    assert float((profile * positions**2).sum()) == pytest.approx(1.5**2 + 1 / 12, rel=0.02)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
@pytest.mark.parametrize("sigma", [2.0, 3.0])  # sigma 3: the kernel (25 taps) is longer than the axis
def test_blur_keeps_a_constant_image_with_non_zero_borders(mode, sigma):
    x = torch.full((1, 1, 10, 10, 6), 0.7)
    y = GaussianBlur(prob=1.0, padding_mode=mode).apply(x, sigma=torch.tensor([[sigma] * 3]))
    torch.testing.assert_close(y, x, atol=2e-4, rtol=0)


def test_blur_matrix_reflects_like_torch_pad():
    signal = torch.rand(7, dtype=torch.float64)
    matrix = blur_matrix(7, 0.8, padding_mode="reflect").double()
    kernel = gaussian_1d(torch.tensor(0.8), truncated=4.0).double()
    tail = (len(kernel) - 1) // 2
    padded = F.pad(signal[None, None], (tail, tail), mode="reflect")[0, 0]
    expected = torch.stack([(padded[i : i + len(kernel)] * kernel).sum() for i in range(7)])
    torch.testing.assert_close(matrix @ signal, expected, atol=1e-6, rtol=0)


def test_resolution_loss_one_axis_touches_only_that_axis():
    ramp = torch.linspace(0, 1, 16) ** 2
    x = ramp.reshape(1, 1, 16, 1, 1).expand(1, 1, 16, 16, 16).contiguous()  # varies along axis 0 only
    t = ResolutionLoss(prob=1.0)
    unchanged = t.apply(x, factor=torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64))
    torch.testing.assert_close(unchanged, x)
    degraded = t.apply(x, factor=torch.tensor([[2.0, 1.0, 1.0]], dtype=torch.float64))
    assert not torch.allclose(degraded, x)
    expected = F.interpolate(F.interpolate(x, size=(8, 16, 16), mode="area"), size=(16, 16, 16), mode="trilinear")
    torch.testing.assert_close(degraded, expected)


def test_resolution_loss_one_axis_mode_draws_one_axis():
    t = ResolutionLoss(prob=1.0, mode="one_axis", factor=(2.0, 3.0))
    _, params = t.draw(gen(7), 50, (1, 8, 8, 8))
    degraded_axes = (params["factor"] > 1.0).sum(dim=1)
    assert (degraded_axes == 1).all()
    assert len(set(params["factor"].argmax(dim=1).tolist())) == 3


# --- MR -------------------------------------------------------------------------------------


def test_bias_field_constant_term_scales_uniformly_and_field_is_smooth():
    t = BiasField(prob=1.0, degree=3)
    x = torch.full((1, 1, 16, 16, 16), 0.5)
    coefficients = torch.zeros(1, len(bias_field_terms(3, 3)))
    coefficients[0, 0] = math.log(1.2)
    torch.testing.assert_close(t.apply(x, coefficients=coefficients), x * 1.2)
    _, params = t.draw(gen(8), 1, (1, 32, 32, 32))
    field = t.log_field(params["coefficients"], (32, 32, 32))[0]
    step = (field[1:] - field[:-1]).abs().max()
    assert float(step) < 0.1 * float(field.max() - field.min() + 1e-6) + 0.05  # smooth: small steps


def test_gibbs_rings_at_a_sharp_edge():
    x = torch.zeros(1, 1, 32, 32, 32)
    x[:, :, 8:24, 8:24, 8:24] = 0.8
    y = GibbsRinging(prob=1.0).apply(x, alpha=torch.tensor([0.6]))
    assert float(y.max()) > 0.84  # overshoot next to the edge
    assert float(y.min()) < -0.02  # undershoot outside it
    assert float(y.mean()) == pytest.approx(float(x.mean()), abs=1e-5)  # the DC term is kept


def test_spikes_add_the_documented_stripe_pattern():
    x = torch.rand((1, 1, 12, 10, 9), generator=gen(9))
    frequencies = torch.tensor([[[3, -2, 1], [0, 5, 4]]])
    amplitude = torch.tensor([[0.1, 0.0]], dtype=torch.float64)
    phase = torch.tensor([[0.7, 1.0]], dtype=torch.float64)
    y = KSpaceSpikes(prob=1.0).apply(x, frequencies=frequencies, amplitude=amplitude, phase=phase)
    grids = torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in (12, 10, 9)], indexing="ij")
    theta = 2 * math.pi * (3 * grids[0] / 12 - 2 * grids[1] / 10 + grids[2] / 9) + 0.7
    torch.testing.assert_close(y[0, 0].double(), x[0, 0].double() + 0.1 * torch.cos(theta), atol=1e-5, rtol=0)


def test_ghosting_copies_the_object_at_n_over_k():
    x = torch.zeros(1, 1, 32, 16, 8)
    x[:, :, 2:6, 6:10, 2:6] = 1.0
    y = Ghosting(prob=1.0).apply(x, axis=torch.tensor([0]), period=torch.tensor([4]), depth=torch.tensor([0.8]))
    expected = x * (1 - 0.8 / 4)
    for j in (1, 2, 3):  # ghosts: the object shifted by multiples of 32 / 4 = 8 along axis 0, at s / k
        expected = expected + 0.8 / 4 * torch.roll(x, 8 * j, dims=2)
    torch.testing.assert_close(y, expected, atol=1e-5, rtol=0)


def test_ghosting_restore_keeps_the_central_lines():
    x = torch.rand((1, 1, 32, 16, 8), generator=gen(14)) + 1.0
    y = Ghosting(prob=1.0, restore=0.5).apply(x, axis=torch.tensor([0]), period=torch.tensor([2]), depth=torch.tensor([1.0]))
    kept = torch.fft.fft(y[0, 0], dim=0)[:9]  # |f| <= 8 untouched
    torch.testing.assert_close(kept, torch.fft.fft(x[0, 0], dim=0)[:9], atol=1e-3, rtol=1e-4)


def test_motion_without_movement_is_identity_and_full_shift_is_a_translation():
    x = torch.rand((1, 1, 16, 12, 10), generator=gen(10))
    t = Motion(prob=1.0)
    still = t.apply(x, axis=torch.tensor([0]), times=torch.tensor([[2.0]]), translations=torch.tensor([[[1.0, 2.0, 0.0]]]))
    torch.testing.assert_close(still, x, atol=1e-5, rtol=0)
    moved = t.apply(x, axis=torch.tensor([1]), times=torch.tensor([[0.0]]), translations=torch.tensor([[[2.0, -3.0, 1.0]]]))
    torch.testing.assert_close(moved, torch.roll(x, shifts=(2, -3, 1), dims=(2, 3, 4)), atol=1e-5, rtol=0)


def test_motion_partial_movement_mixes_two_positions():
    x = torch.zeros(1, 1, 32, 32, 4)
    x[:, :, 12:20, 12:20, :] = 1.0
    y = Motion(prob=1.0).apply(x, axis=torch.tensor([0]), times=torch.tensor([[0.5]]), translations=torch.tensor([[[0.0, 4.0, 0.0]]]))
    assert not torch.allclose(y, x, atol=1e-3) and not torch.allclose(y, torch.roll(x, 4, dims=3), atol=1e-3)


# --- contrast, speckle ----------------------------------------------------------------------


def test_gamma_keeps_range_and_order():
    x = torch.linspace(0.1, 0.9, 50).reshape(1, 1, 50, 1)
    y = Gamma(prob=1.0).apply(x, gamma=torch.tensor([2.0]))
    assert float(y.min()) == pytest.approx(0.1, abs=1e-6) and float(y.max()) == pytest.approx(0.9, abs=1e-6)
    assert (y.flatten().diff() > 0).all() and float(y[0, 0, 25, 0]) < float(x[0, 0, 25, 0])


def test_contrast_keeps_the_mean_without_clipping():
    x = torch.rand((2, 1, 8, 8, 8), generator=gen(11))
    y = Contrast(prob=1.0, preserve_range=False).apply(x, factor=torch.tensor([1.5, 0.5]))
    torch.testing.assert_close(y.mean(dim=(1, 2, 3, 4)), x.mean(dim=(1, 2, 3, 4)))
    assert float(y[0].std()) == pytest.approx(1.5 * float(x[0].std()), rel=1e-4)


@pytest.mark.parametrize(
    "distribution, looks, grain, cv",
    [
        ("rayleigh", 1, 1.0, math.sqrt(4 / math.pi - 1)),
        ("rayleigh", 1, 2.5, math.sqrt(4 / math.pi - 1)),  # interpolated field, variance restored
        ("gamma", 1, 1.0, 1.0),
        ("gamma", 4, 1.0, 0.5),
    ],
)
def test_speckle_statistics(distribution, looks, grain, cv):
    t = Speckle(prob=1.0, grain=(grain, grain), strength=(1.0, 1.0), distribution=distribution, looks=looks)
    x = torch.full((1, 1, 40, 40, 40), 0.5)
    y = t(x, gen(12))
    ratio = y / x
    assert float(ratio.mean()) == pytest.approx(1.0, abs=1e-4)
    assert float(ratio.std()) == pytest.approx(cv, rel=0.05)
    assert float(y.min()) >= 0.0


def test_speckle_grain_sets_the_correlation_length():
    x = torch.full((1, 1, 48, 48, 48), 0.5)

    def lag_one_correlation(grain):
        y = Speckle(prob=1.0, grain=(grain, grain), strength=(1.0, 1.0))(x, gen(13))[0, 0]
        return float(torch.corrcoef(torch.stack([y[:-1].flatten(), y[1:].flatten()]))[0, 1])

    assert lag_one_correlation(1.0) < 0.05 < 0.5 < lag_one_correlation(4.0)


@pytest.mark.parametrize("spatial, factor", [((17, 20, 13), (1.7, 2.3, 3.1)), ((30, 22), (2.5, 1.3))])
def test_resolution_loss_equals_interpolate_down_then_up(spatial, factor):
    x = torch.rand((2, 2) + spatial, generator=gen(15))
    y = ResolutionLoss(prob=1.0).apply(x, factor=torch.tensor([factor, factor], dtype=torch.float64))
    coarse = [max(1, round(n / f)) for n, f in zip(spatial, factor)]
    mode = "trilinear" if len(spatial) == 3 else "bilinear"
    expected = F.interpolate(F.interpolate(x, size=coarse, mode="area"), size=spatial, mode=mode, align_corners=False)
    torch.testing.assert_close(y, expected, atol=1e-5, rtol=0)
