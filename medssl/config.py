"""Validated configuration: YAML files, dotted command-line overrides, one pydantic schema.

A config file holds the sections a command needs (``data``, ``pretrain``, ``finetune``, ``study``);
unknown keys are errors (a typo must not silently fall back to a default). Overrides use dotted
keys and YAML values: ``pretrain.optimizer.lr=0.01``, ``study.budgets=[2,4]``.

Example:
    >>> cfg = load_config(None, overrides=["seed=3", "pretrain.method=barlow_twins"])
    >>> cfg.seed, cfg.pretrain.method
    (3, 'barlow_twins')
"""

from __future__ import annotations

import copy
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal, Sequence

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from medssl.errors import ConfigError


def _admits_bool(annotation: Any) -> bool:
    """Whether a field's type takes ``True``/``False`` as such (``bool``, ``Any``, a union or literal
    with a bool, a model)."""
    if annotation is bool or annotation is Any or annotation is object:
        return True
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return any(isinstance(arg, bool) for arg in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return any(_admits_bool(arg) for arg in typing.get_args(annotation))
    return False


def _bool_where_number(annotation: Any, value: Any) -> bool:
    """Whether ``value`` puts a bool where ``annotation`` wants a number (also inside lists/tuples).

    Pydantic's lax mode reads ``True`` as 1 for an ``int`` or ``float`` field, so
    ``pretrain.steps=true`` would train one step; YAML also reads ``yes``/``on`` as booleans.
    """
    if isinstance(value, bool):
        return not _admits_bool(annotation)
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        return len(members) == 1 and _bool_where_number(members[0], value)
    if origin in (list, tuple, set, frozenset) and isinstance(value, (list, tuple)):
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        if not args:
            return False
        if origin is tuple and len(args) == len(value) and len(typing.get_args(annotation)) == len(value):
            return any(_bool_where_number(a, v) for a, v in zip(args, value))
        return any(_bool_where_number(args[0], v) for v in value)
    return False


class Section(BaseModel):
    """Base of every config section: unknown keys are refused, values are validated on assignment,
    and a boolean is never read as a number (``steps: true`` is an error, not one step)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name) if info.field_name else None
        if field is not None and _bool_where_number(field.annotation, value):
            raise ValueError(f"expected a number, got the boolean {value!r} (YAML reads true/false/yes/no/on/off "
                             "as booleans)")
        return value


class PreprocessConfig(Section):
    """The deterministic part of preprocessing, computed once per volume and cached.

    ``target_spacing`` in millimetres (``null`` keeps the native spacing); CT is clipped to the
    Hounsfield window ``ct_window`` and scaled to [0, 1]; MR (and other modalities) is scaled
    between the ``mr_percentiles`` percentiles of its foreground to [0, 1]. With
    ``crop_foreground`` the volume (and its mask) is cropped to the box of voxels whose normalised
    intensity exceeds ``foreground_threshold``, widened by ``crop_margin`` voxels. ``cache_dtype``
    is how the cache stores the normalised image: ``float16`` halves disk and page-cache traffic
    (relative rounding 2^-11, absolute <= 2.4e-4 on [0, 1]); ``float32`` is exact.
    """

    target_spacing: tuple[float, float, float] | None = (1.5, 1.5, 1.5)
    ct_window: tuple[float, float] = (-1000.0, 1000.0)
    mr_percentiles: tuple[float, float] = (0.5, 99.5)
    crop_foreground: bool = True
    foreground_threshold: float = Field(default=0.05, ge=0.0, lt=1.0)
    crop_margin: int = Field(default=4, ge=0)
    interpolation: Literal["linear", "nearest", "bspline"] = "linear"
    cache_dtype: Literal["float16", "float32"] = "float16"

    @field_validator("target_spacing")
    @classmethod
    def _spacing_positive(cls, value):
        if value is not None and any(s <= 0 for s in value):
            raise ValueError("target_spacing must be positive millimetres (or null to keep the native spacing)")
        return value

    @field_validator("ct_window", "mr_percentiles")
    @classmethod
    def _ordered_pair(cls, value):
        if value[0] >= value[1]:
            raise ValueError(f"{value} must be (low, high) with low < high")
        return value


class DataConfig(Section):
    """Where the images are: a manifest (CSV or Parquet, from ``medssl manifest``) or a root folder.

    ``exclude``: a labels table (CSV or Parquet, ``study.labels``): every volume of its patients
    (matched by ``patient_key`` or by ``image`` path) is left out of pretraining, so the encoder never
    sees the scans a study fine-tunes and scores on.
    ``samples_per_volume`` is how many items (each a set of views) one volume gives per epoch;
    ``worker_threads`` caps torch's threads in each loader worker so that workers do not fight the
    model for the same cores.
    """

    manifest: str | None = None
    root: str | None = None
    exclude: str | None = None
    cache_dir: str | None = None
    modalities: list[str] | None = None
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    num_workers: int = Field(default=0, ge=0)
    samples_per_volume: int = Field(default=1, ge=1)
    worker_threads: int = Field(default=1, ge=1)


class EncoderConfig(Section):
    """An encoder from the registry in :mod:`medssl.models` (a MONAI network or its encoder half)."""

    name: str = "resnet10"
    spatial_dims: Literal[2, 3] = 3
    in_channels: int = 1
    args: dict[str, Any] = Field(default_factory=dict)


class AugmentationConfig(Section):
    """Modality-aware views: a preset by name (``ct``, ``mr``, ``xr``, ``us``) and its options.

    ``patch_size`` is the global view's size in voxels (two entries for 2D images); ``num_views``
    global views (the first two with their overlap, measured by ``overlap_measure``: ``iou`` or
    ``fraction`` of the smaller view, drawn in ``view_overlap``) and ``local_crops`` smaller crops of
    ``local_patch_size`` (DINO multi-crop). ``spatial`` overrides fields of the preset's
    :class:`medssl.transforms.spatial.SpatialAugmentation` (``{"elastic_prob": 0.2}``); ``args``
    go to the preset builder. With ``device_side`` the intensity part runs batched on the training
    device (``dataset.batch_augment``) instead of in the loader workers. ``shared_geometry``: the
    views are one crop (same geometry), augmented in intensity only, so their voxels correspond
    (dense methods such as ``local_contrastive`` need it; ``view_overlap`` is then unused).

    2D views (two ``patch_size`` entries) of 3D volumes are cropped from one slice per item, drawn
    uniformly along ``slice_axis`` (``auto``: the axis with the largest voxel spacing, the
    acquisition's slice axis; ties -> the last axis, Z; or 0, 1, 2), with ``slice_context``
    neighbouring slices on each side as extra channels (2.5D; edge slices repeated;
    ``pretrain.encoder.in_channels`` must then be the image channels times ``2 * slice_context + 1``).
    See :mod:`medssl.data.slices`.

    ``view_mode: voco``: VoCo's crops instead (:mod:`medssl.transforms.voco_crops`): a grid of
    ``voco_base_grid`` base crops of ``patch_size`` side by side (default 4 x 4 (x 1), the paper's),
    ``voco_random_crops`` random crops inside that region, and their overlaps (items gain an
    ``overlaps`` tensor); ``num_views``, ``view_overlap`` and the spatial part of the preset are then
    unused (the crops are plain, so the overlaps hold).
    """

    preset: str = "ct"
    patch_size: tuple[int, ...] = (32, 32, 32)
    num_views: int = Field(default=2, ge=1)
    local_crops: int = Field(default=0, ge=0)
    local_patch_size: tuple[int, ...] | None = None
    view_overlap: tuple[float, float] = (0.25, 0.8)
    overlap_measure: Literal["iou", "fraction"] = "iou"
    spatial: dict[str, Any] = Field(default_factory=dict)
    args: dict[str, Any] = Field(default_factory=dict)
    device_side: bool = False
    shared_geometry: bool = False
    slice_axis: Literal["auto", 0, 1, 2] = "auto"
    slice_context: int = Field(default=0, ge=0)
    view_mode: Literal["overlap", "voco"] = "overlap"
    voco_base_grid: tuple[int, ...] | None = None
    voco_random_crops: int = Field(default=4, ge=1)

    @field_validator("view_overlap")
    @classmethod
    def _overlap_range(cls, value):
        low, high = value
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError("view_overlap must be (low, high) with 0 <= low <= high <= 1")
        return value

    @field_validator("patch_size", "local_patch_size")
    @classmethod
    def _patch_dims(cls, value):
        if value is not None and (len(value) not in (2, 3) or any(p < 1 for p in value)):
            raise ValueError("a patch size has 2 (2D) or 3 (3D) positive entries")
        return value


class OptimizerConfig(Section):
    """The optimiser and its learning-rate schedule (see :mod:`medssl.engine.optim`).

    ``lr`` is the peak learning rate reached after ``warmup_steps`` linear warm-up steps, then
    ``schedule`` (cosine decay to ``min_lr_ratio * lr`` at the last step, or constant). With
    ``lr_scaling`` set, the peak is ``lr * (batch_size / reference_batch_size)`` (``linear``, the
    rule of Goyal et al. 2017 used by SimCLR/BYOL/Barlow Twins with SGD or LARS) or
    ``lr * sqrt(batch_size / reference_batch_size)`` (``sqrt``, common with AdamW).
    ``lars_eta`` is LARS's trust coefficient (You et al. 2017); ``betas`` apply to AdamW and
    ``nesterov`` to SGD.
    """

    name: Literal["sgd", "adamw", "lars"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    warmup_steps: int = Field(0, ge=0)
    schedule: Literal["cosine", "constant"] = "cosine"
    min_lr_ratio: float = Field(0.0, ge=0, le=1)
    lars_eta: float = Field(1e-3, gt=0)
    betas: tuple[float, float] = (0.9, 0.999)
    nesterov: bool = False
    lr_scaling: Literal["none", "linear", "sqrt"] = "none"
    reference_batch_size: int = Field(256, gt=0)


class PretrainConfig(Section):
    """Self-supervised pretraining: a method by name over an encoder, on unlabeled volumes.

    ``batch_size`` is the GLOBAL batch of one optimiser step: it is split over the processes of a
    torchrun job and over ``accumulate_grad_batches`` micro-batches, so changing the number of GPUs
    or the accumulation does not change what one step sees (it must divide exactly). ``steps``
    counts optimiser steps. ``precision``: ``bf16`` autocast (CPU and GPU) or ``fp16`` autocast with
    loss scaling (GPU only). ``sync_batchnorm``: batch statistics over all processes in the
    method's heads (``heads``, the default), in every batch-norm layer (``all``), or none.
    ``device``: ``auto`` (the local GPU when there is one, else CPU), ``cpu`` or ``cuda``.
    ``channels_last``: 3D activations stored NDHWC on the CPU (:mod:`medssl.utils.memory_format`;
    faster, same results up to rounding). ``export_every`` > 0: also export the encoder (with its
    model card, and its decoder for whole-network methods) at every multiple of that many steps, to
    ``encoders/step_<step>/encoder.pt``, so the downstream value of shorter pretraining can be
    studied from one run; a multiple of ``checkpoint_every``. See ``docs/distributed.md``.
    """

    method: str = "simclr"
    method_args: dict[str, Any] = Field(default_factory=dict)
    encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    augmentation: AugmentationConfig = Field(default_factory=AugmentationConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    steps: int = Field(100, gt=0)
    batch_size: int = Field(8, gt=0)
    accumulate_grad_batches: int = Field(1, gt=0)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    checkpoint_every: int = Field(50, gt=0)
    log_every: int = Field(10, gt=0)
    max_grad_norm: float | None = Field(None, gt=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    sync_batchnorm: Literal["heads", "all", "none"] = "heads"
    find_unused_parameters: bool = False
    tensorboard: bool = True
    channels_last: bool = True
    export_every: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _export_at_checkpoints(self) -> "PretrainConfig":
        if self.export_every and self.export_every % self.checkpoint_every:
            raise ValueError(f"pretrain.export_every ({self.export_every}) must be a multiple of "
                             f"pretrain.checkpoint_every ({self.checkpoint_every}): encoders are exported at checkpoints")
        return self


class SemiSupervisedConfig(Section):
    """Consistency training on unlabeled patches during fine-tuning (``finetune.semi``).

    ``method``: ``none`` (labels only), ``mean_teacher`` (Tarvainen & Valpola 2017: MSE between
    the student's softmax on a strong view and an EMA teacher's on the weak view), ``uda`` (Xie et
    al. 2020: KL to the teacher's sharpened prediction, ``temperature``, confident voxels only),
    ``fixmatch`` (Sohn et al. 2020: cross-entropy to the teacher's hard pseudo-label where its
    confidence reaches ``threshold``, on a strong view with CutMix) or ``unimatch`` (Yang et al.
    2023: FixMatch with two strong views and a feature-perturbed stream) or ``cps`` (Chen et al.
    2021, cross pseudo supervision: a second network from another seed trained alongside, each
    learning the other's hard pseudo-labels; twice the compute, no teacher) or ``self_training``
    (offline, ST++ of Yang et al. 2022: a teacher trained on the labels alone labels each whole
    unlabeled volume as a test case is predicted, post-processing included; the ``select_fraction``
    (0.5, ST++'s) most stable volumes across ``checkpoints`` teacher checkpoints are kept; a new network from the
    same init then trains on labeled and pseudo-labeled patches, a ``pseudo_share`` of each batch,
    the pseudo-labeled ones through the labeled recipe's intensity augmentation, or the ``strong``
    view with ``pseudo_view: strong``; ``relabel_rest``: ST++'s second stage, the student labels the
    volumes the selection left out and a third network trains on every volume; ``rounds`` > 1: Noisy
    Student's iteration, each student the next round's teacher, its checkpoints ranking the volumes
    again; segmentation only). See
    :mod:`medssl.eval.semi_supervised` for the formulas. Unlabeled patches are drawn uniformly from
    the unlabeled volumes (never from the test cases); the weak view is the patch, the strong view
    the same patch through the ``strong`` intensity preset (geometry identical, so dense targets stay
    aligned). ``weight`` is lambda_u, reached after a sigmoid ramp-up of ``rampup_steps`` that starts
    at ``start_step`` (labels-only steps before it warm the teacher up). ``threshold``: one value or
    one per class (``{0: 0.95, 1: 0.9, 2: 0.8}``); ``class_balanced`` averages the unlabeled loss per
    pseudo-class before averaging the classes, so a small organ is not outvoted by the background.
    ``teacher``: ``ema`` (decay ``ema_decay``) or ``student`` (the student itself, no gradient).
    ``teacher_flips``: average the teacher over left-right flips (test-time augmentation).
    ``confident_only`` (mean teacher): the consistency only on the voxels where the teacher's
    confidence reaches ``threshold`` (UA-MT's certainty mask), reduced per pseudo-class with
    ``class_balanced``; a class the teacher is never sure of is then left to the labels. Measured on
    the built-in development cohort it was worse than scratch at 2, 4 and 8 labeled cases
    (docs/studies.md section 7): an option to try on your own data, not a default.
    ``bn_statistics``: ``labeled`` (the student forwards the labeled patches alone, then the strong
    views with the batch-norm running statistics frozen, so the test-time normalisation is that of
    the labeled patches, as in labels-only training; the teacher predicts in evaluation mode, as the
    network would at test time) or ``mixed`` (one forward over the labeled patches and the strong
    views together, as FixMatch's reference code does, and a teacher normalised by the unlabeled
    batch's own statistics; the running statistics then absorb the strong views).
    """

    method: Literal["none", "mean_teacher", "uda", "fixmatch", "unimatch", "cps", "self_training"] = "none"
    weight: float = Field(1.0, ge=0)
    start_step: int = Field(0, ge=0)
    rampup_steps: int = Field(0, ge=0)
    unlabeled_batch_size: int | None = Field(None, gt=0)
    teacher: Literal["ema", "student"] = "ema"
    ema_decay: float = Field(0.99, ge=0, lt=1)
    threshold: float | dict[int, float] = 0.95
    temperature: float = Field(0.5, gt=0, le=1)
    class_balanced: bool = True
    strong: str | None = None
    strong_args: dict[str, Any] = Field(default_factory=dict)
    cutmix_prob: float = Field(0.5, ge=0, le=1)
    feature_dropout: float = Field(0.5, ge=0, lt=1)
    teacher_flips: bool = False
    confident_only: bool = False
    bn_statistics: Literal["labeled", "mixed"] = "labeled"
    select_fraction: float = Field(0.5, gt=0, le=1)
    checkpoints: int = Field(3, ge=1)
    pseudo_share: float = Field(0.5, gt=0, lt=1)
    pseudo_view: Literal["labeled", "strong"] = "labeled"
    relabel_rest: bool = False
    rounds: int = Field(1, ge=1)

    @field_validator("threshold")
    @classmethod
    def _threshold(cls, value: float | dict[int, float]) -> float | dict[int, float]:
        values = list(value.values()) if isinstance(value, dict) else [value]
        if not values or any(not 0.0 <= float(v) <= 1.0 for v in values):
            raise ValueError("threshold is a confidence in [0, 1], or one per class {class: confidence}")
        if isinstance(value, dict) and min(int(k) for k in value) < 0:
            raise ValueError("per-class thresholds are keyed by class index (0 = background)")
        return value


class FinetuneConfig(Section):
    """Supervised fine-tuning on few labels (segmentation or case-level classification).

    Segmentation trains the MONAI network that matches the encoder (``medssl.models``) on random
    patches of ``patch_size`` (a fraction ``pos_fraction`` centred on foreground), with DiceCE loss,
    and predicts whole volumes by sliding window (``sw_overlap``, ``sliding_window_batch_size``).
    ``mask_labels`` picks the mask values to learn (``[1]``: label 1 is class 1, the rest background;
    ``null``: the mask as it is, with ``num_classes`` counting the background). Classification trains
    encoder + linear head with cross-entropy on ``label_column``; ``classification_input`` is
    ``whole`` (the volume resized, proportions kept, to ``input_size`` or ``patch_size``) or
    ``patch`` (random patches in training, the mean of the patch logits over a sliding-window grid
    at test). ``freeze``: ``none`` (full fine-tuning), ``encoder`` (decoder/head only) or
    ``partial`` (the ``frozen_stages`` shallowest encoder stages, default half); ``layer_decay``:
    layer-wise learning-rate decay factor per encoder stage (``null``: off). ``val_every`` > 0 with a
    validation split keeps the weights of the best validation score. ``network`` is ``auto``: the
    segmentation network follows the encoder (``medssl.models.build_segmentation_network``), with
    ``network_args`` passed to it. Patch classification needs masks (patch centres). See
    ``docs/studies.md``.

    ``class_balanced``: a positive patch centre is a voxel of one of the ``mask_labels`` drawn with
    equal probability (MONAI ``RandCropByLabelClasses``), so small organs are sampled as often as
    large ones; otherwise any foreground voxel (large organs dominate). ``transfer_decoder``: when a
    pretrained init also carries decoder weights (a restoration method trained the whole
    segmentation network, as Models Genesis does), load them too; otherwise the decoder starts
    from the same random weights for every init. ``channels_last``: store 3D activations NDHWC on
    the CPU (:mod:`medssl.utils.memory_format`; about twice as fast, same results up to rounding).
    ``class_names``: mask value -> name (``{1: liver, 2: kidneys}``) for the reports' per-class
    tables; unnamed classes show as ``class k``.

    The 2D slice track (a 2D encoder, ``pretrain.encoder.spatial_dims: 2``, two ``patch_size``
    entries) on 3D volumes: training patches are cut from slices along ``slice_axis`` (``auto``: per
    volume, the axis with the largest voxel spacing in the cached volume, the acquisition's slice
    axis; ties -> the last axis, Z; or 0, 1, 2 for x, y, z), centred as in 3D (``pos_fraction``,
    ``class_balanced``); at test every slice along that axis is predicted (batched), the slices are
    stacked back into the volume's grid and scored with the same 3D metrics as the 3D track.
    ``slice_context`` > 0 makes it 2.5D: that many neighbouring slices on each side are extra
    input channels (edge slices repeated), so the network takes ``image channels * (2 *
    slice_context + 1)`` channels. 2D images (``Z == 1``) are sliced along Z. See
    :mod:`medssl.data.slices` and ``docs/studies.md``.

    ``intensity_augmentation``: the intensity recipe of the training patches, the same for every
    arm of a study (scratch included): ``none``; ``mild`` (noise, blur, gamma, scale: nnU-Net's
    set, lighter); ``contrast_randomization`` (``mild`` plus, per case modality, a random CT
    window, a random smooth non-monotone intensity curve and inversion: the domain randomisation
    of SynthSeg, Billot et al. 2023); ``strong`` (the modality preset's intensity artefacts: the strong
    view of ``semi``, so a labels-only arm can see what a semi-supervised one sees). ``intensity_args`` overrides its probabilities
    (``window_prob``, ``curve_prob``, ``inversion_prob``, ``mild_prob``) and ``curve_controls``.
    See :mod:`medssl.transforms.finetune_intensity` and ``docs/augmentations.md``.
    ``structure_contrast``: the probability that an annotated structure of a training patch (a
    ``mask_labels`` value, or 1 .. num_classes - 1) has its intensities shifted by its own random
    offset in ``[-structure_contrast_shift, +structure_contrast_shift]`` (normalised units: 0.3 is
    150 HU of a 500-HU window), as contrast enhancement moves each organ by its own amount; 0 (the
    default): off. Segmentation only, every arm alike (:mod:`medssl.transforms.structure_contrast`).

    ``keep_largest_components``: class index (after ``mask_labels``) -> how many of its largest
    connected components the scored prediction keeps (``{1: 1, 2: 2}``: one liver, two kidneys);
    the rest of the class becomes background. nnU-Net's post-processing, for every arm alike
    (:mod:`medssl.eval.postprocess`). ``null`` (default): the argmax as it is.
    ``test_time_flips``: the scored probabilities are averaged over the flips training used
    (nnU-Net's mirroring; with ``augment``: left-right, two passes; :mod:`medssl.eval.geometry`).
    """

    task: Literal["segmentation", "classification"] = "segmentation"
    network: str = "auto"
    network_args: dict[str, Any] = Field(default_factory=dict)
    num_classes: int = Field(2, ge=2)
    label_column: str = "label"
    mask_labels: list[int] | None = None
    class_names: dict[int, str] | None = None
    patch_size: tuple[int, ...] = (32, 32, 32)
    pos_fraction: float = Field(0.5, ge=0, le=1)
    augment: bool = True
    classification_input: Literal["whole", "patch"] = "whole"
    input_size: tuple[int, ...] | None = None
    steps: int = Field(100, gt=0)
    batch_size: int = Field(4, gt=0)
    optimizer: OptimizerConfig = Field(default_factory=lambda: OptimizerConfig(lr=3e-3))
    freeze: Literal["none", "encoder", "partial"] = "none"
    frozen_stages: int | None = Field(None, ge=0)
    layer_decay: float | None = Field(None, gt=0, le=1)
    max_grad_norm: float | None = Field(None, gt=0)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    sliding_window_batch_size: int = Field(4, gt=0)
    sw_overlap: float = Field(0.25, ge=0, lt=1)
    eval_metrics: list[Literal["dice", "hd95", "surface_dice"]] = Field(
        default_factory=lambda: ["dice", "hd95", "surface_dice"]
    )
    surface_tolerance_mm: float = Field(2.0, gt=0)
    val_every: int = Field(0, ge=0)
    class_balanced: bool = False
    transfer_decoder: bool = True
    channels_last: bool = True
    slice_axis: Literal["auto", 0, 1, 2] = "auto"
    slice_context: int = Field(0, ge=0)
    intensity_augmentation: Literal["none", "mild", "contrast_randomization", "strong"] = "none"
    intensity_args: dict[str, Any] = Field(default_factory=dict)
    structure_contrast: float = Field(0.0, ge=0, le=1)
    structure_contrast_shift: float = Field(0.3, ge=0)
    keep_largest_components: dict[int, int] | None = None
    test_time_flips: bool = False
    semi: SemiSupervisedConfig = Field(default_factory=SemiSupervisedConfig)

    @field_validator("patch_size", "input_size")
    @classmethod
    def _sizes(cls, value: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if value is not None and (len(value) not in (2, 3) or any(int(s) < 1 for s in value)):
            raise ValueError("sizes are 2 (2D) or 3 (3D) positive voxel counts")
        return value

    @field_validator("mask_labels")
    @classmethod
    def _mask_labels(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and (not value or len(set(value)) != len(value) or min(value) < 1):
            raise ValueError("mask_labels must list distinct mask values >= 1 (background 0 is implicit)")
        return value

    @model_validator(mode="after")
    def _components_of_known_classes(self) -> "FinetuneConfig":
        for label, count in (self.keep_largest_components or {}).items():
            if not 1 <= int(label) < self.num_classes or int(count) < 1:
                raise ValueError(f"keep_largest_components maps a class index in [1, {self.num_classes - 1}] "
                                 f"(num_classes - 1; 0 is the background) to a count >= 1, got {label}: {count}")
        return self


class StudyConfig(Section):
    """A label-efficiency study: budgets x seeds x initialisations (x folds).

    ``labels`` is a CSV of labeled cases (``case_column``, ``image``, ``mask``, the finetune
    ``label_column``, optionally ``patient_column`` and ``modality``; paths relative to the CSV's
    folder or absolute), such as the ``labels.csv`` of ``medssl synth``. The test set is split off by
    patient once (``test_fraction``, seed ``Config.seed``) and kept for every budget, seed and
    initialisation; with ``folds`` >= 2 each patient-level fold is the test set in turn. ``budgets``
    are case counts (>= 1) or fractions of the training pool (0 < f < 1), nested. ``inits`` maps a
    name to an exported encoder (``encoder.pt``) or ``null`` for training from scratch.
    ``semi`` crosses the initialisations with semi-supervised methods (``none`` = labels only,
    ``mean_teacher``, ``uda``, ``fixmatch``, ``unimatch``, ``cps``, ``self_training``; their settings in
    ``finetune.semi``):
    ``inits: {scratch: null, simclr: enc.pt}`` with ``semi: [none, fixmatch]`` gives four arms,
    ``scratch``, ``simclr``, ``scratch+fixmatch`` and ``simclr+fixmatch``, trained on the same
    labeled cases, patches and steps; the unlabeled volumes of a cell are the training pool's cases
    outside its labeled subset (never a test or validation case), used without their annotation.
    Without ``semi`` every arm uses ``finetune.semi.method`` as it is. ``unlabeled``: a manifest
    (``medssl manifest``, with its locations file) of further unlabeled volumes, such as the archive
    the encoders were pretrained on, added to every semi-supervised cell's unlabeled pool; the
    volumes of the test and validation patients are left out. ``workers`` > 1 computes that many cells
    at a time in separate processes (one torch thread each; the same numbers as one process).
    ``evaluation`` is ``finetune`` (the ``finetune`` section) or a probe on frozen features
    (``linear_probe``, ``knn_probe``; classification). ``bootstrap`` resamples (``level`` interval)
    over test cases and, with ``bootstrap_seeds``, over seeds too. ``stratify_column``: the column
    the splits are stratified on; ``auto`` (default) is ``finetune.label_column`` when the labels
    table has it and no stratification otherwise (a segmentation table need not have a class
    column; the log says which was chosen); ``null``: never.

    A designated test set is used as given (:mod:`medssl.data.fixed_split`): ``test_cases`` lists
    the test case ids, or the labels table's ``split_column`` (default ``split``; ``null`` ignores
    it) marks each row ``train``, ``val`` or ``test``. Those cases are never drawn into training;
    other scans of a test patient are left out of training; ``test_fraction`` is then unused and
    ``folds`` must be 0. ``medssl finetune`` honours the same settings.

    ``subgroup_columns``: labels-table columns (contrast phase, scanner, site) whose values split the
    test cases in the report, each scored separately for the runs whose labeled cases had that value
    and those that did not (:mod:`medssl.study.subgroups`).
    """

    labels: str | None = None
    case_column: str = "case_id"
    patient_column: str | None = "patient_key"
    stratify_column: str | None = "auto"
    budgets: list[float] = Field(default_factory=lambda: [2, 4, 8])
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    inits: dict[str, str | None] = Field(default_factory=lambda: {"scratch": None})
    semi: list[Literal["none", "mean_teacher", "uda", "fixmatch", "unimatch", "cps", "self_training"]] | None = None
    unlabeled: str | None = None
    workers: int = Field(1, ge=1)
    baseline: str = "scratch"
    test_fraction: float = Field(0.3, gt=0, lt=1)
    val_fraction: float = Field(0.0, ge=0, lt=1)
    folds: int = Field(0, ge=0)
    test_cases: list[str] | None = None
    split_column: str | None = "split"
    evaluation: Literal["finetune", "linear_probe", "knn_probe"] = "finetune"
    knn_k: int = Field(5, ge=1)
    probe_c: float = Field(1.0, gt=0)
    metric: str = "dice"
    bootstrap: int = Field(1000, ge=10)
    bootstrap_seeds: bool = True
    level: float = Field(0.95, gt=0, lt=1)
    subgroup_columns: list[str] = Field(default_factory=list)

    @field_validator("budgets")
    @classmethod
    def _budgets_positive(cls, value: list[float]) -> list[float]:
        if not value or any(b <= 0 for b in value):
            raise ValueError("budgets must be positive case counts (>= 1) or fractions (0 < f < 1)")
        if any(b > 1 and float(b) != int(b) for b in value):
            raise ValueError("a budget above 1 is a case count and must be a whole number")
        return value

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, value: list[int]) -> list[int]:
        if not value or len(set(value)) != len(value):
            raise ValueError("seeds must be a non-empty list of distinct integers")
        return value

    @field_validator("inits")
    @classmethod
    def _inits(cls, value: dict[str, str | None]) -> dict[str, str | None]:
        if not value:
            raise ValueError("inits needs at least one initialisation, e.g. {scratch: null}")
        for name in value:
            if not name or any(c in name for c in "/\\:*?\"<>|") or name.startswith("."):
                raise ValueError(f"init name {name!r} must be usable as a folder name")
        return value

    @field_validator("semi")
    @classmethod
    def _semi(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and (not value or len(set(value)) != len(value)):
            raise ValueError("semi lists distinct methods, e.g. [none, fixmatch]")
        return value

    @field_validator("folds")
    @classmethod
    def _folds(cls, value: int) -> int:
        if value == 1:
            raise ValueError("folds must be 0 (one fixed test split) or >= 2 (k-fold)")
        return value

    @field_validator("test_cases", mode="before")
    @classmethod
    def _test_cases(cls, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, (str, int)) or not len(value):
            raise ValueError("test_cases must be a non-empty list of case ids (or null to draw the test set)")
        values = [str(v) for v in value]
        if len(set(values)) != len(values):
            raise ValueError("test_cases lists a case id twice")
        return values

    @model_validator(mode="after")
    def _designated_test_without_folds(self) -> "StudyConfig":
        if self.test_cases and self.folds:
            raise ValueError("test_cases fix the test set; they do not combine with folds (k-fold draws its own)")
        return self


class DemoConfig(Section):
    """``medssl demo``: the built-in cohort it writes and the methods it pretrains.

    ``methods`` are pretrained one after the other with the ``pretrain`` section, each with its own
    ``method_args`` (small heads for a CPU) and ``method_augmentation`` (fields of
    ``pretrain.augmentation`` that differ for that method, such as ``shared_geometry`` and a larger
    ``patch_size`` for ``local_contrastive``); the study then compares ``scratch`` with each of them.
    """

    n_ct: int = Field(24, ge=4)
    n_mr: int = Field(0, ge=0)
    n_unlabeled_ct: int = Field(24, ge=0)
    n_unlabeled_mr: int = Field(0, ge=0)
    size: int = Field(64, ge=16)
    messy: bool = True
    methods: list[str] = Field(default_factory=lambda: ["simclr", "barlow_twins"])
    method_args: dict[str, dict[str, Any]] = Field(default_factory=dict)
    method_augmentation: dict[str, dict[str, Any]] = Field(default_factory=dict)
    exclude_test_patients: bool = True


class Config(Section):
    """The whole configuration; a command uses the sections it needs."""

    seed: int = 0
    run_dir: str | None = None
    data: DataConfig = Field(default_factory=DataConfig)
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    study: StudyConfig = Field(default_factory=StudyConfig)
    demo: DemoConfig = Field(default_factory=DemoConfig)

    @model_validator(mode="after")
    def _nnunet_plans(self) -> "Config":
        """With ``pretrain.encoder.name: nnunet`` and ``args.plans``, the plans' configuration sets
        the encoder's ``spatial_dims``, ``pretrain.augmentation.patch_size`` and
        ``data.preprocess.target_spacing`` (in medssl's axis order), unless the config sets them."""
        encoder = self.pretrain.encoder
        if encoder.name != "nnunet" or not encoder.args.get("plans"):
            return self
        from medssl.models.nnunet_plans import read_plans

        plan = read_plans(encoder.args["plans"], str(encoder.args.get("configuration", "3d_fullres")))
        if "spatial_dims" not in encoder.model_fields_set:
            encoder.spatial_dims = plan.spatial_dims
        if "patch_size" not in self.pretrain.augmentation.model_fields_set:
            self.pretrain.augmentation.patch_size = plan.patch_size_xyz()
        if "target_spacing" not in self.data.preprocess.model_fields_set and plan.spatial_dims == 3:
            self.data.preprocess.target_spacing = plan.spacing_xyz()
        return self


def _set_dotted(tree: dict[str, Any], dotted_key: str, value: Any) -> None:
    node = tree
    parts = dotted_key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override {dotted_key!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``"a.b=value"`` -> ``("a.b", yaml-parsed value)``."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.subkey=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has no key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({exc})") from exc
    return key, value


def _section_model(location: Sequence[Any]) -> type[BaseModel] | None:
    """The pydantic model of the section holding the key at ``location`` (None when not a section)."""
    model: type[BaseModel] = Config
    for part in location[:-1]:
        field_info = model.model_fields.get(str(part))
        annotation = getattr(field_info, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def unknown_key_hint(location: Sequence[Any]) -> str:
    """For an unknown key at ``location``: the section's accepted keys and the closest match.

    Example:
        >>> unknown_key_hint(["data", "preprocess", "spacing"])
        "did you mean 'target_spacing'? data.preprocess accepts: cache_dtype, crop_foreground, crop_margin, \
ct_window, foreground_threshold, interpolation, mr_percentiles, target_spacing"
    """
    import difflib

    model = _section_model(location)
    if model is None:
        return ""
    accepted = sorted(model.model_fields)
    section = ".".join(str(p) for p in location[:-1]) or "the top level"
    close = difflib.get_close_matches(str(location[-1]), accepted, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"{hint}{section} accepts: {', '.join(accepted)}"


def _format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for error in exc.errors():
        location = ".".join(str(p) for p in error["loc"])
        message = error["msg"]
        if error.get("type") == "extra_forbidden":
            hint = unknown_key_hint(list(error["loc"]))
            message = f"unknown key ({hint})" if hint else "unknown key"
        lines.append(f"  {location}: {message}")
    return "\n".join(lines)


def config_from_dict(raw: dict[str, Any], source: str = "<dict>") -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source)) from None


def load_config(path: str | os.PathLike | None, overrides: Sequence[str] = ()) -> Config:
    """Read a YAML config (or start from defaults when ``path`` is None) and apply overrides."""
    raw: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        raw = copy.deepcopy(loaded)
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(raw, key, value)
    if overrides:
        source += " with overrides " + " ".join(overrides)
    return config_from_dict(raw, source)


def dump_config(config: Config) -> str:
    """The resolved config as YAML (what a run folder stores as ``config.yaml``)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
