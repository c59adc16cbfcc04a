"""Contrast randomisation (SynthSeg-style domain randomisation) and the fine-tuning intensity recipes.

The curve is a cubic B-spline of random control values (checked against SciPy's B-spline), smooth,
mostly non-monotone, maps [0, 1] into [0, 1] and fills it; inversion is exactly ``1 - x``; draws come
only from the generator; probabilities are honoured; the recipe reaches the fine-tuning patches per
case modality.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.interpolate import BSpline

from medssl.config import PreprocessConfig, load_config
from medssl.data.cache import PreprocessedCache
from medssl.data.datasets import LabeledPatchDataset
from medssl.errors import ConfigError
from medssl.io.nifti import save_volume
from medssl.io.volume import Volume
from medssl.transforms.finetune_intensity import FinetuneIntensity
from medssl.transforms.intensity import build_intensity_transform
from medssl.transforms.intensity_randomization import RandomIntensityCurve, RandomInversion, bspline_curve
from medssl.transforms.presets import build_preset

RAMP = torch.linspace(0.0, 1.0, 2049).reshape(1, 1, 2049, 1)  # every grey level, as one image


def _curve(seed: int, controls=(4, 7)) -> np.ndarray:
    out = RandomIntensityCurve(prob=1.0, num_controls=controls)(RAMP.clone(), torch.Generator().manual_seed(seed))
    return out.reshape(-1).double().numpy()


def test_the_curve_is_the_cubic_bspline_of_its_controls():
    controls = torch.tensor([0.1, 0.9, 0.3, 0.7, 0.2, 0.8])
    ours = bspline_curve(controls, resolution=101).numpy()
    k = len(controls)
    knots = np.arange(-3, k + 1, dtype=float)  # uniform knots; the domain [0, k - 3] maps to [0, 1]
    reference = BSpline(knots, controls.double().numpy(), 3)(np.linspace(0.0, k - 3, 101))
    np.testing.assert_allclose(ours, reference, atol=1e-12)


def test_curves_are_smooth_fill_0_1_and_are_mostly_non_monotone():
    non_monotone = 0
    step = 1.0 / (RAMP.numel() - 1)
    for seed in range(40):
        y = _curve(seed)
        assert y.min() >= 0.0 and y.max() <= 1.0
        assert y.min() == pytest.approx(0.0, abs=1e-3) and y.max() == pytest.approx(1.0, abs=1e-3)  # full contrast
        slope = np.diff(y) / step
        assert np.abs(np.diff(slope)).max() < 0.5, f"seed {seed}: a kink in the curve"  # C1 up to tabulation
        non_monotone += bool((slope > 1e-3).any() and (slope < -1e-3).any())
    assert non_monotone >= 30  # tissues change their order of brightness in most draws


def test_inversion_is_exact_and_inputs_outside_0_1_are_clipped_by_the_curve():
    x = torch.rand(3, 2, 5, 5, 4)
    assert torch.equal(RandomInversion(prob=1.0)(x, torch.Generator().manual_seed(0)), 1.0 - x)
    outside = torch.tensor([-0.5, 0.0, 1.0, 1.7]).reshape(1, 1, 4, 1)
    y = RandomIntensityCurve(prob=1.0)(outside, torch.Generator().manual_seed(3)).reshape(-1)
    assert y[0] == y[1] and y[2] == y[3]


def test_draws_come_from_the_generator_and_every_channel_gets_the_same_curve():
    x = torch.rand(4, 1, 6, 6).repeat(1, 3, 1, 1)  # a 2.5D input: three identical channels
    transform = RandomIntensityCurve(prob=0.7)
    a = transform(x.clone(), torch.Generator().manual_seed(11))
    b = transform(x.clone(), torch.Generator().manual_seed(11))
    c = transform(x.clone(), torch.Generator().manual_seed(12))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a[:, 0], a[:, 1]) and torch.equal(a[:, 0], a[:, 2])
    looped = torch.cat([transform(x[i:i + 1].clone(), g) for g in [torch.Generator().manual_seed(11)]
                        for i in range(4)])
    assert torch.equal(looped, a)  # a batch equals a loop over its samples with one generator


@pytest.mark.parametrize(("name", "prob"), [("inversion", 0.25), ("intensity_curve", 0.6)])
def test_rates_are_honoured(name, prob):
    transform = build_intensity_transform(name, prob=prob)
    x = torch.rand(1500, 1, 3, 3) * 0.8 + 0.1
    y = transform(x, torch.Generator().manual_seed(0))
    changed = (y != x).flatten(1).any(dim=1).float().mean().item()
    sigma = (prob * (1 - prob) / 1500) ** 0.5
    assert abs(changed - prob) < 4 * sigma


def test_presets_keep_contrast_randomisation_off_unless_asked():
    default = build_preset("mr")
    names = [type(t).__name__ for t in default.intensity]
    assert names[-2:] == ["RandomIntensityCurve", "RandomInversion"]
    assert default.intensity[-1].prob == 0.0 and default.intensity[-2].prob == 0.0
    on = build_preset("ct", curve_prob=0.5, inversion_prob=0.2)
    assert (on.intensity[-2].prob, on.intensity[-1].prob) == (0.5, 0.2)


def test_finetune_recipes_per_modality_and_bad_settings():
    recipe = FinetuneIntensity("contrast_randomization")
    ct = [type(t).__name__ for t in recipe.for_modality("CT").intensity]
    mr = [type(t).__name__ for t in recipe.for_modality("MR").intensity]
    assert "RandomWindow" in ct and "RandomWindow" not in mr
    assert ct[-2:] == mr[-2:] == ["RandomIntensityCurve", "RandomInversion"]
    assert FinetuneIntensity("none").for_modality("CT") is None
    assert [type(t).__name__ for t in FinetuneIntensity("mild").for_modality("MR").intensity] == [
        "GaussianNoise", "GaussianBlur", "Gamma", "IntensityScale"]
    with pytest.raises(ConfigError, match="intensity_args does not take"):
        FinetuneIntensity("contrast_randomization", {"invert": 1.0})
    with pytest.raises(ConfigError, match="intensity_augmentation"):
        load_config(None, ["finetune.intensity_augmentation=strong"])


def test_the_recipe_reaches_the_training_patches(tmp_path):
    mr = np.random.default_rng(0).uniform(100, 900, (1, 12, 12, 6)).astype(np.float32)
    mask = np.zeros((1, 12, 12, 6), np.float32)
    mask[0, 3:9, 3:9, 2:4] = 1
    save_volume(Volume(mr, np.eye(4), "MR"), tmp_path / "mr.nii.gz")
    save_volume(Volume(mask, np.eye(4), "SEG"), tmp_path / "mask.nii.gz")
    rows = pd.DataFrame([{"path": "mr.nii.gz", "mask_path": "mask.nii.gz", "modality": "MR"}])
    cache = PreprocessedCache(tmp_path / "cache", PreprocessConfig(target_spacing=None, crop_foreground=False,
                                                                  cache_dtype="float32"))

    def patches(intensity):
        dataset = LabeledPatchDataset(cache, rows, (8, 8, 4), seed=0, root=tmp_path, samples_per_volume=3,
                                      intensity=intensity)
        return [dataset[i]["image"] for i in range(3)]

    inverted = FinetuneIntensity("contrast_randomization", {"mild_prob": 0.0, "curve_prob": 0.0, "inversion_prob": 1.0})
    for plain, flipped in zip(patches(None), patches(inverted)):
        assert torch.allclose(flipped, 1.0 - plain, atol=1e-6)
