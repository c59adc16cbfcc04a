"""Where MONAI has a deterministic counterpart, ours gives the same output for the same parameter."""

from __future__ import annotations

import pytest
import torch
from monai.networks.layers import separable_filtering
from monai.networks.layers.convutils import gaussian_1d
from monai.transforms import (
    AdjustContrast,
    GaussianSmooth,
    GibbsNoise,
    KSpaceSpikeNoise,
    RandBiasField,
    ScaleIntensity,
    ScaleIntensityRange,
    ShiftIntensity,
)

from medssl.transforms.intensity_bias_field import BiasField
from medssl.transforms.intensity_contrast import Gamma, IntensityScale
from medssl.transforms.intensity_ct import HounsfieldScale, RandomWindow
from medssl.transforms.intensity_filters import GaussianBlur
from medssl.transforms.intensity_kspace import GibbsRinging, kspace_spike_log_intensity


def _close(ours, theirs, atol=1e-5):
    torch.testing.assert_close(torch.as_tensor(ours).float(), torch.as_tensor(theirs).float(), rtol=1e-5, atol=atol)


@pytest.fixture
def batch3d():
    return torch.rand((3, 1, 11, 12, 9), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("invert, retain", [(False, False), (True, False), (False, True)])
def test_gamma_equals_adjust_contrast(batch3d, invert, retain):
    gammas = torch.tensor([0.5, 1.0, 2.3])
    ours = Gamma(prob=1.0, invert_image=invert, retain_stats=retain).apply(batch3d, gamma=gammas)
    for b, g in enumerate(gammas.tolist()):
        _close(ours[b], AdjustContrast(g, invert_image=invert, retain_stats=retain)(batch3d[b]), atol=1e-4)


@pytest.mark.parametrize("shape", [(11, 12, 9), (17, 14)])
def test_blur_with_zero_padding_equals_gaussian_smooth(shape):
    x = torch.rand((2, 1) + shape, generator=torch.Generator().manual_seed(1))
    sigma = torch.tensor([[1.0, 0.6, 2.0][: len(shape)], [0.3, 1.4, 0.0][: len(shape)]])
    ours = GaussianBlur(prob=1.0, padding_mode="zeros").apply(x, sigma=sigma)
    for b in range(2):
        _close(ours[b], GaussianSmooth(sigma=sigma[b].tolist())(x[b]))


@pytest.mark.parametrize("mode", ["reflect", "replicate"])
def test_blur_border_modes_equal_monai_separable_filtering(batch3d, mode):
    sigma = torch.tensor([[1.2, 1.2, 1.2], [0.5, 2.0, 1.0], [0.0, 0.8, 0.4]])
    ours = GaussianBlur(prob=1.0, padding_mode=mode).apply(batch3d, sigma=sigma)
    for b in range(3):
        kernels = [gaussian_1d(s.clone()) for s in sigma[b]]
        _close(ours[b], separable_filtering(batch3d[b : b + 1], kernels, mode=mode)[0])


def test_bias_field_equals_rand_bias_field_3d(batch3d):
    t = BiasField(prob=1.0, degree=3, coeff_range=(-0.3, 0.3))
    _, params = t.draw(torch.Generator().manual_seed(2), 3, tuple(batch3d.shape[1:]))
    ours = t.apply(batch3d, **params)
    for b in range(3):
        monai = RandBiasField(degree=3, prob=1.0)
        monai._do_transform = True
        monai._coeff = params["coefficients"][b].tolist()
        _close(ours[b], monai(batch3d[b], randomize=False))


@pytest.mark.parametrize("shape", [(10, 12, 9), (9, 11, 8), (8, 8), (7, 10)])
def test_gibbs_equals_gibbs_noise_on_even_and_odd_sides(shape):
    x = torch.rand((4, 1) + shape, generator=torch.Generator().manual_seed(3))
    alpha = torch.tensor([0.0, 0.25, 0.5, 0.85])
    ours = GibbsRinging(prob=1.0).apply(x, alpha=alpha)
    for b, a in enumerate(alpha.tolist()):
        _close(ours[b], GibbsNoise(a)(x[b]))


@pytest.mark.parametrize("shape", [(10, 12, 9), (9, 11, 8), (8, 10)])
def test_spike_log_intensity_equals_kspace_spike_noise(shape):
    x = torch.rand((2,) + shape, generator=torch.Generator().manual_seed(4))
    locations = [tuple(n // 2 + 1 for n in shape), tuple(0 for _ in shape), tuple(n - 1 for n in shape), tuple(n // 2 for n in shape)]
    for loc in locations:
        _close(kspace_spike_log_intensity(x, loc, 6.0), KSpaceSpikeNoise(loc, 6.0)(x), atol=2e-5)


def test_window_equals_scale_intensity_range_on_hu():
    scale = HounsfieldScale(-1000.0, 1000.0)
    x = torch.rand((2, 1, 9, 9, 9), generator=torch.Generator().manual_seed(5))
    level, width = torch.tensor([40.0, -600.0]), torch.tensor([400.0, 1500.0])
    ours = RandomWindow(prob=1.0, ct_window=(-1000, 1000)).apply(x, level=level, width=width)
    for b in range(2):
        low, high = float(level[b] - width[b] / 2), float(level[b] + width[b] / 2)
        monai = ScaleIntensityRange(a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True)
        _close(ours[b], monai(scale.to_hu(x[b])))


def test_intensity_scale_equals_scale_then_shift(batch3d):
    scale, shift = torch.tensor([0.9, 1.0, 1.2]), torch.tensor([0.05, 0.0, -0.02])
    ours = IntensityScale(prob=1.0).apply(batch3d, scale=scale, shift=shift)
    for b in range(3):
        expected = ShiftIntensity(float(shift[b]))(ScaleIntensity(minv=None, maxv=None, factor=float(scale[b]) - 1.0)(batch3d[b]))
        _close(ours[b], expected)
