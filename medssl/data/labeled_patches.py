"""Labeled patches for fine-tuning, and whole labeled cases for evaluation, from the preprocessing cache.

* :class:`LabeledPatchDataset`: fine-tuning patches ``{"image": (C, *patch), "mask": (1, *patch)}``
  centred on a labelled voxel with probability ``pos / (pos + neg)`` (as MONAI's
  ``RandCropByPosNegLabeld``), image and mask resampled with the same geometry (one fused
  resampling, :mod:`medssl.transforms.spatial`); randomness from ``(seed, epoch, index)`` only.
* :func:`load_labeled_case`: a whole preprocessed case for sliding-window evaluation.

Used by :mod:`medssl.eval`; loaded with :func:`medssl.data.loaders.make_dataloader`.

Example:
    >>> import tempfile, numpy as np, pandas as pd
    >>> from medssl.config import PreprocessConfig
    >>> from medssl.data.cache import PreprocessedCache
    >>> from medssl.io import Volume, save_volume
    >>> root = tempfile.mkdtemp()
    >>> image = np.random.default_rng(0).uniform(-500, 500, (1, 16, 16, 16)).astype(np.float32)
    >>> mask = np.zeros((1, 16, 16, 16), np.float32); mask[0, 6:10, 6:10, 6:10] = 1
    >>> _ = save_volume(Volume(image, np.eye(4), "CT"), f"{root}/ct.nii.gz")
    >>> _ = save_volume(Volume(mask, np.eye(4), "OT"), f"{root}/seg.nii.gz")
    >>> cache = PreprocessedCache(f"{root}/cache", PreprocessConfig(target_spacing=None, crop_foreground=False))
    >>> rows = pd.DataFrame({"path": ["ct.nii.gz"], "mask_path": ["seg.nii.gz"], "modality": ["CT"]})
    >>> patches = LabeledPatchDataset(cache, rows, (8, 8, 8), seed=0, root=root)
    >>> {k: tuple(v.shape) for k, v in patches[0].items()}
    {'image': (1, 8, 8, 8), 'mask': (1, 8, 8, 8)}
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import replace
from typing import Any, Callable, Sequence

import numpy as np
import torch

from medssl.data.cache import CachedCase, PreprocessedCache, cached_case
from medssl.data.cache_requests import request_from_row, request_name, usable_entries
from medssl.data.loaders import CachedItemsDataset
from medssl.data.slices import check_slice_context, in_plane_axes, resolve_slice_axis, slice_with_context
from medssl.errors import ConfigError, DataError
from medssl.transforms.spatial import SpatialAugmentation, draw_view_geometry, sample_patch
from medssl.transforms.structure_contrast import StructureContrast
from medssl.transforms.views import _extent, valid_centre_range
from medssl.utils.seeding import make_rng, make_torch_generator

IntensityFn = Callable[[torch.Tensor, torch.Generator], torch.Tensor]

__all__ = ["LabeledPatchDataset", "load_labeled_case"]


class LabeledPatchDataset(CachedItemsDataset):
    """Random labeled patches for fine-tuning: ``{"image": (C, *patch) float32, "mask": (1, *patch)
    int64}`` (plus ``"label"`` when ``label_column`` is given).

    The patch centre is a labelled voxel (``mask > 0``) with probability ``pos / (pos + neg)``,
    otherwise a background voxel (``mask == 0``), as MONAI's ``RandCropByPosNegLabeld``; it is
    moved inwards when the patch would leave the volume. With ``centre_labels`` a positive centre
    is drawn class-balanced, as MONAI's ``RandCropByLabelClassesd``: first one of the listed mask
    values present in the case (equal probabilities), then a voxel of that value; a small organ is
    then the centre as often as a large one (with plain positives the kidneys of the synthetic CT
    are a fifth of the liver's centres). The patch geometry (``spatial``: flips,
    rotations, scaling, elastic) is drawn once and applied to the image (trilinear) and the mask
    (nearest neighbour), so they stay aligned. ``intensity`` (``f(x (B, C, *S), generator)``, or an
    object whose ``for_modality(case modality)`` gives a preset or None, such as
    :class:`medssl.transforms.finetune_intensity.FinetuneIntensity`) augments the image only.
    ``structure_contrast`` (:class:`medssl.transforms.structure_contrast.StructureContrast`) first
    moves each annotated structure's intensities by its own random offset, from the patch's mask (a
    2.5D patch's neighbour slices by their own annotation); never on ``unlabeled`` items.
    Randomness from ``(seed, epoch, index)`` only. The labelled voxels of the ``index_cache`` most
    recent cases are kept per process (bounded memory).

    2D patches (two ``patch_size`` entries) of a 3D volume come from one slice: the centre is drawn
    in 3D as above, its coordinate along ``slice_axis`` (``auto``: per case, the axis with the
    largest spacing, :func:`medssl.data.slices.resolve_slice_axis`) picks the slice, and the patch
    is cut around the centre's two in-plane coordinates; ``slice_context`` neighbouring slices on
    each side become extra image channels (2.5D, :func:`medssl.data.slices.slice_with_context`).
    Flips of ``spatial`` keep their meaning per volume axis (``flip_prob`` of x applies to the
    slice's x axis, when it is in plane).

    Args:
        cache: the preprocessing cache.
        entries: manifest rows with ``path`` and a mask column (``mask_path``, ``mask``...).
        patch_size: 2 or 3 sizes.
        seed: the run seed.
        spatial: the spatial augmentation (None: plain crops).
        pos, neg: the positive/negative centre ratio.
        samples_per_volume: items per case per epoch.
        root: folder that relative paths start from.
        label_column: a case-level label column to return as ``"label"``.
        threads: torch threads while building an item (:func:`limited_threads`).
        centre_labels: mask values to balance positive centres over (None: any ``mask > 0``).
        unlabeled: the cases are used without their annotation (consistency training): the centre is
            drawn uniformly over the volume (the mask is never looked at), masks are optional, and
            an available mask is returned as ``"truth"`` (for diagnostics only; -1 everywhere for a
            volume without one) instead of ``"mask"``.
        slice_axis: ``"auto"`` or 0, 1, 2: the axis 2D patches are sliced along.
        slice_context: neighbouring slices on each side as extra channels (2D patches).
        structure_contrast: per-structure intensity offsets from the annotation (None: off).
        masks: one mask per row, ``(1, X, Y, Z)`` mask values on the cached image's grid, used in
            place of the row's own (self-training's pseudo-labels, :mod:`medssl.eval.self_training`);
            a row needs no mask column then.
    """

    def __init__(
        self,
        cache: PreprocessedCache,
        entries: Any,
        patch_size: Sequence[int],
        *,
        seed: int,
        spatial: SpatialAugmentation | None = None,
        pos: float = 1.0,
        neg: float = 1.0,
        samples_per_volume: int = 1,
        root: str | os.PathLike | None = None,
        intensity: IntensityFn | None = None,
        label_column: str | None = None,
        index_cache: int = 8,
        threads: int | None = 1,
        centre_labels: Sequence[int] | None = None,
        unlabeled: bool = False,
        slice_axis: str | int = "auto",
        slice_context: int = 0,
        structure_contrast: StructureContrast | None = None,
        masks: Sequence[np.ndarray] | None = None,
    ):
        if pos < 0 or neg < 0 or pos + neg <= 0:
            raise ConfigError(f"pos={pos} and neg={neg} must be >= 0 with a positive sum")
        if centre_labels is not None and (not len(centre_labels) or min(int(v) for v in centre_labels) < 1):
            raise ConfigError(f"centre_labels={list(centre_labels)} must list mask values >= 1")
        table = usable_entries(entries)
        self.requests = [request_from_row(row, root) for _, row in table.iterrows()]
        self.unlabeled = bool(unlabeled)
        self.masks = None if masks is None else [np.asarray(m) for m in masks]
        if self.masks is not None and (self.unlabeled or len(self.masks) != len(self.requests)):
            raise ConfigError(f"masks: one per row for labeled items ({len(self.masks)} masks, {len(self.requests)} rows"
                              f"{', unlabeled' if self.unlabeled else ''})")
        missing = [i for i, r in enumerate(self.requests) if r.mask is None]
        if missing and not self.unlabeled and self.masks is None:
            raise DataError(f"{len(missing)} labeled rows have no mask (first: {request_name(self.requests[missing[0]])}); "
                            "give a mask_path column")
        self.labels = None
        if label_column is not None:
            if label_column not in table.columns:
                raise DataError(f"the labeled entries have no column {label_column!r}")
            self.labels = [int(v) for v in table[label_column]]
        self.cache = cache
        self.patch_size = tuple(int(p) for p in patch_size)
        if len(self.patch_size) not in (2, 3):
            raise ConfigError(f"patch_size {self.patch_size} must have 2 or 3 entries")
        self.spatial = spatial or SpatialAugmentation.identity()
        self.pos_probability = float(pos) / float(pos + neg)
        self.seed = int(seed)
        self.samples_per_volume = int(samples_per_volume)
        self.intensity = intensity
        self.threads = threads
        self._epoch = 0
        self._index_cache = max(1, int(index_cache))
        self.centre_labels = None if centre_labels is None else tuple(int(v) for v in centre_labels)
        self._foreground: OrderedDict[str, Any] = OrderedDict()
        if slice_axis != "auto":
            resolve_slice_axis(slice_axis, (1.0, 1.0, 1.0))  # refuses anything but auto, 0, 1, 2
        self.slice_axis = slice_axis
        self.slice_context = check_slice_context(slice_context)
        self.structure_contrast = None if self.unlabeled else structure_contrast
        self._slice_spatial: dict[int, SpatialAugmentation] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_foreground"] = OrderedDict()
        return state


    def _foreground_indices(self, case: CachedCase) -> list[np.ndarray]:
        """Flat indices of the positive voxels: one array (``mask > 0``), or one array per value of
        ``centre_labels`` present in the case."""
        found = self._foreground.get(case.key)
        if found is None:
            flat_mask = np.asarray(case.mask).reshape(-1)
            if self.centre_labels is None:
                groups = [np.flatnonzero(flat_mask > 0)]
            else:
                groups = [np.flatnonzero(flat_mask == value) for value in self.centre_labels]
            found = [g.astype(np.int32 if g.size == 0 or g.max() < 2**31 else np.int64) for g in groups if g.size]
            self._foreground[case.key] = found
            while len(self._foreground) > self._index_cache:
                self._foreground.popitem(last=False)
        else:
            self._foreground.move_to_end(case.key)
        return found

    def _draw_centre(self, case: CachedCase, rng: np.random.Generator) -> np.ndarray:
        shape = case.mask.shape[1:]  # type: ignore[union-attr]
        positive = rng.random() < self.pos_probability
        tries = rng.random(32)
        groups = self._foreground_indices(case) if positive else None
        if positive and groups:
            foreground = groups[min(int(tries[1] * len(groups)), len(groups) - 1)]
            flat = int(foreground[min(int(tries[0] * foreground.size), foreground.size - 1)])
            return np.asarray(np.unravel_index(flat, shape), np.float64)
        mask = case.mask
        size = int(np.prod(shape))
        for u in tries:  # background voxel by rejection (labels are a minority of a volume)
            flat = min(int(u * size), size - 1)
            voxel = np.unravel_index(flat, shape)
            if mask[(0, *voxel)] == 0:  # type: ignore[index]
                return np.asarray(voxel, np.float64)
        return np.asarray(np.unravel_index(min(int(tries[-1] * size), size - 1), shape), np.float64)

    def _slice_through(self, case: CachedCase, axis: int, centre: np.ndarray
                       ) -> tuple[tuple[np.ndarray, np.ndarray | None], np.ndarray]:
        """The slice along ``axis`` through a 3D ``centre``: the 2D ``(image, mask)`` sources
        ``(C', A, B, 1)`` and ``(1, A, B, 1)`` (None without a mask), and the centre's in-plane
        coordinates."""
        index = int(round(float(centre[axis])))
        image = slice_with_context(case.image, axis, index, self.slice_context)
        mask = None if case.mask is None else slice_with_context(case.mask, axis, index, 0)
        return (image, mask), centre[list(in_plane_axes(axis))]

    def _structure_mask(self, case: CachedCase, mask: torch.Tensor, geometry: Any, axis: int | None,
                        through: np.ndarray | None) -> torch.Tensor:
        """The annotation under the patch for :attr:`structure_contrast`: the patch's ``mask``
        ``(1, *patch)``, or for a 2.5D patch ``(C * (2k + 1), *patch)``, each neighbour slice's own
        annotation under its channels."""
        if axis is None or through is None or self.slice_context == 0:
            return mask
        index = int(round(float(through[axis])))
        around = slice_with_context(case.mask, axis, index, self.slice_context)  # (2k + 1, A, B, 1)
        per_slice = sample_patch(around, geometry, mode="nearest", padding_mode="zeros")
        return per_slice.repeat_interleave(case.image.shape[0], dim=0)

    @staticmethod
    def _uniform_voxel(case: CachedCase, rng: np.random.Generator) -> np.ndarray:
        """A voxel drawn uniformly over the volume (the slice of an unlabeled 2D patch)."""
        shape = np.asarray(case.image.shape[1:], np.float64)
        return np.minimum(np.floor(rng.random(3) * shape), shape - 1)

    def _spatial_for_axis(self, axis: int) -> SpatialAugmentation:
        """``spatial`` with its per-volume-axis flips moved onto the slice's in-plane axes."""
        found = self._slice_spatial.get(axis)
        if found is None:
            flips = tuple(float(self.spatial.flip_prob[a]) for a in in_plane_axes(axis)) + (0.0,)
            found = self.spatial if axis == 2 else self.spatial.with_changes(flip_prob=flips)
            self._slice_spatial[axis] = found
        return found


    def _case(self, volume_index: int) -> CachedCase:
        """The cached case of a row, with its given mask (``masks``) in place of its own."""
        case = cached_case(self.cache, self.requests[volume_index])
        if self.masks is None:
            return case
        mask = self.masks[volume_index]
        if tuple(mask.shape) != (1, *case.image.shape[1:]):
            raise DataError(f"volume {request_name(self.requests[volume_index])}: the given mask has shape "
                            f"{tuple(mask.shape)}, the image {tuple(case.image.shape)}")
        return replace(case, mask=mask, key=f"{case.key}#given-mask")

    def _item(self, index: int) -> dict[str, torch.Tensor]:
        volume_index = index // self.samples_per_volume
        case = self._case(volume_index)
        epoch = self.epoch
        rng = make_rng(self.seed, "labeled-patch", epoch, index)
        d = len(self.patch_size)
        spatial, image_source, mask_source = self.spatial, case.image, case.mask
        through: np.ndarray | None = None
        axis: int | None = None
        if d == 2:
            axis = resolve_slice_axis(self.slice_axis, case.spacing, case.image.shape)
            spatial = self._spatial_for_axis(axis)
        geometry = draw_view_geometry(spatial, self.patch_size, (0.0,) * d, rng)
        if d == 2:  # the slice through a 3D centre (a uniform one without annotation), then in plane
            through = self._uniform_voxel(case, rng) if self.unlabeled else self._draw_centre(case, rng)
            (image_source, mask_source), centre = self._slice_through(case, axis, through)
        low, high = valid_centre_range(_extent(geometry), image_source.shape[1:1 + d])
        if self.unlabeled:  # uniform over the volume: where the annotation lies must not steer the draw
            centre = low + rng.random(d) * (high - low)
        elif d == 3:
            centre = self._draw_centre(case, rng)
        geometry = replace(geometry, centre=tuple(float(c) for c in np.clip(centre[:d], low, high)))
        image = sample_patch(image_source, geometry, padding_mode=spatial.padding_mode)
        mask = None if mask_source is None else sample_patch(mask_source, geometry, mode="nearest",
                                                             padding_mode="zeros")
        if self.structure_contrast is not None and mask is not None:
            image = self.structure_contrast(image, self._structure_mask(case, mask, geometry, axis, through),
                                            make_torch_generator(self.seed, "structure-contrast", epoch, index))
        intensity = self.intensity
        if intensity is not None and hasattr(intensity, "for_modality"):  # a recipe per case modality
            preset = intensity.for_modality(case.modality)
            intensity = preset.apply_intensity if preset is not None else None
        if intensity is not None:
            generator = make_torch_generator(self.seed, "labeled-intensity", epoch, index)
            image = intensity(image[None], generator)[0]
        item = {"image": image}
        if mask is not None:
            item["truth" if self.unlabeled else "mask"] = mask.long()
        elif self.unlabeled:  # -1: no annotation (so batches of annotated and bare volumes collate)
            item["truth"] = torch.full((1, *image.shape[1:]), -1, dtype=torch.long)
        if self.labels is not None:
            item["label"] = torch.tensor(self.labels[volume_index], dtype=torch.long)
        return item


def load_labeled_case(cache: PreprocessedCache, row: Any, root: str | os.PathLike | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """A whole preprocessed case for evaluation: ``(image (C, X, Y, Z) float32, mask (1, X, Y, Z)
    int64)``, copied out of the cache. ``row`` is a manifest row with ``path`` and a mask column."""
    request = request_from_row(row, root)
    if request.mask is None:
        raise DataError(f"{request.image}: the row has no mask column (mask_path, mask, label_path or seg_path)")
    case = cached_case(cache, request)
    image = torch.from_numpy(np.asarray(case.image, dtype=np.float32).copy())
    mask = torch.from_numpy(np.asarray(case.mask).astype(np.int64))
    return image, mask
