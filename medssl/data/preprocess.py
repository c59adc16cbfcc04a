"""The deterministic part of preprocessing: orientation, spacing, intensity to [0, 1], foreground crop.

Computed once per volume and configuration and stored by :mod:`medssl.data.cache`; everything
random (crops, flips, noise) happens later, per view. The steps, in order:

1. **Orientation**: loading already gives RAS+ (``nibabel.as_closest_canonical``); a volume built by
   hand in another order is reoriented with MONAI's ``Orientation`` (a pure axis permutation and
   flip, no interpolation) and a debug message.
2. **Spacing**: MONAI ``Spacing`` to ``target_spacing`` millimetres (trilinear, nearest or cubic
   B-spline for the image; the mask is resampled onto the image's output grid with
   ``ResampleToMatch`` in nearest-neighbour mode, so image and mask always share one grid, even when
   the mask came with a slightly different header). A 2D image (``Z == 1``) keeps its ``z`` spacing.
3. **Intensity**: CT is clipped to the Hounsfield window ``ct_window = (a, b)`` and scaled,
   ``x' = (clip(x, a, b) - a) / (b - a)`` (MONAI ``ScaleIntensityRange``). Other modalities are
   scaled between the ``(p_low, p_high)`` percentiles of their foreground,
   ``x' = clip((x - P_low) / (P_high - P_low), 0, 1)``, per channel, where the foreground for the
   statistics is every voxel above the channel's minimum (the background of an MR, usually exactly
   its minimum, is left out; MONAI's ``ScaleIntensityRangePercentiles`` has no foreground mask,
   which is the gap filled here).
4. **Foreground crop** (optional): the bounding box of voxels whose normalised intensity exceeds
   ``foreground_threshold`` in any channel, or that are labelled in the mask, widened by
   ``crop_margin`` voxels (MONAI ``generate_spatial_bounding_box``); image and mask get the same
   box and the affine is shifted so world coordinates are unchanged.

Example:
    >>> import numpy as np
    >>> from medssl.config import PreprocessConfig
    >>> from medssl.io.volume import Volume
    >>> ct = Volume(np.full((1, 8, 8, 4), -1000.0, np.float32), np.diag([3.0, 3.0, 6.0, 1.0]), "CT")
    >>> ct.array[0, 2:6, 2:6, 1:3] = 40.0
    >>> out, _ = preprocess_volume(ct, PreprocessConfig(target_spacing=(1.5, 1.5, 1.5), crop_margin=0))
    >>> out.spacing, round(float(out.array.max()), 4)  # (40 + 1000) / 2000
    ((1.5, 1.5, 1.5), 0.52)
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from medssl.config import PreprocessConfig
from medssl.errors import DataError
from medssl.io.volume import Volume

logger = logging.getLogger(__name__)

_IMAGE_MODES = {"linear": "bilinear", "nearest": "nearest", "bspline": 3}

__all__ = ["preprocess_volume", "normalise_intensity", "foreground_box", "percentile_window"]


def _source_name(volume: Volume) -> str:
    return str(volume.meta.get("source", volume.meta.get("path", "<volume>")))


def _to_meta_tensor(volume: Volume):
    from monai.data import MetaTensor

    return MetaTensor(torch.from_numpy(np.ascontiguousarray(volume.array)), affine=torch.from_numpy(volume.affine))


def _from_meta_tensor(tensor, modality: str, meta: dict[str, Any]) -> Volume:
    array = tensor.detach().cpu().numpy() if isinstance(tensor, torch.Tensor) else np.asarray(tensor)
    affine = tensor.affine.detach().cpu().numpy().astype(np.float64)
    return Volume(np.ascontiguousarray(array, dtype=np.float32), affine, modality, meta)


def percentile_window(channel: np.ndarray, percentiles: tuple[float, float]) -> tuple[float, float]:
    """``(P_low, P_high)`` of the voxels above the channel's minimum (all voxels if none is).

    Example:
        >>> x = np.concatenate([np.zeros(1000), np.linspace(1, 100, 1000)])
        >>> [round(v, 1) for v in percentile_window(x, (0.0, 100.0))]
        [1.0, 100.0]
    """
    values = np.asarray(channel, np.float32).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    foreground = values[values > values.min()]
    if foreground.size == 0:
        foreground = values
    low, high = np.percentile(foreground, percentiles)
    return float(low), float(high)


def normalise_intensity(volume: Volume, cfg: PreprocessConfig) -> tuple[Volume, list[tuple[float, float]]]:
    """Scale ``volume`` to [0, 1] (CT: Hounsfield window; others: foreground percentiles).

    Returns the new volume and the ``(low, high)`` input window used per channel (recorded in the
    cache sidecar, so a user can map values back to Hounsfield units or raw MR intensity).
    """
    from monai.transforms import ScaleIntensityRange

    array = np.nan_to_num(volume.array, nan=0.0, posinf=0.0, neginf=0.0)
    windows: list[tuple[float, float]] = []
    out = np.empty_like(array, dtype=np.float32)
    for c in range(array.shape[0]):
        if volume.modality == "CT":
            low, high = (float(v) for v in cfg.ct_window)
        else:
            low, high = percentile_window(array[c], cfg.mr_percentiles)
        if high <= low:  # a constant channel: map it to 0 rather than divide by zero
            logger.warning("%s: channel %d is constant (%.4g); it becomes 0 after normalisation",
                           _source_name(volume), c, low)
            out[c] = 0.0
        else:
            scale = ScaleIntensityRange(a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True)
            out[c] = np.asarray(scale(array[c]), np.float32)
        windows.append((low, high))
    return Volume(out, volume.affine, volume.modality, dict(volume.meta)), windows


def foreground_box(
    image: np.ndarray, threshold: float, margin: int, mask: np.ndarray | None = None
) -> tuple[list[int], list[int]]:
    """``(start, end)`` (end exclusive) of voxels above ``threshold`` in any channel, or labelled in
    ``mask``, widened by ``margin`` voxels and clipped to the array; the whole array when empty."""
    from monai.transforms.utils import generate_spatial_bounding_box

    selected = (image > threshold).any(axis=0, keepdims=True)
    if mask is not None:
        selected = selected | (mask > 0).any(axis=0, keepdims=True)
    if not selected.any():
        return [0, 0, 0], list(image.shape[1:])
    start, end = generate_spatial_bounding_box(selected, select_fn=lambda x: x, margin=margin, allow_smaller=True)
    start = [max(0, int(s)) for s in start]
    end = [min(int(e), n) for e, n in zip(end, image.shape[1:])]
    return start, end


def _crop(volume: Volume, start: list[int], end: list[int]) -> Volume:
    index = (slice(None),) + tuple(slice(s, e) for s, e in zip(start, end))
    shift = np.eye(4)
    shift[:3, 3] = start
    return Volume(np.ascontiguousarray(volume.array[index]), volume.affine @ shift, volume.modality, volume.meta)


def _check_mask(volume: Volume, mask: Volume) -> None:
    if mask.num_channels != 1:
        raise DataError(
            f"mask for {_source_name(volume)} has {mask.num_channels} channels; expected one label map "
            "(integer labels in one channel)"
        )


def preprocess_volume(
    volume: Volume, cfg: PreprocessConfig, mask: Volume | None = None
) -> tuple[Volume, Volume | None]:
    """Orientation, spacing, intensity normalisation and optional foreground crop (module docstring).

    Deterministic: the same volume and configuration give the same bytes. The returned image is
    float32 in [0, 1]; the mask (if any) holds the integer labels (nearest-neighbour resampling)
    as float32 on the image's grid. ``meta["preprocess"]`` records the source spacing and shape,
    the intensity windows and the crop box.
    """
    from monai.transforms import Orientation, ResampleToMatch, Spacing

    if mask is not None:
        _check_mask(volume, mask)
    source_spacing = volume.spacing
    source_shape = volume.spatial_shape
    meta = dict(volume.meta)
    image = _to_meta_tensor(volume)
    if volume.orientation != "RAS":
        logger.debug("%s: reorienting %s to RAS", _source_name(volume), volume.orientation)
        image = Orientation(axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))(image)
    if cfg.target_spacing is not None:
        target = list(cfg.target_spacing)
        if source_shape[2] == 1:  # a 2D image keeps its single slice
            target[2] = source_spacing[2]
        spacing = Spacing(pixdim=target, mode=_IMAGE_MODES[cfg.interpolation], padding_mode="border",
                          dtype=np.float32)
        image = spacing(image)
    resampled = _from_meta_tensor(image, volume.modality, meta)
    out_mask: Volume | None = None
    if mask is not None:
        mask_tensor = _to_meta_tensor(mask)
        same_grid = (mask.spatial_shape == resampled.spatial_shape
                     and np.allclose(mask.affine, resampled.affine, atol=1e-3))
        if not same_grid:
            if not (mask.spatial_shape == source_shape and np.allclose(mask.affine, volume.affine, atol=1e-3)):
                logger.warning("mask of %s has another geometry than its image (shape %s vs %s); "
                               "resampling it onto the image grid", _source_name(volume),
                               mask.spatial_shape, source_shape)
            mask_tensor = ResampleToMatch(mode="nearest", padding_mode="zeros", dtype=np.float32)(
                mask_tensor, img_dst=image)
        out_mask = _from_meta_tensor(mask_tensor, "SEG", dict(mask.meta))
        out_mask.array = np.rint(out_mask.array).astype(np.float32)
    normalised, windows = normalise_intensity(resampled, cfg)
    box = ([0, 0, 0], list(normalised.spatial_shape))
    if cfg.crop_foreground:
        box = foreground_box(normalised.array, cfg.foreground_threshold, cfg.crop_margin,
                             None if out_mask is None else out_mask.array)
        normalised = _crop(normalised, *box)
        if out_mask is not None:
            out_mask = _crop(out_mask, *box)
    normalised.meta["preprocess"] = {
        "source_spacing": list(source_spacing),
        "source_shape": list(source_shape),
        "intensity_windows": [list(w) for w in windows],
        "crop_start": list(box[0]),
        "crop_end": list(box[1]),
    }
    return normalised, out_mask
