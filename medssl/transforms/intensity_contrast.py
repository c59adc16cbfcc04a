"""Global intensity mappings, batched with per-sample parameters: gamma, contrast, scaling.

These are the grey-level counterpart of colour jitter, the part of natural-image SSL recipes that
does carry over to medical images: the same tissue gets different grey levels across scanners,
protocols, vendors and post-processing, so an encoder should be invariant to smooth monotone
changes of the intensity scale.

MONAI has each of these (``AdjustContrast``/``RandAdjustContrast``, ``RandScaleIntensity``,
``RandShiftIntensity``); what the versions here add is one call per batch with per-sample
parameters on the batch's device, generator-driven draws, and log-uniform factors. :class:`Gamma`
gives exactly MONAI's ``AdjustContrast(gamma)`` for the same ``gamma`` (tested).

Example:
    >>> import torch
    >>> x = torch.rand(3, 1, 8, 8, 8)
    >>> y = Gamma(prob=1.0).apply(x, gamma=torch.tensor([1.0, 2.0, 0.5]))
    >>> bool(torch.allclose(y[0], x[0], atol=1e-5))
    True
"""

from __future__ import annotations

import torch

from medssl.transforms.intensity_base import (
    RandomIntensityTransform,
    check_range,
    draw_log_uniform,
    draw_uniform,
    per_sample,
)

__all__ = ["Contrast", "Gamma", "IntensityScale"]

_EPSILON = 1e-7  # MONAI AdjustContrast's epsilon, kept for exact equivalence


def _sample_min_max(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    flat = x.reshape(x.shape[0], -1)  # (amin and amax are 20x faster than aminmax on CPU)
    return per_sample(flat.amin(dim=1), x), per_sample(flat.amax(dim=1), x)


class Gamma(RandomIntensityTransform):
    """Gamma (power-law) change of contrast within each sample's own intensity range.

    Simulates: the non-linear grey-level response differences between scanners, reconstruction
    filters, display look-up tables and (for X-ray) detector and post-processing curves. Why an
    SSL invariance: a monotone remapping keeps every edge and structure; tissue identity should
    not hinge on one calibration curve.

    Formula (MONAI ``AdjustContrast``): ``y = ((x - m) / (r + 1e-7))^g * r + m`` with ``m, r`` the
    sample's minimum and range and ``g`` log-uniform in ``gamma`` (so darkening and brightening are
    equally likely). ``invert_image`` applies it to ``-x`` (nnU-Net); ``retain_stats`` restores the
    sample's mean and standard deviation afterwards (nnU-Net).

    Args:
        prob: probability of applying the change to a sample.
        gamma: ``(low, high)`` range of the exponent, ``0 < low <= high``.
        invert_image: apply the curve to the inverted image (brightens dark structures instead).
        retain_stats: rescale the output to the input's mean and standard deviation.
    """

    def __init__(
        self,
        prob: float = 0.5,
        gamma: tuple[float, float] = (0.7, 1.5),
        invert_image: bool = False,
        retain_stats: bool = False,
    ) -> None:
        super().__init__(prob)
        self.gamma = check_range(type(self).__name__, "gamma", gamma, minimum=0.0, strict_minimum=True)
        self.invert_image = bool(invert_image)
        self.retain_stats = bool(retain_stats)

    def sample(self, generator, shape):
        return {"gamma": draw_log_uniform(generator, *self.gamma)}

    def apply(self, x: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        """The deterministic gamma curve with one exponent per sample (``gamma`` shaped ``(B,)``)."""
        x = -x if self.invert_image else x
        if self.retain_stats:
            flat = x.reshape(x.shape[0], -1)
            mean, std = per_sample(flat.mean(dim=1), x), per_sample(flat.std(dim=1), x)
        low, high = _sample_min_max(x)
        spread = high - low
        exponent = per_sample(gamma.to(x.dtype), x)
        # b^g as exp(g log b) (b in [0, 1], log 0 = -inf gives 0): 3x faster than pow on CPU
        out = (x - low).div_(spread + _EPSILON).log_().mul_(exponent).exp_().mul_(spread).add_(low)
        if self.retain_stats:
            flat = out.reshape(out.shape[0], -1)
            out_mean, out_std = per_sample(flat.mean(dim=1), out), per_sample(flat.std(dim=1), out)
            out = (out - out_mean) / (out_std + 1e-8) * std + mean
        return -out if self.invert_image else out


class Contrast(RandomIntensityTransform):
    """Linear contrast change around the sample's mean.

    Simulates: window/gain differences (X-ray exposure and detector gain, MR receiver scaling,
    ultrasound gain). Why an SSL invariance: contrast scales every edge by the same factor and
    changes no anatomy.

    Formula (nnU-Net ``ContrastAugmentationTransform``): ``y = (x - mu) * f + mu`` with ``mu`` the
    sample mean and ``f`` log-uniform in ``factor``; with ``preserve_range`` the result is clipped
    to the sample's original ``[min, max]``.

    Args:
        prob: probability of applying the change to a sample.
        factor: ``(low, high)`` range of the contrast factor (1 = unchanged).
        preserve_range: clip to the input's range, as nnU-Net does.
    """

    def __init__(self, prob: float = 0.5, factor: tuple[float, float] = (0.75, 1.33), preserve_range: bool = True) -> None:
        super().__init__(prob)
        self.factor = check_range(type(self).__name__, "factor", factor, minimum=0.0, strict_minimum=True)
        self.preserve_range = bool(preserve_range)

    def sample(self, generator, shape):
        return {"factor": draw_log_uniform(generator, *self.factor)}

    def apply(self, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
        """``(x - mean) * factor + mean`` per sample, optionally clipped to the input range."""
        mean = per_sample(x.reshape(x.shape[0], -1).mean(dim=1), x)
        out = (x - mean).mul_(per_sample(factor.to(x.dtype), x)).add_(mean)
        if self.preserve_range:
            low, high = _sample_min_max(x)
            out = torch.clamp(out, low, high)
        return out


class IntensityScale(RandomIntensityTransform):
    """Global intensity scaling and shift.

    Simulates: MR's arbitrary intensity units (receiver gain, coil loading, vendor scaling) left
    after percentile normalisation; small calibration offsets elsewhere. Why an SSL invariance: the
    absolute grey value of MR tissue has no physical unit, only its contrast to neighbours matters.

    Formula: ``y = x * s + t`` with ``s`` log-uniform in ``scale`` and ``t`` uniform in ``shift``
    (MONAI ``RandScaleIntensity`` then ``RandShiftIntensity``, in one pass with per-sample values).

    Args:
        prob: probability of applying the change to a sample.
        scale: ``(low, high)`` range of the multiplicative factor.
        shift: ``(low, high)`` range of the additive offset, in image units.
    """

    def __init__(
        self, prob: float = 0.5, scale: tuple[float, float] = (0.9, 1.1), shift: tuple[float, float] = (-0.05, 0.05)
    ) -> None:
        super().__init__(prob)
        self.scale = check_range(type(self).__name__, "scale", scale, minimum=0.0, strict_minimum=True)
        self.shift = check_range(type(self).__name__, "shift", shift)

    def sample(self, generator, shape):
        return {"scale": draw_log_uniform(generator, *self.scale), "shift": draw_uniform(generator, *self.shift)}

    def apply(self, x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        """``x * scale + shift`` per sample."""
        return torch.addcmul(per_sample(shift.to(x.dtype), x), x, per_sample(scale.to(x.dtype), x))
