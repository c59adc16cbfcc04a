"""Modality-aware augmentation presets: ``ct``, ``mr``, ``xr``, ``us`` (and ``none``), chosen by name.

Natural-image SSL recipes (colour jitter, grayscale, solarisation) model a camera; medical images
come from scanners whose artefacts are known. A preset is the augmentation a modality calls for:
its spatial part (a :class:`~medssl.transforms.spatial.SpatialAugmentation`, fused into one
resampling by the view generators) and an ordered list of intensity transforms, ordered as the
physics happens: object and point-spread function first, then acquisition defects and noise,
then display (windows, gamma). Every image reaching a preset is in [0, 1]; the output is clipped
back to [0, 1] (``clip``), the range the network saw in pretraining.

========  ====================================================================================
preset    intensity transforms, in order (default probability)
========  ====================================================================================
``ct``    resolution loss along z (0.15), blur (0.2), HU quantum noise (0.5), random tissue
          window (0.8), [random intensity curve (0), inversion (0)]
``mr``    bias field (0.4), motion (0.1), ghosting (0.1), Gibbs ringing (0.15), k-space spikes
          (0.05), anisotropic down-sampling (0.2), Rician noise (0.3), gamma (0.4), intensity
          scale (0.4), [random intensity curve (0), inversion (0)]
``xr``    blur (0.3), Gaussian noise (0.4), gamma (0.5), contrast (0.5)  — 2D
``us``    speckle (0.8), blur (0.3), gamma (0.4), contrast (0.4)  — 2D
``none``  nothing: plain crops (evaluation, pretext tasks)
========  ====================================================================================

The bracketed transforms are contrast randomisation (:mod:`medssl.transforms.intensity_randomization`,
the domain randomisation of SynthSeg), off by default in the pretraining presets: switch them on
with ``curve_prob`` and ``inversion_prob``. Fine-tuning uses them through
``finetune.intensity_augmentation: contrast_randomization`` (:mod:`medssl.transforms.finetune_intensity`).

``build_preset(name, **overrides)`` takes the keyword arguments of the preset's builder below
(``noise_std_hu=(0, 50)``, ``window_prob=1.0``...), plus for every preset ``spatial`` (a dict of
:class:`SpatialAugmentation` fields merged into the preset's, or a whole instance), ``intensity``
(a list of ``{"name": ..., **args}`` entries replacing the intensity list, names from
:func:`medssl.transforms.intensity.list_intensity_transforms`) and ``clip`` (``None`` to keep the
raw range). Unknown keys raise :class:`~medssl.errors.ConfigError`. A config reaches it as
``pretrain.augmentation.preset`` and ``pretrain.augmentation.args``; pass
``ct_window=PreprocessConfig.ct_window`` to CT presets when the preprocessing window is not the
default.

Example:
    >>> import torch
    >>> preset = build_preset("ct", noise_std_hu=(0.0, 20.0))
    >>> preset.spatial.flip_prob
    (0.5, 0.0, 0.0)
    >>> x = torch.rand(2, 1, 16, 16, 16)
    >>> y = preset.apply_intensity(x, torch.Generator().manual_seed(0))
    >>> y.shape, float(y.min()) >= 0.0, float(y.max()) <= 1.0
    (torch.Size([2, 1, 16, 16, 16]), True, True)
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch

from medssl.errors import ConfigError
from medssl.transforms.intensity import build_from_spec
from medssl.transforms.intensity_base import RandomIntensityTransform, check_batch, check_generator
from medssl.transforms.intensity_bias_field import BiasField
from medssl.transforms.intensity_contrast import Contrast, Gamma, IntensityScale
from medssl.transforms.intensity_ct import HounsfieldScale, HUGaussianNoise, RandomWindow
from medssl.transforms.intensity_filters import GaussianBlur, ResolutionLoss
from medssl.transforms.intensity_kspace import Ghosting, GibbsRinging, KSpaceSpikes, Motion
from medssl.transforms.intensity_noise import GaussianNoise, RicianNoise
from medssl.transforms.intensity_randomization import RandomIntensityCurve, RandomInversion
from medssl.transforms.intensity_speckle import Speckle
from medssl.transforms.spatial import SpatialAugmentation

__all__ = ["AugmentationPreset", "PRESETS", "build_preset", "list_presets"]

logger = logging.getLogger(__name__)

Range = Sequence[float]


@dataclass
class AugmentationPreset:
    """A modality's augmentation: spatial parameters plus an ordered intensity pipeline.

    Attributes:
        name: the registry name (``ct``, ``mr``, ``xr``, ``us``, ``none``).
        spatial: the spatial parameters for the view generators (one fused resampling).
        intensity: the intensity transforms, applied in order by :meth:`apply_intensity`.
        spatial_dims: 3 for volumes, 2 for images (the patch the preset is meant for).
        clip: the output range, ``(0, 1)`` by default; ``None`` leaves it unclipped.
    """

    name: str
    spatial: SpatialAugmentation
    intensity: list[RandomIntensityTransform] = field(default_factory=list)
    spatial_dims: int = 3
    clip: tuple[float, float] | None = (0.0, 1.0)

    def apply_intensity(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Apply the intensity transforms in order to a batch ``(B, C, *spatial)``, then clip.

        Works on any device; every draw comes from the CPU ``generator``, sample by sample (all of
        sample 0's parameters, then sample 1's...), so a batch gives exactly what a loop over its
        samples gives with the same generator: the worker path (``B = 1`` per call) and the
        device path (one call per batch) agree. For one view ``v (C, *spatial)`` call
        ``preset.apply_intensity(v[None], generator)[0]``.
        """
        check_batch(x, f"preset {self.name!r}")
        check_generator(generator, f"preset {self.name!r}")
        active = [t for t in self.intensity if t.prob > 0.0]
        shape = tuple(x.shape[1:])
        per_sample = [[t.draw_one(generator, shape) for t in active] for _ in range(x.shape[0])]
        for position, transform in enumerate(active):
            flags, params = transform.stack_draws([row[position] for row in per_sample])
            x = transform.apply_drawn(x, flags, params)
        if self.clip is not None:
            x = x.clamp(*self.clip)
        return x

    def describe(self) -> dict[str, Any]:
        """A JSON-friendly summary (name, spatial fields, intensity transforms and arguments)."""
        return {
            "name": self.name,
            "spatial_dims": self.spatial_dims,
            "clip": self.clip,
            "spatial": dataclasses.asdict(self.spatial),
            "intensity": [_jsonable(t.describe()) for t in self.intensity],
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if dataclasses.is_dataclass(value):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


# ---------------------------------------------------------------------------------------------
# the presets


def ct_preset(
    *,
    spatial_dims: int = 3,
    ct_window: Range = (-1000.0, 1000.0),
    windows: Sequence[str | Range] = ("soft_tissue", "abdomen", "liver", "mediastinum", "lung", "bone"),
    window_prob: float = 0.8,
    level_jitter: Range = (-0.15, 0.15),
    width_scale: Range = (0.8, 1.25),
    noise_prob: float = 0.5,
    noise_std_hu: Range = (0.0, 30.0),
    blur_prob: float = 0.2,
    blur_sigma: Range = (0.4, 1.0),
    lowres_prob: float = 0.15,
    lowres_factor: Range = (1.5, 3.0),
    curve_prob: float = 0.0,
    curve_controls: Range = (4, 7),
    inversion_prob: float = 0.0,
) -> AugmentationPreset:
    """CT: thick slices, soft kernels, quantum noise in HU, then a random tissue window.

    Spatial: left-right flips (anatomically plausible), small rotations (+-15 degrees in plane,
    +-5 out of plane), scaling 0.85 to 1.2 (patient size, reconstruction field of view), light
    elastic deformation (breathing, posture). Resolution loss acts along z (slice thickness) in
    3D and in plane in 2D.
    """
    scale = HounsfieldScale.from_window(ct_window)
    lowres_axes = (2,) if spatial_dims == 3 else (0, 1)
    lowres_mode = "independent" if spatial_dims == 3 else "isotropic"
    intensity: list[RandomIntensityTransform] = [
        ResolutionLoss(prob=lowres_prob, factor=lowres_factor, axes=lowres_axes, mode=lowres_mode),
        GaussianBlur(prob=blur_prob, sigma=blur_sigma),
        HUGaussianNoise(prob=noise_prob, std_hu=noise_std_hu, ct_window=scale),
        RandomWindow(prob=window_prob, windows=windows, level_jitter=level_jitter, width_scale=width_scale, ct_window=scale),
        RandomIntensityCurve(prob=curve_prob, num_controls=curve_controls),
        RandomInversion(prob=inversion_prob),
    ]
    spatial = SpatialAugmentation(
        flip_prob=(0.5, 0.0, 0.0),
        rotate_prob=0.5,
        rotate_range_deg=(5.0, 5.0, 15.0),
        scale_prob=0.5,
        scale_range=(0.85, 1.2),
        elastic_prob=0.1,
        elastic_magnitude=2.0,
    )
    return AugmentationPreset("ct", spatial, intensity, spatial_dims)


def mr_preset(
    *,
    spatial_dims: int = 3,
    bias_prob: float = 0.4,
    bias_coeff_range: Range = (-0.15, 0.15),
    bias_degree: int = 3,
    motion_prob: float = 0.1,
    motion_max_translation: float = 3.0,
    ghosting_prob: float = 0.1,
    ghosting_intensity: Range = (0.3, 0.8),
    gibbs_prob: float = 0.15,
    gibbs_alpha: Range = (0.3, 0.6),
    spike_prob: float = 0.05,
    spike_amplitude: Range = (0.03, 0.1),
    lowres_prob: float = 0.2,
    lowres_factor: Range = (1.5, 4.0),
    noise_prob: float = 0.3,
    noise_std: Range = (0.0, 0.04),
    gamma_prob: float = 0.4,
    gamma: Range = (0.7, 1.5),
    scale_prob: float = 0.4,
    scale: Range = (0.9, 1.1),
    shift: Range = (-0.05, 0.05),
    curve_prob: float = 0.0,
    curve_controls: Range = (4, 7),
    inversion_prob: float = 0.0,
) -> AugmentationPreset:
    """MR: coil bias, k-space defects (motion, ghosting, Gibbs, spikes), thick slices, Rician noise,
    arbitrary intensity scale.

    Spatial: left-right flips, rotations up to +-15 degrees about each axis, scaling 0.85 to 1.2,
    elastic deformation (0.2; soft tissue and brain shape variation).
    """
    intensity: list[RandomIntensityTransform] = [
        BiasField(prob=bias_prob, degree=bias_degree, coeff_range=bias_coeff_range),
        Motion(prob=motion_prob, max_translation=motion_max_translation),
        Ghosting(prob=ghosting_prob, intensity=ghosting_intensity),
        GibbsRinging(prob=gibbs_prob, alpha=gibbs_alpha),
        KSpaceSpikes(prob=spike_prob, amplitude=spike_amplitude),
        ResolutionLoss(prob=lowres_prob, factor=lowres_factor, mode="one_axis"),
        RicianNoise(prob=noise_prob, std=noise_std),
        Gamma(prob=gamma_prob, gamma=gamma),
        IntensityScale(prob=scale_prob, scale=scale, shift=shift),
        RandomIntensityCurve(prob=curve_prob, num_controls=curve_controls),
        RandomInversion(prob=inversion_prob),
    ]
    spatial = SpatialAugmentation(
        flip_prob=(0.5, 0.0, 0.0),
        rotate_prob=0.5,
        rotate_range_deg=(15.0, 15.0, 15.0),
        scale_prob=0.5,
        scale_range=(0.85, 1.2),
        elastic_prob=0.2,
        elastic_magnitude=2.0,
    )
    return AugmentationPreset("mr", spatial, intensity, spatial_dims)


def xr_preset(
    *,
    spatial_dims: int = 2,
    blur_prob: float = 0.3,
    blur_sigma: Range = (0.3, 1.2),
    noise_prob: float = 0.4,
    noise_std: Range = (0.0, 0.03),
    gamma_prob: float = 0.5,
    gamma: Range = (0.6, 1.6),
    contrast_prob: float = 0.5,
    contrast: Range = (0.75, 1.33),
) -> AugmentationPreset:
    """X-ray and other projection / 2D images: detector blur, noise, processing curves (gamma,
    contrast).

    Spatial: left-right flips, in-plane rotation up to +-10 degrees, scaling 0.85 to 1.2, no
    elastic deformation (projections of rigid anatomy).
    """
    intensity: list[RandomIntensityTransform] = [
        GaussianBlur(prob=blur_prob, sigma=blur_sigma),
        GaussianNoise(prob=noise_prob, std=noise_std),
        Gamma(prob=gamma_prob, gamma=gamma),
        Contrast(prob=contrast_prob, factor=contrast),
    ]
    spatial = SpatialAugmentation(
        flip_prob=(0.5, 0.0, 0.0),
        rotate_prob=0.5,
        rotate_range_deg=(0.0, 0.0, 10.0),
        scale_prob=0.5,
        scale_range=(0.85, 1.2),
        elastic_prob=0.0,
    )
    return AugmentationPreset("xr", spatial, intensity, spatial_dims)


def us_preset(
    *,
    spatial_dims: int = 2,
    speckle_prob: float = 0.8,
    speckle_strength: Range = (0.25, 0.8),
    speckle_grain: Range = (1.0, 2.5),
    speckle_distribution: str = "rayleigh",
    blur_prob: float = 0.3,
    blur_sigma: Range = (0.3, 1.0),
    gamma_prob: float = 0.4,
    gamma: Range = (0.7, 1.5),
    contrast_prob: float = 0.4,
    contrast: Range = (0.75, 1.33),
) -> AugmentationPreset:
    """Ultrasound: speckle with random strength and grain, beam blur, gain/compression curves.

    Spatial: left-right flips, in-plane rotation up to +-10 degrees, scaling 0.85 to 1.2, light
    elastic deformation (probe pressure).
    """
    intensity: list[RandomIntensityTransform] = [
        Speckle(prob=speckle_prob, strength=speckle_strength, grain=speckle_grain, distribution=speckle_distribution),
        GaussianBlur(prob=blur_prob, sigma=blur_sigma),
        Gamma(prob=gamma_prob, gamma=gamma),
        Contrast(prob=contrast_prob, factor=contrast),
    ]
    spatial = SpatialAugmentation(
        flip_prob=(0.5, 0.0, 0.0),
        rotate_prob=0.5,
        rotate_range_deg=(0.0, 0.0, 10.0),
        scale_prob=0.5,
        scale_range=(0.85, 1.2),
        elastic_prob=0.1,
        elastic_magnitude=2.0,
    )
    return AugmentationPreset("us", spatial, intensity, spatial_dims)


def none_preset(*, spatial_dims: int = 3) -> AugmentationPreset:
    """No augmentation: exact crops, no intensity change (evaluation, pretext tasks, ablations)."""
    return AugmentationPreset("none", SpatialAugmentation.identity(), [], spatial_dims)


#: registry name -> builder (keyword-only arguments are the preset's overrides)
PRESETS: dict[str, Callable[..., AugmentationPreset]] = {
    "ct": ct_preset,
    "mr": mr_preset,
    "xr": xr_preset,
    "us": us_preset,
    "none": none_preset,
}

_COMMON_OVERRIDES = ("spatial", "intensity", "clip")


def list_presets() -> list[str]:
    """The preset names, sorted."""
    return sorted(PRESETS)


def preset_arguments(name: str) -> dict[str, Any]:
    """The overridable arguments of preset ``name`` with their defaults."""
    builder = _builder(name)
    params = inspect.signature(builder).parameters
    return {key: p.default for key, p in params.items()}


def _builder(name: str) -> Callable[..., AugmentationPreset]:
    key = str(name).lower()
    if key not in PRESETS:
        raise ConfigError(f"unknown augmentation preset {name!r}; known: {', '.join(list_presets())}")
    return PRESETS[key]


def _merge_spatial(base: SpatialAugmentation, override: Any, preset: str) -> SpatialAugmentation:
    if override is None:
        return base
    if isinstance(override, SpatialAugmentation):
        return override
    if not isinstance(override, Mapping):
        raise ConfigError(f"preset {preset!r}: spatial must be a mapping of SpatialAugmentation fields, got {override!r}")
    known = {f.name for f in dataclasses.fields(SpatialAugmentation)}
    unknown = sorted(set(override) - known)
    if unknown:
        raise ConfigError(f"preset {preset!r}: spatial has unknown fields {unknown}; known: {sorted(known)}")
    values = {}
    for key, value in override.items():  # YAML gives lists where the dataclass holds tuples
        if isinstance(value, list):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        values[key] = value
    return base.with_changes(**values)


def build_preset(name: str, /, **overrides: Any) -> AugmentationPreset:
    """Build preset ``name`` (see :func:`list_presets`) with ``overrides`` of its arguments.

    Raises :class:`ConfigError` for an unknown name or argument, naming the allowed ones.
    """
    builder = _builder(name)
    accepted = set(inspect.signature(builder).parameters)
    common = {key: overrides.pop(key) for key in _COMMON_OVERRIDES if key in overrides}
    unknown = sorted(set(overrides) - accepted)
    if unknown:
        raise ConfigError(
            f"preset {name!r} does not take {', '.join(unknown)}; it takes "
            f"{', '.join(sorted(accepted | set(_COMMON_OVERRIDES)))}"
        )
    spatial_dims = overrides.get("spatial_dims", 3)
    if spatial_dims not in (2, 3):
        raise ConfigError(f"preset {name!r}: spatial_dims={spatial_dims} must be 2 or 3")
    try:
        preset = builder(**overrides)
    except TypeError as exc:  # a wrongly typed override (a string where a range was expected)
        raise ConfigError(f"preset {name!r}: invalid override ({exc})") from None
    preset.spatial = _merge_spatial(preset.spatial, common.get("spatial"), preset.name)
    if "intensity" in common:
        entries = common["intensity"] or []
        preset.intensity = [build_from_spec(entry) for entry in entries]
    if "clip" in common:
        clip = common["clip"]
        preset.clip = None if clip is None else (float(clip[0]), float(clip[1]))
    logger.debug("built augmentation preset %s", preset.describe())
    return preset
