"""medssl.transforms: modality-aware augmentation.

* intensity transforms (:mod:`medssl.transforms.intensity`): batched, per-sample random parameters
  from a CPU ``torch.Generator``, ``transform(x (B, C, *spatial), generator) -> x`` on any device;
* presets (:mod:`medssl.transforms.presets`): ``build_preset(name, **overrides)`` for ``ct``,
  ``mr``, ``xr``, ``us`` (and ``none``): spatial parameters plus the intensity pipeline;
* spatial augmentation (:mod:`medssl.transforms.spatial`) and view generators
  (:mod:`medssl.transforms.views`): one fused resampling per view, two views and multi-crop.

Example:
    >>> from medssl.transforms import build_preset, list_presets
    >>> list_presets()
    ['ct', 'mr', 'none', 'us', 'xr']
"""

from medssl.transforms.intensity import (
    INTENSITY_TRANSFORMS,
    TISSUE_WINDOWS,
    HounsfieldScale,
    RandomIntensityTransform,
    build_intensity_transform,
    list_intensity_transforms,
)
from medssl.transforms.presets import AugmentationPreset, build_preset, list_presets
from medssl.transforms.spatial import SpatialAugmentation
from medssl.transforms.views import MultiCropGenerator, TwoViewGenerator

__all__ = [
    "INTENSITY_TRANSFORMS",
    "TISSUE_WINDOWS",
    "AugmentationPreset",
    "HounsfieldScale",
    "MultiCropGenerator",
    "RandomIntensityTransform",
    "SpatialAugmentation",
    "TwoViewGenerator",
    "build_intensity_transform",
    "build_preset",
    "list_intensity_transforms",
    "list_presets",
]
