"""The intensity transforms by name: one import point and a small registry for configs.

Each transform lives in the module of its concept (noise, contrast, filters, CT windows, bias
field, k-space artefacts, speckle); this module gathers them so a config can list transforms by
name (``build_intensity_transform("gamma", prob=0.3, gamma=[0.7, 1.5])``) and so presets and users
import from one place.

Example:
    >>> t = build_intensity_transform("hu_noise", prob=1.0, std_hu=[10, 20])
    >>> type(t).__name__
    'HUGaussianNoise'
    >>> "gibbs" in list_intensity_transforms()
    True
"""

from __future__ import annotations

import inspect
from typing import Any, Mapping

from medssl.errors import ConfigError
from medssl.transforms.intensity_base import RandomIntensityTransform
from medssl.transforms.intensity_bias_field import BiasField
from medssl.transforms.intensity_contrast import Contrast, Gamma, IntensityScale
from medssl.transforms.intensity_ct import TISSUE_WINDOWS, HounsfieldScale, HUGaussianNoise, RandomWindow
from medssl.transforms.intensity_filters import GaussianBlur, ResolutionLoss
from medssl.transforms.intensity_kspace import Ghosting, GibbsRinging, KSpaceSpikes, Motion
from medssl.transforms.intensity_noise import GaussianNoise, RicianNoise
from medssl.transforms.intensity_randomization import RandomIntensityCurve, RandomInversion
from medssl.transforms.intensity_speckle import Speckle

__all__ = [
    "INTENSITY_TRANSFORMS",
    "TISSUE_WINDOWS",
    "BiasField",
    "Contrast",
    "Gamma",
    "GaussianBlur",
    "GaussianNoise",
    "Ghosting",
    "GibbsRinging",
    "HUGaussianNoise",
    "HounsfieldScale",
    "IntensityScale",
    "KSpaceSpikes",
    "Motion",
    "RandomIntensityCurve",
    "RandomIntensityTransform",
    "RandomInversion",
    "RandomWindow",
    "ResolutionLoss",
    "RicianNoise",
    "Speckle",
    "build_from_spec",
    "build_intensity_transform",
    "list_intensity_transforms",
]

#: registry name -> transform class
INTENSITY_TRANSFORMS: dict[str, type[RandomIntensityTransform]] = {
    "window": RandomWindow,
    "hu_noise": HUGaussianNoise,
    "gaussian_noise": GaussianNoise,
    "rician_noise": RicianNoise,
    "gamma": Gamma,
    "contrast": Contrast,
    "intensity_scale": IntensityScale,
    "blur": GaussianBlur,
    "resolution_loss": ResolutionLoss,
    "bias_field": BiasField,
    "gibbs": GibbsRinging,
    "spikes": KSpaceSpikes,
    "ghosting": Ghosting,
    "motion": Motion,
    "speckle": Speckle,
    "inversion": RandomInversion,
    "intensity_curve": RandomIntensityCurve,
}


def list_intensity_transforms() -> list[str]:
    """Registry names of the intensity transforms, sorted."""
    return sorted(INTENSITY_TRANSFORMS)


def build_intensity_transform(name: str, /, **args: Any) -> RandomIntensityTransform:
    """Build one transform by registry name; unknown names or arguments raise :class:`ConfigError`."""
    cls = INTENSITY_TRANSFORMS.get(name)
    if cls is None:
        raise ConfigError(f"unknown intensity transform {name!r}; known: {', '.join(list_intensity_transforms())}")
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(set(args) - accepted)
    if unknown:
        raise ConfigError(
            f"intensity transform {name!r} does not take {', '.join(unknown)}; it takes {', '.join(sorted(accepted))}"
        )
    return cls(**args)


def build_from_spec(spec: Mapping[str, Any] | RandomIntensityTransform) -> RandomIntensityTransform:
    """A transform from ``{"name": ..., **args}`` (a config list entry) or an existing transform."""
    if isinstance(spec, RandomIntensityTransform):
        return spec
    if not isinstance(spec, Mapping) or "name" not in spec:
        raise ConfigError(f"an intensity transform entry must be a mapping with a 'name' key, got {spec!r}")
    args = dict(spec)
    return build_intensity_transform(str(args.pop("name")), **args)
