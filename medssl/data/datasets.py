"""The pretraining dataset: SSL views and pretext pairs from cached volumes.

Every item is built from the preprocessing cache (:class:`~medssl.data.cache.PreprocessedCache`:
memory-mapped, computed once) by one fused resampling per view
(:mod:`medssl.transforms.spatial`), with randomness derived only from ``(seed, epoch, index)``
(:func:`medssl.utils.seeding.make_rng` for the geometry, :func:`make_torch_generator` for
intensity), so an item is the same whichever worker, and however many workers, produce it.

:func:`build_pretrain_dataset` -> :class:`PretrainDataset`: items ``{"views": [Tensor(C, *patch),
...]}`` (global views first, then DINO local crops; with ``view_mode: voco`` base crops, then random
crops, and an ``"overlaps"`` tensor) for joint-embedding methods, or
``{"input": ..., "target": ...}`` from a pretext task applied to one plain crop. With
``aug_cfg.device_side`` the views come without the intensity part and
:meth:`PretrainDataset.batch_augment` applies it batched on the training device.

``set_epoch`` sets the epoch in the calling process; :func:`medssl.data.loaders.make_dataloader`
(and the engine, which builds its loader with it) passes the epoch to worker processes with each
index. The labeled patches of fine-tuning are in :mod:`medssl.data.labeled_patches`; this module
re-exports them and the loader helpers for existing callers.

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

import logging
from typing import Any, Callable, Sequence

import numpy as np
import torch

from medssl.config import AugmentationConfig, DataConfig
from medssl.data.cache import CachedCase, PreprocessedCache, cached_case
from medssl.data.cache_requests import CacheRequest, requests_from_entries, usable_entries
from medssl.data.labeled_patches import LabeledPatchDataset, load_labeled_case
from medssl.data.loaders import CachedItemsDataset, limited_threads, make_dataloader, worker_init_fn
from medssl.data.slices import check_slice_context, resolve_slice_axis, slice_with_context
from medssl.errors import ConfigError, DataError
from medssl.transforms.spatial import SpatialAugmentation
from medssl.transforms.views import MultiCropGenerator, TwoViewGenerator
from medssl.transforms.voco_crops import VoCoCropGenerator
from medssl.utils.seeding import make_rng, make_torch_generator

logger = logging.getLogger(__name__)

IntensityFn = Callable[[torch.Tensor, torch.Generator], torch.Tensor]

#: ``LabeledPatchDataset``, ``load_labeled_case`` (:mod:`medssl.data.labeled_patches`),
#: ``make_dataloader``, ``worker_init_fn``, ``limited_threads`` (:mod:`medssl.data.loaders`) and
#: ``usable_entries`` (:mod:`medssl.data.cache_requests`) are re-exported for existing callers.
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


class PretrainDataset(CachedItemsDataset):
    """Unlabeled SSL items from cached volumes (see the module docstring and
    :func:`build_pretrain_dataset`, which builds it from the config); epochs, length and item
    threads as :class:`~medssl.data.loaders.CachedItemsDataset`.

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
        self._epoch = 0

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
        case = cached_case(self.cache, request)
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


