"""Datasets that keep the model fed: SSL views and pretext pairs, labeled patches, and their loaders.

Every item is built from the preprocessing cache (:class:`~medssl.data.cache.PreprocessedCache`:
memory-mapped, computed once) by one fused resampling per view
(:mod:`medssl.transforms.spatial`), with randomness derived only from ``(seed, epoch, index)``
(:func:`medssl.utils.seeding.make_rng` for the geometry, :func:`make_torch_generator` for
intensity), so an item is the same whichever worker, and however many workers, produce it.

* :func:`build_pretrain_dataset` -> :class:`PretrainDataset`: items ``{"views": [Tensor(C, *patch),
  ...]}`` (global views first, then DINO local crops; with ``view_mode: voco`` base crops, then
  random crops, and an ``"overlaps"`` tensor) for joint-embedding methods, or
  ``{"input": ..., "target": ...}`` from a pretext task applied to one plain crop. With
  ``aug_cfg.device_side`` the views come without the intensity part and
  :meth:`PretrainDataset.batch_augment` applies it batched on the training device.
* :class:`LabeledPatchDataset`: fine-tuning patches ``{"image": (C, *patch), "mask": (1, *patch)}``
  centred on a labelled voxel with probability ``pos / (pos + neg)`` (as MONAI's
  ``RandCropByPosNegLabeld``), image and mask resampled with the same geometry;
  :func:`load_labeled_case` gives a whole preprocessed case for sliding-window evaluation.
* :func:`make_dataloader`: persistent workers, each limited to ``worker_threads`` torch threads
  (:func:`worker_init_fn`), pinned memory when CUDA is present.

The epoch lives in a shared-memory tensor, so ``set_epoch`` on the main process reaches
persistent workers (set it before ``iter(loader)``, as the loader dispatches the epoch's first
indices then).

Example:
    >>> import tempfile, numpy as np, pandas as pd
    >>> from medssl.config import AugmentationConfig, DataConfig, PreprocessConfig
    >>> from medssl.data.cache import PreprocessedCache
    >>> from medssl.io.volume import Volume
    >>> from medssl.io.nifti import save_volume
    >>> root = tempfile.mkdtemp()
    >>> ct = np.random.default_rng(0).uniform(-1000, 1000, (1, 24, 24, 24)).astype(np.float32)
    >>> _ = save_volume(Volume(ct, np.eye(4), "CT"), f"{root}/ct.nii.gz")
    >>> data_cfg = DataConfig(root=root, preprocess=PreprocessConfig(target_spacing=None))
    >>> aug_cfg = AugmentationConfig(preset="none", patch_size=(16, 16, 16))
    >>> cache = PreprocessedCache(f"{root}/cache", data_cfg.preprocess)
    >>> entries = pd.DataFrame({"path": ["ct.nii.gz"], "modality": ["CT"]})
    >>> dataset = build_pretrain_dataset(data_cfg, aug_cfg, entries, seed=0, cache=cache)
    >>> [tuple(v.shape) for v in dataset[0]["views"]]
    [(1, 16, 16, 16), (1, 16, 16, 16)]
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections import OrderedDict
from dataclasses import replace
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from medssl.config import AugmentationConfig, DataConfig
from medssl.data.cache import (
    CacheRequest,
    CachedCase,
    PreprocessedCache,
    redacted_reason,
    request_from_row,
    request_name,
    requests_from_entries,
)
from medssl.data.slices import check_slice_context, in_plane_axes, resolve_slice_axis, slice_with_context
from medssl.errors import ConfigError, DataError, DiskFullError, MedsslError
from medssl.transforms.spatial import SpatialAugmentation, draw_view_geometry, sample_patch
from medssl.transforms.views import MultiCropGenerator, TwoViewGenerator, _extent, valid_centre_range
from medssl.transforms.voco_crops import VoCoCropGenerator
from medssl.utils.seeding import make_rng, make_torch_generator

logger = logging.getLogger(__name__)

IntensityFn = Callable[[torch.Tensor, torch.Generator], torch.Tensor]

__all__ = [
    "PretrainDataset",
    "LabeledPatchDataset",
    "build_pretrain_dataset",
    "load_labeled_case",
    "make_dataloader",
    "worker_init_fn",
    "usable_entries",
    "limited_threads",
]


def usable_entries(entries: Any, modalities: Sequence[str] | None = None) -> Any:
    """The rows of a manifest that can be used: ``status == "ok"`` (when the column exists) and,
    when ``modalities`` is given, a ``modality`` among them. Raises :class:`DataError` when none is."""
    import pandas as pd

    if isinstance(entries, (list, tuple)):
        entries = pd.DataFrame([{"path": str(e)} if isinstance(e, (str, os.PathLike)) else dict(e) for e in entries])
    if not isinstance(entries, pd.DataFrame):
        raise DataError(f"entries must be a DataFrame with a 'path' column, got {type(entries).__name__}")
    if "path" not in entries.columns:
        raise DataError("entries have no 'path' column (the image file or series folder of each volume)")
    table = entries
    if "status" in table.columns:
        table = table[table["status"].fillna("ok").astype(str) == "ok"]
    if modalities:
        if "modality" not in table.columns:
            raise DataError(f"data.modalities={list(modalities)} needs a 'modality' column in the manifest")
        wanted = {m.upper() for m in modalities}
        table = table[table["modality"].astype(str).str.upper().isin(wanted)]
    if table.empty:
        raise DataError(f"no usable volume among {len(entries)} manifest rows (status 'ok'"
                        + (f" and modality in {list(modalities)})" if modalities else ")"))
    return table.reset_index(drop=True)


class _SharedEpoch:
    """An epoch counter in shared memory: visible to (persistent) loader workers after a fork or spawn."""

    def __init__(self) -> None:
        self.value = torch.zeros((), dtype=torch.int64).share_memory_()

    def set(self, epoch: int) -> None:
        self.value.fill_(int(epoch))

    def get(self) -> int:
        return int(self.value.item())


@contextlib.contextmanager
def limited_threads(threads: int | None) -> Iterator[None]:
    """Run the block with at most ``threads`` torch threads (None: unchanged), then restore.

    Items are built from many small tensor operations (a 96^3 patch is under a million voxels);
    torch's intra-op threads gain little on them and lose a lot when the cores are busy with the
    model or other processes (OpenMP threads spin at each barrier): measured on a loaded 2-core
    machine, one view took 6 ms with one thread and 25 ms with two. Loader workers already run one
    thread; this gives items built in the main process (``num_workers=0``) the same setting.
    """
    if threads is None or torch.get_num_threads() <= threads:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _get_case(cache: PreprocessedCache, request: CacheRequest) -> CachedCase:
    """The cached case of ``request``; a failure names the volume by its pseudonymous key, never its
    location (a volume that changed or vanished after the cache was warmed), a full disk stays one."""
    try:
        return cache.get(request.image, request.mask, request.series_uid, modality=request.modality,
                         label=request_name(request))
    except DiskFullError:
        raise
    except (MedsslError, OSError, ValueError) as exc:
        raise DataError(f"volume {request_name(request)} cannot be loaded from the preprocessing cache: "
                        f"{redacted_reason(request, exc)}") from None


class PretrainDataset(Dataset):
    """Unlabeled SSL items from cached volumes (see the module docstring and
    :func:`build_pretrain_dataset`, which builds it from the config).

    Args:
        requests: one :class:`CacheRequest` per volume.
        cache: the preprocessing cache.
        views: a :class:`TwoViewGenerator` or :class:`MultiCropGenerator` (joint-embedding items).
        seed: the run seed.
        intensity: ``f(x (B, C, *S), generator) -> x``, the preset's intensity part, or None.
        pretext: a pretext task ``task(patch, generator) -> (input, target)``; items become pairs.
        pretext_views: the generator of the single crop a pretext task receives.
        pretext_intensity: apply ``intensity`` to that crop first (for tasks that want it).
        device_side: leave ``intensity`` to :meth:`batch_augment` (views only).
        samples_per_volume: items per volume per epoch (item ``i`` reads volume ``i // k``).
        threads: torch threads while building an item (:func:`limited_threads`; None: unchanged).
        slice_axis: 2D views of a 3D volume come from one slice along this axis (``"auto"``: the
            axis with the largest spacing, :func:`medssl.data.slices.resolve_slice_axis`), drawn
            uniformly from ``(seed, epoch, index)``; all views of an item share that slice.
        slice_context: neighbouring slices on each side as extra channels (2.5D).
    """

    def __init__(
        self,
        requests: Sequence[CacheRequest],
        cache: PreprocessedCache,
        views: TwoViewGenerator | MultiCropGenerator,
        *,
        seed: int,
        intensity: IntensityFn | None = None,
        pretext: Callable[[torch.Tensor, torch.Generator], tuple[Any, Any]] | None = None,
        pretext_views: TwoViewGenerator | None = None,
        pretext_intensity: bool = False,
        device_side: bool = False,
        samples_per_volume: int = 1,
        threads: int | None = 1,
        slice_axis: str | int = "auto",
        slice_context: int = 0,
    ):
        if not requests:
            raise DataError("a pretraining dataset needs at least one volume")
        if slice_axis != "auto":
            resolve_slice_axis(slice_axis, (1.0, 1.0, 1.0))  # refuses anything but auto, 0, 1, 2
        self.slice_axis = slice_axis
        self.slice_context = check_slice_context(slice_context)
        self.requests = list(requests)
        self.cache = cache
        self.views = views
        self.seed = int(seed)
        self.intensity = intensity
        self.pretext = pretext
        if pretext is not None and pretext_views is None:
            pretext_views = TwoViewGenerator(SpatialAugmentation.identity(), views_patch_size(views), num_views=1)
        self.pretext_views = pretext_views
        self.pretext_intensity = bool(pretext_intensity)
        self.device_side = bool(device_side)
        self.samples_per_volume = int(samples_per_volume)
        self.threads = threads
        self._epoch = _SharedEpoch()

    # -- epochs and size
    def set_epoch(self, epoch: int) -> None:
        """Items of ``epoch`` from now on (in this process and in persistent workers)."""
        self._epoch.set(epoch)

    @property
    def epoch(self) -> int:
        return self._epoch.get()

    def __len__(self) -> int:
        return len(self.requests) * self.samples_per_volume

    @property
    def batch_kind(self) -> str:
        return "views" if self.pretext is None else "pretext"

    # -- items
    def generators(self, index: int) -> tuple[np.random.Generator, torch.Generator]:
        """The geometry and intensity generators of item ``index`` in the current epoch."""
        epoch = self.epoch
        return (make_rng(self.seed, "views", epoch, index),
                make_torch_generator(self.seed, "intensity", epoch, index))

    def _intensity(self, view: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.intensity(view[None], generator)[0]  # type: ignore[misc]

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        with limited_threads(self.threads):
            return self._item(index)

    def image_of(self, case: CachedCase, index: int) -> np.ndarray:
        """What item ``index``'s views are cropped from: the volume, or for 2D views one slice of it
        (with its 2.5D neighbours) along the slice axis, ``(C', A, B, 1)``."""
        if len(views_patch_size(self.views)) != 2:
            return case.image
        axis = resolve_slice_axis(self.slice_axis, case.spacing, case.image.shape)
        count = int(case.image.shape[1 + axis])
        slice_index = int(make_rng(self.seed, "slice", self.epoch, index).integers(count))
        return slice_with_context(case.image, axis, slice_index, self.slice_context)

    def _item(self, index: int) -> dict[str, Any]:
        request = self.requests[index // self.samples_per_volume]
        case = _get_case(self.cache, request)
        rng, generator = self.generators(index)
        source = self.image_of(case, index)
        if self.pretext is not None:
            assert self.pretext_views is not None
            (patch,) = self.pretext_views(source, rng)
            if self.pretext_intensity and self.intensity is not None:
                patch = self._intensity(patch, generator)
            inputs, target = self.pretext(patch, generator)
            return {"input": inputs, "target": target}
        views = self.views(source, rng)
        extras: dict[str, Any] = {}
        if isinstance(views, dict):  # a generator with labels beside its views (VoCo's overlaps)
            extras = {key: value for key, value in views.items() if key != "views"}
            views = views["views"]
        if self.intensity is not None and not self.device_side:
            views = [self._intensity(v, generator) for v in views]
        return {"views": views, **extras}

    def batch_augment(self, batch: dict[str, Any], generator: torch.Generator) -> dict[str, Any]:
        """The intensity part on a collated batch, on its device (``device_side`` mode).

        Each view position is augmented in turn, batched over the samples, with per-sample
        parameters drawn from ``generator`` (a CUDA generator is reduced to a CPU one seeded from
        its seed, as the transforms draw their parameters on the CPU). For a batch of one, this is
        exactly the in-worker path with the same generator. A no-op when not ``device_side``.
        """
        if not self.device_side or self.intensity is None or "views" not in batch:
            return batch
        if generator.device.type != "cpu":
            generator = torch.Generator().manual_seed(generator.initial_seed())
        out = dict(batch)
        out["views"] = [self.intensity(v, generator) for v in batch["views"]]
        return out


def views_patch_size(views: TwoViewGenerator | MultiCropGenerator | VoCoCropGenerator) -> tuple[int, ...]:
    return views.globals.patch_size if isinstance(views, MultiCropGenerator) else views.patch_size


def _build_views(aug_cfg: AugmentationConfig, spatial: SpatialAugmentation
                 ) -> TwoViewGenerator | MultiCropGenerator | VoCoCropGenerator:
    if aug_cfg.view_mode == "voco":
        if aug_cfg.local_crops > 0 or aug_cfg.shared_geometry:
            raise ConfigError("augmentation.view_mode: voco makes its own crops; it does not combine with "
                              "local_crops > 0 or shared_geometry")
        try:
            return VoCoCropGenerator(aug_cfg.patch_size, aug_cfg.voco_base_grid, aug_cfg.voco_random_crops,
                                     padding_mode=spatial.padding_mode)
        except ValueError as exc:
            raise ConfigError(f"augmentation.voco_base_grid / patch_size: {exc}") from exc
    if aug_cfg.local_crops > 0:
        if aug_cfg.shared_geometry:
            raise ConfigError("augmentation.shared_geometry makes every view the same crop; it does not combine "
                              "with local_crops > 0 (multi-crop)")
        if aug_cfg.local_patch_size is None:
            raise ConfigError("augmentation.local_crops > 0 needs augmentation.local_patch_size "
                              "(for example [16, 16, 16] beside a patch_size of [32, 32, 32])")
        return MultiCropGenerator(spatial, aug_cfg.patch_size, aug_cfg.local_patch_size, aug_cfg.local_crops,
                                  overlap=aug_cfg.view_overlap, measure=aug_cfg.overlap_measure,
                                  num_global=aug_cfg.num_views)
    return TwoViewGenerator(spatial, aug_cfg.patch_size, aug_cfg.view_overlap, aug_cfg.overlap_measure,
                            num_views=aug_cfg.num_views, shared_geometry=aug_cfg.shared_geometry)


def _build_preset(aug_cfg: AugmentationConfig):
    from medssl.transforms.presets import build_preset

    args = dict(aug_cfg.args)
    if aug_cfg.spatial:
        args["spatial"] = {**dict(args.get("spatial") or {}), **aug_cfg.spatial}
    args.setdefault("spatial_dims", len(aug_cfg.patch_size))
    return build_preset(aug_cfg.preset, **args)


def build_pretrain_dataset(
    data_cfg: DataConfig,
    aug_cfg: AugmentationConfig,
    entries: Any,
    *,
    seed: int,
    cache: PreprocessedCache | None = None,
    pretext: Any = None,
    preset: Any = None,
) -> PretrainDataset:
    """The pretraining dataset for a manifest (``entries``: DataFrame with ``path`` relative to
    ``data_cfg.root`` or absolute, optional ``series_uid``, ``files``, ``modality``, ``status``).

    ``preset`` defaults to ``build_preset(aug_cfg.preset, **aug_cfg.args)`` with
    ``aug_cfg.spatial`` merged into its spatial part; ``pretext`` is a task object or a name for
    ``medssl.pretext.build_pretext`` (then items are ``{"input", "target"}`` from one plain crop,
    with intensity augmentation only when the task has ``wants_intensity_augmentation = True``);
    ``cache`` defaults to one in ``data_cfg.cache_dir``.
    """
    table = usable_entries(entries, data_cfg.modalities)
    if cache is None:
        if not data_cfg.cache_dir:
            raise ConfigError("data.cache_dir is not set: the preprocessing cache needs a folder")
        cache = PreprocessedCache(data_cfg.cache_dir, data_cfg.preprocess)
    if preset is None:
        preset = _build_preset(aug_cfg)
    spatial = preset.spatial
    if aug_cfg.spatial and not isinstance(spatial, SpatialAugmentation):
        raise ConfigError("augmentation.spatial needs a preset with a SpatialAugmentation")
    views = _build_views(aug_cfg, spatial)
    intensity = preset.apply_intensity if getattr(preset, "intensity", None) else None
    task = pretext
    if isinstance(pretext, str):
        from medssl.pretext import build_pretext  # type: ignore[attr-defined]

        task = build_pretext(pretext, spatial_dims=len(aug_cfg.patch_size))
    requests = requests_from_entries(table, data_cfg.root)
    return PretrainDataset(
        requests, cache, views, seed=seed, intensity=intensity, pretext=task,
        pretext_intensity=bool(getattr(task, "wants_intensity_augmentation", False)),
        device_side=aug_cfg.device_side, samples_per_volume=data_cfg.samples_per_volume,
        threads=data_cfg.worker_threads, slice_axis=aug_cfg.slice_axis, slice_context=aug_cfg.slice_context,
    )


# ---------------------------------------------------------------------------------------------
# fine-tuning


class LabeledPatchDataset(Dataset):
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
    ):
        if pos < 0 or neg < 0 or pos + neg <= 0:
            raise ConfigError(f"pos={pos} and neg={neg} must be >= 0 with a positive sum")
        if centre_labels is not None and (not len(centre_labels) or min(int(v) for v in centre_labels) < 1):
            raise ConfigError(f"centre_labels={list(centre_labels)} must list mask values >= 1")
        table = usable_entries(entries)
        self.requests = [request_from_row(row, root) for _, row in table.iterrows()]
        self.unlabeled = bool(unlabeled)
        missing = [i for i, r in enumerate(self.requests) if r.mask is None]
        if missing and not self.unlabeled:
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
        self._epoch = _SharedEpoch()
        self._index_cache = max(1, int(index_cache))
        self.centre_labels = None if centre_labels is None else tuple(int(v) for v in centre_labels)
        self._foreground: OrderedDict[str, Any] = OrderedDict()
        if slice_axis != "auto":
            resolve_slice_axis(slice_axis, (1.0, 1.0, 1.0))  # refuses anything but auto, 0, 1, 2
        self.slice_axis = slice_axis
        self.slice_context = check_slice_context(slice_context)
        self._slice_spatial: dict[int, SpatialAugmentation] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_foreground"] = OrderedDict()
        return state

    def set_epoch(self, epoch: int) -> None:
        self._epoch.set(epoch)

    @property
    def epoch(self) -> int:
        return self._epoch.get()

    def __len__(self) -> int:
        return len(self.requests) * self.samples_per_volume

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

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        with limited_threads(self.threads):
            return self._item(index)

    def _item(self, index: int) -> dict[str, torch.Tensor]:
        volume_index = index // self.samples_per_volume
        case = _get_case(self.cache, self.requests[volume_index])
        epoch = self.epoch
        rng = make_rng(self.seed, "labeled-patch", epoch, index)
        d = len(self.patch_size)
        spatial, image_source, mask_source = self.spatial, case.image, case.mask
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
        intensity = self.intensity
        if intensity is not None and hasattr(intensity, "for_modality"):  # a recipe per case modality
            preset = intensity.for_modality(case.modality)
            intensity = preset.apply_intensity if preset is not None else None
        if intensity is not None:
            generator = make_torch_generator(self.seed, "labeled-intensity", epoch, index)
            image = intensity(image[None], generator)[0]
        item = {"image": image}
        if mask_source is not None:
            mask = sample_patch(mask_source, geometry, mode="nearest", padding_mode="zeros")
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
    case = _get_case(cache, request)
    image = torch.from_numpy(np.asarray(case.image, dtype=np.float32).copy())
    mask = torch.from_numpy(np.asarray(case.mask).astype(np.int64))
    return image, mask


# ---------------------------------------------------------------------------------------------
# loaders


def _limit_threads(threads: int, worker_id: int) -> None:
    torch.set_num_threads(max(1, int(threads)))
    os.environ["OMP_NUM_THREADS"] = str(max(1, int(threads)))


def worker_init_fn(threads: int = 1) -> Callable[[int], None]:
    """A picklable ``worker_init_fn`` that limits each loader worker to ``threads`` torch threads, so
    ``N`` workers and the training process do not oversubscribe the cores (torch's default is one
    thread per core in every process)."""
    return functools.partial(_limit_threads, threads)


def make_dataloader(
    dataset: Dataset,
    batch_size: int,
    num_workers: int = 0,
    sampler: Sampler | None = None,
    *,
    shuffle: bool = False,
    drop_last: bool = False,
    worker_threads: int = 1,
    pin_memory: bool | None = None,
    prefetch_factor: int = 2,
    persistent_workers: bool = True,
    collate_fn: Callable | None = None,
    multiprocessing_context: str | None = None,
) -> DataLoader:
    """A ``DataLoader`` with persistent workers limited to ``worker_threads`` threads each and
    pinned memory when CUDA is available. Determinism comes from the dataset (items depend on
    ``(seed, epoch, index)``) and the sampler (e.g. :class:`medssl.engine.sampler.EpochSampler`),
    not from the workers."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if num_workers < 0:
        raise ConfigError(f"num_workers must be >= 0, got {num_workers}")
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    kwargs: dict[str, Any] = {}
    if num_workers > 0:
        kwargs.update(worker_init_fn=worker_init_fn(worker_threads), persistent_workers=persistent_workers,
                      prefetch_factor=prefetch_factor)
        if multiprocessing_context:
            kwargs["multiprocessing_context"] = multiprocessing_context
    if collate_fn is not None:
        kwargs["collate_fn"] = collate_fn
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle if sampler is None else False,
                      sampler=sampler, num_workers=num_workers, drop_last=drop_last, pin_memory=pin_memory,
                      **kwargs)
