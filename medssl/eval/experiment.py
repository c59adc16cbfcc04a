"""One supervised run: train on some labeled cases from one initialisation, score the test cases.

:func:`train_and_evaluate` is the unit a label-efficiency study repeats over budgets, seeds and
initialisations (and what ``medssl finetune`` runs once). Given the labeled data, the case ids to
train on (and to validate and test on), an initialisation (``scratch`` or an exported
``encoder.pt``) and a seed, it:

* ``study.evaluation: finetune``, ``finetune.task: segmentation``: builds the segmentation network
  (:func:`~medssl.eval.networks.build_finetune_model`), trains it on random labeled patches
  (:class:`medssl.data.labeled_patches.LabeledPatchDataset`, positive centres with probability
  ``pos_fraction``, balanced over the classes with ``class_balanced``, flips/small
  rotations/scaling when ``augment``), predicts each test volume by
  sliding window and scores Dice, HD95 and surface Dice per case; a 2D encoder on 3D volumes is
  the slice track: 2D (or 2.5D, ``slice_context``) patches of slices along ``finetune.slice_axis``,
  every slice predicted and stacked back into the volume, the same 3D metrics; the patches'
  intensities are augmented by ``finetune.intensity_augmentation`` (``none``, ``mild``,
  ``contrast_randomization``), the same recipe for every init;
* ``finetune.task: classification``: encoder + head trained with cross-entropy on whole volumes
  (:class:`~medssl.eval.cases.WholeVolumeDataset`) or labeled patches, per-case probabilities;
* ``linear_probe`` / ``knn_probe``: the frozen encoder's pooled features of the whole volumes,
  a logistic regression / kNN fitted on the training cases, per-case probabilities.

It returns the per-case table (:class:`RunOutcome`) and a record of what happened (steps, losses,
seconds, which weights transferred). Deterministic for a seed on CPU.

Example::

    outcome = train_and_evaluate(config, data, "runs/simclr/encoder.pt", train_ids=ids[:4],
                                 test_ids=test_ids, seed=0)
    outcome.per_case[["case_id", "dice"]]
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from medssl.config import Config, FinetuneConfig
from medssl.data.cache_requests import MASK_COLUMNS
from medssl.errors import ConfigError
from medssl.eval.cases import LabeledCase, WholeVolumeDataset, whole_volume_input
from medssl.eval.data import LabeledData
from medssl.eval.evaluate import classifier_input_size, evaluate_segmentation, predict_classification
from medssl.eval.finetune import finetune_classification, finetune_segmentation
from medssl.eval.geometry import finetune_spatial_augmentation
from medssl.eval.metrics import classification_table
from medssl.eval.networks import SCRATCH, build_finetune_model, is_scratch, load_encoder
from medssl.eval.probes import extract_features, knn_k_used, knn_probe, linear_probe
from medssl.utils.devices import resolve_device
from medssl.utils.seeding import seed_everything

log = logging.getLogger(__name__)


@dataclass
class RunOutcome:
    """The per-case table of one run and a JSON-able record of the run."""

    per_case: pd.DataFrame
    record: dict[str, Any] = field(default_factory=dict)
    model: Any = None


def dataset_patch_size(cfg: FinetuneConfig, spatial_dims: int) -> tuple[int, ...]:
    """The patch size a dataset samples: 2 sizes for a 2D network, 3 for a 3D one."""
    size = tuple(int(s) for s in cfg.patch_size)
    if spatial_dims == 2:
        return size[:2]
    if len(size) != 3:
        raise ConfigError(f"finetune.patch_size {size} needs 3 sizes for a 3D encoder")
    return size


def scratch_encoder_config(config: Config, inits: dict[str, str | None] | None = None) -> dict[str, Any]:
    """The architecture a scratch init trains: that of the first pretrained init (read from its model
    card, so scratch and pretrained compare the same network), else ``pretrain.encoder``."""
    from medssl.models import read_card

    for name, path in (inits or {}).items():
        if not is_scratch(path):
            card = read_card(path)
            log.debug("scratch uses the encoder architecture of init %s", name)
            return dict(card["encoder"])
    return config.pretrain.encoder.model_dump()


def finetune_intensity_augmentation(cfg: FinetuneConfig, spatial_dims: int, ct_window: Sequence[float]):
    """The intensity recipe of ``finetune.intensity_augmentation`` (None for ``none``), the same for
    every arm; see :mod:`medssl.transforms.finetune_intensity`."""
    from medssl.transforms.finetune_intensity import FinetuneIntensity

    recipe = FinetuneIntensity(cfg.intensity_augmentation, cfg.intensity_args, ct_window=ct_window,
                               spatial_dims=spatial_dims)
    return recipe if recipe.active else None


def _patch_dataset(data: LabeledData, ids: Sequence[str], cfg: FinetuneConfig, spatial_dims: int, seed: int,
                   label_column: str | None, ct_window: Sequence[float] = (-1000.0, 1000.0), *,
                   samples_per_volume: int | None = None):
    return _recipe_patches(data, data.entries_for(list(ids)), cfg, spatial_dims, seed,
                           finetune_intensity_augmentation(cfg, spatial_dims, ct_window),
                           samples_per_volume=samples_per_volume, label_column=label_column)


def _recipe_patches(data: LabeledData, entries: pd.DataFrame, cfg: FinetuneConfig, spatial_dims: int, seed: int,
                    intensity: Any, *, samples_per_volume: int | None = None, label_column: str | None = None,
                    masks: Sequence[np.ndarray] | None = None):
    """The fine-tuning recipe's patches of ``entries``: centres, geometry, structure contrast and
    ``intensity`` as ``finetune`` says; ``masks`` in place of the rows' own annotation."""
    from medssl.data.labeled_patches import LabeledPatchDataset

    pos = float(cfg.pos_fraction)
    return LabeledPatchDataset(
        data.cache, entries, dataset_patch_size(cfg, spatial_dims), seed=seed,
        spatial=finetune_spatial_augmentation(cfg.augment), pos=pos, neg=1.0 - pos, intensity=intensity,
        samples_per_volume=samples_per_volume or max(1, cfg.batch_size), label_column=label_column,
        centre_labels=balanced_centre_labels(cfg), slice_axis=cfg.slice_axis, slice_context=cfg.slice_context,
        structure_contrast=finetune_structure_contrast(cfg), masks=None if masks is None else list(masks),
    )


def pseudo_labeled_patch_dataset(data: LabeledData, rows: pd.DataFrame, masks: Sequence[np.ndarray],
                                 cfg: FinetuneConfig, spatial_dims: int, seed: int, strong: Any,
                                 ct_window: Sequence[float] = (-1000.0, 1000.0)):
    """Self-training's pseudo-labeled patches: the labeled recipe (centres, geometry, intensity
    augmentation, structure contrast) on the kept unlabeled volumes with their pseudo-label
    ``masks``; with ``finetune.semi.pseudo_view: strong`` the ``strong`` view replaces the labeled
    intensity augmentation (Noisy Student's noise on the student's input)."""
    if cfg.semi.pseudo_view == "labeled":
        strong = finetune_intensity_augmentation(cfg, spatial_dims, ct_window)
    rows = rows.drop(columns=[c for c in MASK_COLUMNS if c in rows.columns]).reset_index(drop=True)
    return _recipe_patches(data, rows, cfg, spatial_dims, seed + 15485863, strong, masks=masks)


def unlabeled_volumes(data: LabeledData, ids: Sequence[str], extra: pd.DataFrame | None = None) -> list[Any]:
    """Self-training's unlabeled volumes: the cases ``ids`` (their annotation kept for diagnostics
    only), then the ``extra`` manifest rows (absolute paths), each loaded from the preprocessing
    cache when it is predicted."""
    from medssl.data.cache import cached_case
    from medssl.data.cache_requests import request_from_row
    from medssl.eval.self_training import UnlabeledVolume

    entries = data.entries_for(list(ids)) if ids else pd.DataFrame()
    volumes = [UnlabeledVolume(str(case_id), dict(row), (lambda c=str(case_id): data.cases[c]))
               for case_id, (_, row) in zip(ids, entries.iterrows())]

    def load_extra(row: dict[str, Any], name: str) -> LabeledCase:
        case = cached_case(data.cache, request_from_row(row))
        return LabeledCase(name, case.image, None, spacing=case.spacing)

    if extra is not None:
        bare = extra.drop(columns=[c for c in MASK_COLUMNS if c in extra.columns])
        for i, (_, row) in enumerate(bare.iterrows()):
            name = f"unlabeled-{i}"
            volumes.append(UnlabeledVolume(name, dict(row), (lambda r=dict(row), n=name: load_extra(r, n))))
    return volumes


def finetune_structure_contrast(cfg: FinetuneConfig):
    """The per-structure intensity offsets of ``finetune.structure_contrast`` (None when 0 or for
    classification), over the task's mask values; see :mod:`medssl.transforms.structure_contrast`."""
    from medssl.transforms.structure_contrast import StructureContrast

    if cfg.structure_contrast <= 0 or cfg.task != "segmentation":
        return None
    structures = list(cfg.mask_labels) if cfg.mask_labels else list(range(1, cfg.num_classes))
    return StructureContrast(tuple(structures), cfg.structure_contrast, cfg.structure_contrast_shift)


def slice_track_encoder_config(encoder_config: Any, init: str | os.PathLike | None, cfg: FinetuneConfig,
                               image_channels: int) -> Any:
    """The encoder config of a 2D (slice-track) run with its input channels set by the data.

    A 2D network on slices takes ``image_channels * (2 * slice_context + 1)`` channels
    (:func:`medssl.data.slices.context_channels`): a scratch encoder is built with that many; a
    pretrained one must have been pretrained with as many (``pretrain.augmentation.slice_context``).
    3D encoders are returned unchanged.

    Raises:
        ConfigError: a pretrained 2D encoder takes another number of input channels.
    """
    from medssl.data.slices import context_channels
    from medssl.models import read_card

    config = dict(encoder_config.model_dump() if hasattr(encoder_config, "model_dump") else encoder_config)
    if int(config.get("spatial_dims", 3)) != 2:
        return encoder_config
    wanted = context_channels(image_channels, cfg.slice_context)
    if is_scratch(init):
        return dict(config, in_channels=wanted)
    card_encoder = dict(read_card(init).get("encoder") or {})
    found = int(card_encoder.get("in_channels", 1))
    if int(card_encoder.get("spatial_dims", 2)) == 2 and found != wanted:
        raise ConfigError(f"finetune.slice_context={cfg.slice_context} on {image_channels}-channel images gives "
                          f"{wanted} input channels, but the pretrained 2D encoder takes {found}: pretrain it with "
                          f"pretrain.augmentation.slice_context={cfg.slice_context} (and in_channels {wanted}), or "
                          "fine-tune with the slice_context it was pretrained with")
    return encoder_config


def unlabeled_patch_dataset(data: LabeledData, ids: Sequence[str], cfg: FinetuneConfig, spatial_dims: int,
                            seed: int, extra: pd.DataFrame | None = None):
    """Unlabeled patches for consistency training: the cases ``ids`` (never test cases) used without
    their annotation, then the ``extra`` unlabeled volumes (manifest rows with absolute paths), patch
    centres uniform over each volume, the same mild geometry as the labeled patches; an annotation,
    where there is one, rides along as ``"truth"`` for diagnostics only."""
    from medssl.data.labeled_patches import LabeledPatchDataset

    rows = [data.entries_for(list(ids))] if ids else []
    if extra is not None and len(extra):
        rows.append(extra.drop(columns=[c for c in ("mask", "mask_path") if c in extra.columns]))
    if not rows:
        return None
    entries = pd.concat(rows, ignore_index=True)
    return LabeledPatchDataset(
        data.cache, entries, dataset_patch_size(cfg, spatial_dims), seed=seed + 104729,
        spatial=finetune_spatial_augmentation(cfg.augment), samples_per_volume=max(1, cfg.batch_size),
        unlabeled=True, slice_axis=cfg.slice_axis, slice_context=cfg.slice_context,
    )


def strong_view_for(config: Config, data: LabeledData, spatial_dims: int = 3):
    """The strong view of consistency training: ``finetune.semi.strong`` (a preset name), else the
    preset of the cases' modality (``ct`` for CT, ``mr`` for MR; the CT window of preprocessing)."""
    from medssl.eval.semi_supervised import build_strong_view

    semi = config.finetune.semi
    preset = semi.strong
    if preset is None:
        modalities = data.table["modality"].astype(str).str.upper() if "modality" in data.table.columns else None
        modality = modalities.mode().iat[0] if modalities is not None and len(modalities) else "CT"
        preset = {"CT": "ct", "MR": "mr", "CR": "xr", "DX": "xr", "US": "us"}.get(modality, "ct")
        log.debug("semi-supervised strong view: preset %s (modality %s)", preset, modality)
    args = dict(semi.strong_args)
    if preset == "ct":
        args.setdefault("ct_window", tuple(config.data.preprocess.ct_window))
    return build_strong_view(preset, spatial_dims=spatial_dims, **args)


def balanced_centre_labels(cfg: FinetuneConfig) -> list[int] | None:
    """The mask values whose voxels are drawn class-balanced as patch centres
    (``finetune.class_balanced``): ``mask_labels``, or ``1 .. num_classes - 1`` when the mask is
    used as it is; None without class balancing."""
    if not cfg.class_balanced:
        return None
    return list(cfg.mask_labels) if cfg.mask_labels else list(range(1, cfg.num_classes))


def _long_classification(data: LabeledData, test_ids: Sequence[str], probabilities: np.ndarray) -> pd.DataFrame:
    targets = [data.cases[c].label for c in test_ids]
    return classification_table(list(test_ids), targets, probabilities)


def whole_volume_features(config: Config, data: LabeledData, init: str | os.PathLike | None,
                          encoder_config: Any) -> dict[str, np.ndarray]:
    """Pooled features of every case's whole volume from the frozen encoder of ``init`` (probes)."""
    seed_everything(config.seed)  # a scratch encoder's random weights depend on the run seed only
    encoder, _ = load_encoder(init, encoder_config)
    device = resolve_device(config.finetune.device, "finetune.device")
    encoder.to(device)
    size = classifier_input_size(config.finetune)
    ids = list(data.cases)
    inputs = (whole_volume_input(data.cases[c].image_tensor(), size) for c in ids)
    features = extract_features(encoder, inputs, batch_size=config.finetune.sliding_window_batch_size, device=device)
    return dict(zip(ids, features))


def _self_train(config: Config, data: LabeledData, teacher: Any, encoder_config: Any, init: Any,
                train_ids: Sequence[str], val_ids: Sequence[str], seed: int, unlabeled_ids: Sequence[str],
                unlabeled_entries: pd.DataFrame | None):
    """``finetune.semi.method: self_training`` (:mod:`medssl.eval.self_training`): ``teacher`` is the
    network already built; the student is built the same way."""
    from medssl.eval.self_training import self_train_segmentation

    cfg, dims, window = config.finetune, teacher.spatial_dims, config.data.preprocess.ct_window
    strong = strong_view_for(config, data, dims) if cfg.semi.pseudo_view == "strong" else None
    built = [teacher]

    def build_model():
        if built:
            return built.pop()
        return build_finetune_model("segmentation", encoder_config, init, num_classes=cfg.num_classes, seed=seed,
                                    network_args=cfg.network_args, transfer_decoder=cfg.transfer_decoder)

    return self_train_segmentation(
        build_model,
        lambda per_volume: _patch_dataset(data, train_ids, cfg, dims, seed, None, window, samples_per_volume=per_volume),
        lambda rows, masks: pseudo_labeled_patch_dataset(data, rows, masks, cfg, dims, seed, strong, window),
        unlabeled_volumes(data, unlabeled_ids, unlabeled_entries), cfg, seed=seed,
        validation=data.subset(list(val_ids)), num_workers=config.data.num_workers,
    )


def train_and_evaluate(
    config: Config,
    data: LabeledData,
    init: str | os.PathLike | None,
    *,
    train_ids: Sequence[str],
    test_ids: Sequence[str],
    val_ids: Sequence[str] = (),
    seed: int,
    encoder_config: Any | None = None,
    features: dict[str, np.ndarray] | None = None,
    keep_model: bool = False,
    unlabeled_ids: Sequence[str] = (),
    unlabeled_entries: pd.DataFrame | None = None,
) -> RunOutcome:
    """Train on ``train_ids`` from ``init`` and score ``test_ids`` (module docstring).

    With ``finetune.semi.method`` other than ``none`` (segmentation), the cases ``unlabeled_ids``
    and the manifest rows ``unlabeled_entries`` are the unlabeled volumes of consistency training
    (an annotation is never used to train)."""
    cfg, study = config.finetune, config.study
    if not train_ids or not test_ids:
        raise ConfigError(f"a run needs training and test cases (got {len(train_ids)} and {len(test_ids)})")
    overlap = set(train_ids) & set(test_ids)
    if overlap:
        raise ConfigError(f"case(s) {sorted(overlap)[:5]} are both training and test cases")
    leaked = set(unlabeled_ids) & (set(test_ids) | set(val_ids))
    if leaked:
        raise ConfigError(f"case(s) {sorted(leaked)[:5]} are both unlabeled training and test/validation cases")
    if cfg.network != "auto":
        raise ConfigError(f"finetune.network={cfg.network!r}: the network follows the encoder (resnet* -> FlexibleUNet, "
                          "segresnet -> SegResNet, swin -> SwinUNETR, ...); leave it 'auto' and pass its options in "
                          "finetune.network_args")
    encoder_config = encoder_config if encoder_config is not None else config.pretrain.encoder.model_dump()
    started = time.perf_counter()
    record: dict[str, Any] = {"init": SCRATCH if is_scratch(init) else str(init), "seed": seed,
                              "n_train": len(train_ids), "n_test": len(test_ids), "n_val": len(val_ids)}
    model = None
    if study.evaluation in ("linear_probe", "knn_probe"):
        if features is None:
            features = whole_volume_features(config, data, init, encoder_config)
        x_train = np.stack([features[c] for c in train_ids])
        y_train = [data.cases[c].label for c in train_ids]
        x_test = np.stack([features[c] for c in test_ids])
        if study.evaluation == "linear_probe":
            probabilities = linear_probe(x_train, y_train, x_test, num_classes=cfg.num_classes, C=study.probe_c)
        else:
            probabilities = knn_probe(x_train, y_train, x_test, num_classes=cfg.num_classes, k=study.knn_k)
            record["knn_k"] = knn_k_used(study.knn_k, len(train_ids))
        per_case = _long_classification(data, test_ids, probabilities)
        record["feature_dim"] = int(x_train.shape[1])
    elif cfg.task == "segmentation":
        image_channels = int(data.cases[train_ids[0]].image.shape[0])
        encoder_config = slice_track_encoder_config(encoder_config, init, cfg, image_channels)
        model = build_finetune_model("segmentation", encoder_config, init, num_classes=cfg.num_classes, seed=seed,
                                     network_args=cfg.network_args, transfer_decoder=cfg.transfer_decoder)
        unlabeled_ids = [c for c in unlabeled_ids if c not in set(train_ids)]
        if cfg.semi.method != "none":
            n_extra = 0 if unlabeled_entries is None else len(unlabeled_entries)
            record.update(semi=cfg.semi.method, n_unlabeled=len(unlabeled_ids) + n_extra)
        if cfg.semi.method == "self_training":  # a teacher on the labels, then a student: the student is evaluated
            model, history = _self_train(config, data, model, encoder_config, init, train_ids, val_ids, seed,
                                         unlabeled_ids, unlabeled_entries)
        else:
            patches = _patch_dataset(data, train_ids, cfg, model.spatial_dims, seed, None,
                                     config.data.preprocess.ct_window)
            unlabeled, strong = None, None
            if cfg.semi.method != "none":
                unlabeled = unlabeled_patch_dataset(data, unlabeled_ids, cfg, model.spatial_dims, seed,
                                                    unlabeled_entries)
                strong = strong_view_for(config, data, model.spatial_dims)
            history = finetune_segmentation(model, patches, cfg, seed=seed, validation=data.subset(list(val_ids)),
                                            num_workers=config.data.num_workers, unlabeled=unlabeled, strong=strong)
        per_case = evaluate_segmentation(model, data.subset(list(test_ids)), cfg)
        record.update(history=history.as_dict(), transfer=model.transfer_summary(), spatial_dims=model.spatial_dims,
                      intensity_augmentation=cfg.intensity_augmentation)
        if model.spatial_dims == 2:
            record.update(slice_axis=cfg.slice_axis, slice_context=cfg.slice_context)
    else:
        unlabeled, strong = None, None
        if cfg.semi.method == "self_training":
            raise ConfigError("finetune.semi.method=self_training is for segmentation; for classification use "
                              "mean_teacher, uda or fixmatch")
        if cfg.semi.method != "none":
            if cfg.classification_input != "whole" or unlabeled_entries is not None:
                raise ConfigError("semi-supervised classification uses whole volumes of the labels table's pool: set "
                                  "finetune.classification_input=whole and leave study.unlabeled unset")
            unlabeled_ids = [c for c in unlabeled_ids if c not in set(train_ids)]
            if unlabeled_ids:
                unlabeled = WholeVolumeDataset(data.subset(unlabeled_ids), classifier_input_size(cfg), seed=seed + 104729,
                                               flip_prob=0.5 if cfg.augment else 0.0, unlabeled=True)
            strong = strong_view_for(config, data, int(encoder_config.get("spatial_dims", 3))
                                     if isinstance(encoder_config, dict) else 3)
            record.update(semi=cfg.semi.method, n_unlabeled=len(unlabeled_ids))
        model = build_finetune_model("classification", encoder_config, init, num_classes=cfg.num_classes, seed=seed,
                                     network_args=cfg.network_args)
        if cfg.classification_input == "whole":
            dataset = WholeVolumeDataset(data.subset(list(train_ids)), classifier_input_size(cfg), seed=seed,
                                         flip_prob=0.5 if cfg.augment else 0.0)
        else:
            dataset = _patch_dataset(data, train_ids, cfg, model.spatial_dims, seed, "label",
                                     config.data.preprocess.ct_window)
        history = finetune_classification(model, dataset, cfg, seed=seed, validation=data.subset(list(val_ids)),
                                          num_workers=config.data.num_workers, unlabeled=unlabeled, strong=strong)
        per_case = predict_classification(model, data.subset(list(test_ids)), cfg)
        record.update(history=history.as_dict(), transfer=model.transfer_summary())
    record["seconds"] = round(time.perf_counter() - started, 3)
    if model is not None and not keep_model:
        model.network.to("cpu")
        model = None
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return RunOutcome(per_case.reset_index(drop=True), record, model)
