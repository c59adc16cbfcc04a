"""Intensity restoration: recover the full-range patch from a narrowly windowed one.

The grayscale analogue of colorization (Zhang, Isola & Efros, "Colorful image colorization",
ECCV 2016; Larsson et al., "Colorization as a proxy task for visual understanding", CVPR 2017):
there the network sees the lightness channel and predicts the colours it lost; here it sees the
patch through a narrow display window (everything outside the window clipped to black or
white) and predicts the full intensity range. Filling in the clipped values needs to know what
tissue lies there: under a brain window, bone and air are all white and black; under a lung window,
all soft tissue looks alike. The output is regressed with an L1 loss (robust to the
multi-modality Zhang et al. handle with classification over colour bins).

Windows:

* ``modality="ct"``: a named tissue window in HU (:data:`medssl.transforms.intensity_ct.TISSUE_WINDOWS`,
  narrow ones by default) with jittered level and width, converted through ``ct_window``;
* ``modality="generic"`` (MR, X-ray...): width ``w ~ U(window_width)`` of the [0, 1] range,
  centred on the ``q``-quantile of the patch's foreground (``q ~ U(level_quantile)``), so that
  the window always falls on tissue.

``input = clip((x - (L - w / 2)) / w, 0, 1)``, ``target = x``.

Example:
    >>> import torch
    >>> task = IntensityRestoration(spatial_dims=3, modality="ct")
    >>> windowed, original = task(torch.rand(1, 16, 16, 16), torch.Generator().manual_seed(0))
    >>> float(windowed.min()) >= 0.0 and float(windowed.max()) <= 1.0
    True
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch

from medssl.errors import ConfigError
from medssl.pretext.base import PretextSpec, PretextTask
from medssl.transforms.intensity_ct import HounsfieldScale, resolve_windows

__all__ = ["IntensityRestoration", "apply_window"]

_QUANTILE_SAMPLES = 1 << 16


def apply_window(x: torch.Tensor, level: float, width: float) -> torch.Tensor:
    """``clip((x - (level - width / 2)) / width, 0, 1)`` (level and width in ``x``'s units)."""
    return ((x - (level - width / 2.0)) / width).clamp(0.0, 1.0)


class IntensityRestoration(PretextTask):
    """Show the patch through a narrow random window; the target is the patch itself.

    Args:
        spatial_dims: 2 or 3.
        modality: ``ct`` (named HU windows) or ``generic`` (quantile-centred windows on [0, 1]).
        windows: for ``ct``, names or ``(level, width)`` HU pairs (default: the narrow tissue windows
            brain, liver, soft tissue, abdomen, mediastinum).
        level_jitter: for ``ct``, level shift as a fraction of the window width.
        width_scale: for ``ct``, ``(low, high)`` factor on the width.
        ct_window: the preprocessing window in HU (``PreprocessConfig.ct_window``).
        window_width: for ``generic``, ``(low, high)`` width as a fraction of [0, 1].
        level_quantile: for ``generic``, ``(low, high)`` quantile of the foreground for the level.
        foreground_threshold: for ``generic``, voxels above it count as foreground.

    Output: ``input (C, *S)`` in [0, 1], ``target (C, *S)`` the original patch.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        modality: Literal["ct", "generic"] = "generic",
        windows: Sequence[str | Sequence[float]] = ("brain", "liver", "soft_tissue", "abdomen", "mediastinum"),
        level_jitter: tuple[float, float] = (-0.2, 0.2),
        width_scale: tuple[float, float] = (0.8, 1.25),
        ct_window: Sequence[float] = (-1000.0, 1000.0),
        window_width: tuple[float, float] = (0.05, 0.3),
        level_quantile: tuple[float, float] = (0.1, 0.9),
        foreground_threshold: float = 0.05,
    ) -> None:
        if spatial_dims not in (2, 3):
            raise ConfigError(f"intensity_restoration: spatial_dims must be 2 or 3, got {spatial_dims}")
        if modality not in ("ct", "generic"):
            raise ConfigError(f"intensity_restoration: modality={modality!r} is not ct or generic")
        if not 0.0 < float(window_width[0]) <= float(window_width[1]) <= 1.0:
            raise ConfigError(f"intensity_restoration: window_width={window_width} must satisfy 0 < low <= high <= 1")
        if not 0.0 <= float(level_quantile[0]) <= float(level_quantile[1]) <= 1.0:
            raise ConfigError(f"intensity_restoration: level_quantile={level_quantile} must lie in [0, 1]")
        if not 0.0 < float(width_scale[0]) <= float(width_scale[1]):
            raise ConfigError(f"intensity_restoration: width_scale={width_scale} must satisfy 0 < low <= high")
        self.modality = modality
        self.windows = resolve_windows(windows)
        self.level_jitter = (float(level_jitter[0]), float(level_jitter[1]))
        self.width_scale = (float(width_scale[0]), float(width_scale[1]))
        self.scale = HounsfieldScale.from_window(ct_window)
        self.window_width = (float(window_width[0]), float(window_width[1]))
        self.level_quantile = (float(level_quantile[0]), float(level_quantile[1]))
        self.foreground_threshold = float(foreground_threshold)
        self.spec = PretextSpec("intensity_restoration", "image", 0, 1, "l1", spatial_dims)

    def _u(self, generator: torch.Generator, low: float, high: float) -> float:
        return low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))

    def draw_window(self, patch: torch.Tensor, generator: torch.Generator) -> tuple[float, float]:
        """``(level, width)`` in the patch's [0, 1] units."""
        if self.modality == "ct":
            index = int(torch.randint(len(self.windows), (), generator=generator))
            level_hu, width_hu = self.windows[index]
            width = width_hu * self._u(generator, *self.width_scale)
            level = level_hu + width_hu * self._u(generator, *self.level_jitter)
            return float(self.scale.from_hu(level)), width / self.scale.width
        width = self._u(generator, *self.window_width)
        quantile = self._u(generator, *self.level_quantile)
        flat = patch.reshape(-1)
        step = max(1, flat.numel() // _QUANTILE_SAMPLES)  # a strided subsample is plenty for a quantile
        values = flat[::step].to(torch.float32)
        foreground = values[values > self.foreground_threshold]
        if foreground.numel() == 0:
            foreground = values
        return float(torch.quantile(foreground, quantile)), width

    def make_pair(self, patch, generator):
        level, width = self.draw_window(patch, generator)
        return apply_window(patch, level, width).to(patch.dtype).contiguous(), patch.clone()
