"""CT intensity transforms that speak in Hounsfield units: random tissue windows and quantum noise.

Preprocessing (``medssl.data.preprocess``) clips CT to the Hounsfield window
``PreprocessConfig.ct_window`` (``(-1000, 1000)`` by default) and maps it linearly to [0, 1].
:class:`HounsfieldScale` is the one place that mapping lives on the augmentation side::

    HU = low + x * (high - low)        x = (HU - low) / (high - low)

so every CT transform takes ``ct_window`` and converts through it.

Example:
    >>> scale = HounsfieldScale(-1000.0, 1000.0)
    >>> scale.to_hu(0.5), scale.from_hu(40.0)
    (0.0, 0.52)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from medssl.errors import ConfigError
from medssl.transforms.intensity_base import (
    RandomIntensityTransform,
    check_range,
    draw_int,
    draw_log_uniform,
    draw_uniform,
    per_sample,
)
from medssl.transforms.intensity_noise import GaussianNoise

__all__ = ["TISSUE_WINDOWS", "HUGaussianNoise", "HounsfieldScale", "RandomWindow", "resolve_windows"]

#: Standard radiological display windows as ``(level, width)`` in HU.
TISSUE_WINDOWS: dict[str, tuple[float, float]] = {
    "soft_tissue": (50.0, 400.0),
    "abdomen": (40.0, 350.0),
    "mediastinum": (50.0, 350.0),
    "liver": (60.0, 160.0),
    "brain": (40.0, 80.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
}


@dataclass(frozen=True)
class HounsfieldScale:
    """The linear map between preprocessed CT values in [0, 1] and Hounsfield units.

    Attributes:
        low: HU mapped to 0 (``PreprocessConfig.ct_window[0]``).
        high: HU mapped to 1 (``PreprocessConfig.ct_window[1]``).
    """

    low: float = -1000.0
    high: float = 1000.0

    def __post_init__(self) -> None:
        if not float(self.high) > float(self.low):
            raise ConfigError(f"ct_window=({self.low}, {self.high}) must have low < high (Hounsfield units)")

    @classmethod
    def from_window(cls, ct_window: "HounsfieldScale | Sequence[float]") -> "HounsfieldScale":
        """From ``PreprocessConfig.ct_window`` (a ``(low, high)`` pair) or an existing scale."""
        if isinstance(ct_window, HounsfieldScale):
            return ct_window
        try:
            low, high = (float(v) for v in ct_window)
        except (TypeError, ValueError):
            raise ConfigError(f"ct_window={ct_window!r} must be a (low, high) pair in HU") from None
        return cls(low, high)

    @property
    def width(self) -> float:
        return float(self.high) - float(self.low)

    def to_hu(self, x):
        """[0, 1] -> HU (floats or tensors)."""
        return self.low + x * self.width

    def from_hu(self, hu):
        """HU -> [0, 1] (floats or tensors; not clipped)."""
        return (hu - self.low) / self.width

    def std_from_hu(self, std_hu: float) -> float:
        """A standard deviation in HU expressed in [0, 1] units."""
        return float(std_hu) / self.width


def resolve_windows(windows: Sequence[str | Sequence[float]]) -> tuple[tuple[float, float], ...]:
    """Names of :data:`TISSUE_WINDOWS` or ``(level, width)`` pairs -> ``((level, width), ...)``."""
    resolved = []
    for window in windows:
        if isinstance(window, str):
            if window not in TISSUE_WINDOWS:
                raise ConfigError(f"RandomWindow: unknown window {window!r}; known: {sorted(TISSUE_WINDOWS)}")
            resolved.append(TISSUE_WINDOWS[window])
        else:
            try:
                level, width = (float(v) for v in window)
            except (TypeError, ValueError):
                raise ConfigError(f"RandomWindow: window {window!r} must be a name or (level, width) in HU") from None
            if width <= 0:
                raise ConfigError(f"RandomWindow: window {window!r} has a width <= 0")
            resolved.append((level, width))
    if not resolved:
        raise ConfigError("RandomWindow: windows must name at least one window")
    return tuple(resolved)


class RandomWindow(RandomIntensityTransform):
    """Re-window CT around a random tissue window, then rescale to [0, 1].

    Simulates: the display windows radiologists read CT with (soft tissue, lung, bone, liver...),
    each showing a different slice of the HU range at full contrast. Why an SSL invariance (and a
    CT-specific replacement for colour jitter): the anatomy is the same under every window, but
    which structures are visible changes, so the views disagree on contrast without disagreeing on
    content. The jitter on level and width covers institution-specific window presets.

    Formula: pick ``(L0, W0)`` uniformly from ``windows``; ``W = W0 * s`` with ``s`` log-uniform in
    ``width_scale``; ``L = L0 + j * W0`` with ``j ~ U(level_jitter)``;
    ``y = clip((HU(x) - (L - W / 2)) / W, 0, 1)`` with ``HU(x)`` from ``ct_window``. For fixed
    ``(L, W)`` this is MONAI's ``ScaleIntensityRange(L - W/2, L + W/2, 0, 1, clip=True)`` on HU
    (tested); the batched version draws one window per sample.

    Args:
        prob: probability of re-windowing a sample (otherwise it keeps the preprocessing window).
        windows: names from :data:`TISSUE_WINDOWS` and/or ``(level, width)`` pairs in HU.
        level_jitter: ``(low, high)`` shift of the level, as a fraction of the window width.
        width_scale: ``(low, high)`` factor range on the width.
        ct_window: the preprocessing window ``(low, high)`` in HU (``PreprocessConfig.ct_window``).
    """

    def __init__(
        self,
        prob: float = 0.8,
        windows: Sequence[str | Sequence[float]] = ("soft_tissue", "abdomen", "liver", "lung", "bone", "mediastinum"),
        level_jitter: tuple[float, float] = (-0.15, 0.15),
        width_scale: tuple[float, float] = (0.8, 1.25),
        ct_window: HounsfieldScale | Sequence[float] = (-1000.0, 1000.0),
    ) -> None:
        super().__init__(prob)
        self.windows = resolve_windows(windows)
        self.level_jitter = check_range(type(self).__name__, "level_jitter", level_jitter)
        self.width_scale = check_range(type(self).__name__, "width_scale", width_scale, minimum=0.0, strict_minimum=True)
        self.scale = HounsfieldScale.from_window(ct_window)

    def sample(self, generator, shape):
        index = int(draw_int(generator, 0, len(self.windows) - 1))
        level0, width0 = self.windows[index]
        width = width0 * draw_log_uniform(generator, *self.width_scale)
        level = level0 + width0 * draw_uniform(generator, *self.level_jitter)
        return {"level": level, "width": width}

    def apply(self, x: torch.Tensor, level: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
        """Window sample ``b`` at ``level[b], width[b]`` (HU) and rescale to [0, 1]."""
        level = per_sample(level.to(x.dtype), x)
        width = per_sample(width.to(x.dtype), x)
        # (HU - (L - W/2)) / W with HU = low + x * span, as one multiply-add per voxel
        gain = self.scale.width / width
        offset = (self.scale.low - level) / width + 0.5
        return torch.addcmul(offset, x, gain).clamp_(0.0, 1.0)


class HUGaussianNoise(GaussianNoise):
    """CT quantum noise with its standard deviation given in Hounsfield units.

    Simulates: photon-counting (quantum) noise, which dominates low-dose CT; typical soft-tissue
    noise is 5 to 15 HU at standard dose and 20 to 50 HU at low dose. Why an SSL invariance: dose
    varies across protocols, patients and vendors; the anatomy does not. Apply it before
    :class:`RandomWindow` (physical order: noise is in the reconstruction, windows only display
    it), so a narrow window amplifies it as it would on the screen. Noise here is white; real CT
    noise is correlated by the reconstruction kernel (follow with a small blur to mimic a soft
    kernel).

    Formula: ``y = x + (s / (high - low)) * n``, ``s ~ U(std_hu)`` in HU, ``n`` a N(0, 1) field
    (noise bank, see :mod:`medssl.transforms.intensity_noise`).

    Args:
        prob: probability of adding noise to a sample.
        std_hu: ``(low, high)`` noise standard deviation in HU.
        ct_window: the preprocessing window in HU (``PreprocessConfig.ct_window``).
    """

    def __init__(
        self,
        prob: float = 0.5,
        std_hu: tuple[float, float] = (0.0, 30.0),
        ct_window: HounsfieldScale | Sequence[float] = (-1000.0, 1000.0),
    ) -> None:
        self.hu_scale = HounsfieldScale.from_window(ct_window)
        self.std_hu = check_range(type(self).__name__, "std_hu", std_hu, minimum=0.0)
        super().__init__(prob, std=tuple(self.hu_scale.std_from_hu(s) for s in self.std_hu))

