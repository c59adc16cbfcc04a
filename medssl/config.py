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
from pathlib import Path
from typing import Any, Literal, Sequence

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from medssl.errors import ConfigError


class Section(BaseModel):
    """Base of every config section: unknown keys are refused, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class PreprocessConfig(Section):
    """The deterministic part of preprocessing, computed once per volume and cached.

    ``target_spacing`` in millimetres (``null`` keeps the native spacing); CT is clipped to the
    Hounsfield window ``ct_window`` and scaled to [0, 1]; MR (and other modalities) is scaled
    between the ``mr_percentiles`` percentiles of its foreground to [0, 1].
    """

    target_spacing: tuple[float, float, float] | None = (1.5, 1.5, 1.5)
    ct_window: tuple[float, float] = (-1000.0, 1000.0)
    mr_percentiles: tuple[float, float] = (0.5, 99.5)
    crop_foreground: bool = True
    interpolation: Literal["linear", "nearest", "bspline"] = "linear"


class DataConfig(Section):
    """Where the images are: a manifest (CSV or Parquet, from ``medssl manifest``) or a root folder."""

    manifest: str | None = None
    root: str | None = None
    cache_dir: str | None = None
    modalities: list[str] | None = None
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    num_workers: int = 0


class EncoderConfig(Section):
    """An encoder from the registry in :mod:`medssl.models` (a MONAI network or its encoder half)."""

    name: str = "resnet10"
    spatial_dims: Literal[2, 3] = 3
    in_channels: int = 1
    args: dict[str, Any] = Field(default_factory=dict)


class AugmentationConfig(Section):
    """Modality-aware views: a preset by name (``ct``, ``mr``, ``xr``, ``us``) and its options."""

    preset: str = "ct"
    patch_size: tuple[int, ...] = (32, 32, 32)
    num_views: int = 2
    local_crops: int = 0
    local_patch_size: tuple[int, ...] | None = None
    args: dict[str, Any] = Field(default_factory=dict)
    device_side: bool = False


class OptimizerConfig(Section):
    name: Literal["sgd", "adamw", "lars"] = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    warmup_steps: int = 0
    schedule: Literal["cosine", "constant"] = "cosine"
    min_lr_ratio: float = 0.0


class PretrainConfig(Section):
    """Self-supervised pretraining: a method by name over an encoder, on unlabeled volumes."""

    method: str = "simclr"
    method_args: dict[str, Any] = Field(default_factory=dict)
    encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    augmentation: AugmentationConfig = Field(default_factory=AugmentationConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    steps: int = 100
    batch_size: int = 8
    accumulate_grad_batches: int = 1
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    checkpoint_every: int = 50
    log_every: int = 10
    max_grad_norm: float | None = None


class FinetuneConfig(Section):
    """Supervised fine-tuning on few labels (segmentation or case-level classification)."""

    task: Literal["segmentation", "classification"] = "segmentation"
    network: str = "auto"
    network_args: dict[str, Any] = Field(default_factory=dict)
    num_classes: int = 2
    label_column: str = "label"
    patch_size: tuple[int, ...] = (32, 32, 32)
    steps: int = 100
    batch_size: int = 4
    optimizer: OptimizerConfig = Field(default_factory=lambda: OptimizerConfig(lr=3e-3))
    freeze: Literal["none", "encoder", "partial"] = "none"
    layer_decay: float | None = None
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    sliding_window_batch_size: int = 4


class StudyConfig(Section):
    """A label-efficiency study: budgets x seeds x initialisations."""

    budgets: list[float] = Field(default_factory=lambda: [2, 4, 8])
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    inits: dict[str, str | None] = Field(default_factory=lambda: {"scratch": None})
    test_fraction: float = 0.3
    val_fraction: float = 0.0
    metric: str = "dice"
    bootstrap: int = 1000

    @field_validator("budgets")
    @classmethod
    def _budgets_positive(cls, value: list[float]) -> list[float]:
        if not value or any(b <= 0 for b in value):
            raise ValueError("budgets must be positive case counts (>= 1) or fractions (0 < f < 1)")
        return value


class Config(Section):
    """The whole configuration; a command uses the sections it needs."""

    seed: int = 0
    run_dir: str | None = None
    data: DataConfig = Field(default_factory=DataConfig)
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    study: StudyConfig = Field(default_factory=StudyConfig)


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


def _format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for error in exc.errors():
        location = ".".join(str(p) for p in error["loc"])
        lines.append(f"  {location}: {error['msg']}")
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
