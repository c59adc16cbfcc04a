"""The network a fine-tuning run trains, built for one initialisation: scratch or a pretrained encoder.

:func:`build_finetune_model` builds, through :mod:`medssl.models`:

* segmentation: ``build_segmentation_network(encoder_config, num_classes)`` (the MONAI network whose
  encoder part has the encoder's parameter names); for a pretrained init the encoder's weights are
  copied in with ``load_encoder_weights`` and its :class:`TransferReport` (loaded, missing,
  unexpected, mismatched) is logged and kept; when the init also ships a pretrained decoder
  (``load_pretrained_decoder``: a method that trained the whole network, Models Genesis style) and
  ``transfer_decoder`` is true, the decoder weights that fit are loaded too (``decoder_transfer``);
* classification: ``build_classifier(encoder, num_classes)`` (encoder + linear head on the pooled
  features).

Fairness of a comparison: the global RNG is seeded with ``seed`` right before the network is
built, so scratch and every pretrained init start from the *same* random decoder / head (the
pretrained ones then overwrite the encoder part). The encoder's parameters inside the network are
split into stages (:func:`medssl.eval.param_groups.encoder_stages`) for freezing and layer-wise
learning-rate decay.

Example (needs :mod:`medssl.models`)::

    model = build_finetune_model("segmentation", {"name": "resnet10", "spatial_dims": 3}, None,
                                 num_classes=2, seed=0)
    model.init, len(model.stages)      # ('scratch', 4)
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from medssl.errors import CheckpointError
from medssl.eval.param_groups import EncoderStage, encoder_stages
from medssl.utils.seeding import seed_everything

log = logging.getLogger(__name__)

SCRATCH = "scratch"


@dataclass
class FinetuneModel:
    """A network to fine-tune and what is known about its initialisation."""

    network: nn.Module
    task: Literal["segmentation", "classification"]
    spatial_dims: int
    encoder_config: dict[str, Any]
    stages: list[EncoderStage]
    init: str = SCRATCH
    transfer: Any | None = None
    card: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    decoder_transfer: Any | None = None

    @property
    def encoder_parameter_names(self) -> list[str]:
        return [n for stage in self.stages for n in stage.parameter_names]

    def transfer_summary(self) -> dict[str, Any]:
        """Counts (and up to 20 names each) of loaded / missing / unexpected / mismatched weights."""
        if self.transfer is None:
            return {"init": self.init}
        summary: dict[str, Any] = {"init": self.init}
        for kind in ("loaded", "missing", "unexpected", "mismatched"):
            names = list(getattr(self.transfer, kind, []) or [])
            summary[f"n_{kind}"] = len(names)
            summary[kind] = [str(n) for n in names[:20]]
        if self.decoder_transfer is not None:
            summary["decoder"] = {f"n_{kind}": len(getattr(self.decoder_transfer, kind, []) or [])
                                  for kind in ("loaded", "missing", "unexpected", "mismatched")}
            summary["decoder"]["mismatched"] = [str(n) for n in self.decoder_transfer.mismatched[:20]]
        return summary


def is_scratch(init: str | os.PathLike | None) -> bool:
    return init is None or str(init) in ("", SCRATCH, "none", "None")


def _encoder_config_dict(encoder_config: Any) -> dict[str, Any]:
    if hasattr(encoder_config, "model_dump"):
        encoder_config = encoder_config.model_dump()
    config = dict(encoder_config)
    args = dict(config.pop("args", {}) or {})
    return {"name": config.pop("name"), "spatial_dims": int(config.pop("spatial_dims", 3)),
            "in_channels": int(config.pop("in_channels", 1)), "args": {**args, **config}}


def load_encoder(init: str | os.PathLike | None, encoder_config: Any | None) -> tuple[nn.Module, dict | None]:
    """The encoder of an init: a fresh ``build_encoder(**encoder_config)`` for scratch, else
    ``load_pretrained(path)``; returns ``(encoder, card or None)``."""
    from medssl import models

    if is_scratch(init):
        if encoder_config is None:
            raise ValueError("training from scratch needs an encoder config (pretrain.encoder)")
        cfg = _encoder_config_dict(encoder_config)
        return models.build_encoder(cfg["name"], spatial_dims=cfg["spatial_dims"],
                                    in_channels=cfg["in_channels"], **cfg["args"]), None
    path = Path(init)
    if not path.exists():
        raise CheckpointError(f"pretrained encoder {path} does not exist (check study.inits / --init)")
    encoder, card = models.load_pretrained(path)
    return encoder, card


def suggested_sizes(size: tuple[int, ...] | list[int], multiple: int) -> list[list[int]]:
    """The nearest sizes that are multiples of ``multiple``: each entry rounded down (at least
    ``multiple``) and rounded up.

    Example:
        >>> suggested_sizes((36, 36, 20), 32)
        [[32, 32, 32], [64, 64, 32]]
    """
    down = [max(multiple, (int(s) // multiple) * multiple) for s in size]
    up = [-(-int(s) // multiple) * multiple for s in size]
    return [down] if down == up else [down, up]


def check_patch_size(encoder_config: Any, patch_size: tuple[int, ...] | list[int],
                     setting: str = "finetune.patch_size") -> None:
    """Refuse, before any data is read, a patch size the segmentation network of ``encoder_config``
    cannot take (a size that is not a multiple of its total stride crashes deep inside the network
    with ``Sizes of tensors must match``). Raises :class:`~medssl.errors.ConfigError` naming the
    setting, the multiple and the nearest sizes that work.
    """
    from medssl.errors import ConfigError

    encoder, _ = load_encoder(None, encoder_config)
    multiple = int(getattr(encoder, "input_multiple", 1))
    sizes = [int(s) for s in patch_size][: encoder.spatial_dims]
    if multiple <= 1 or all(s % multiple == 0 for s in sizes):
        return
    options = " or ".join(str(s) for s in suggested_sizes(sizes, multiple))
    raise ConfigError(f"{setting}={sizes} does not fit the segmentation network of encoder "
                      f"{_encoder_label(encoder)} ({encoder.segmentation_network}): every size must be a multiple "
                      f"of {multiple}, its total down-sampling stride; use for example {options}")


def _encoder_label(encoder: nn.Module) -> str:
    registered = getattr(encoder, "registered_name", None)
    name = getattr(encoder, "name", "?")
    return repr(registered) if registered and registered != name else repr(name)


def build_finetune_model(
    task: Literal["segmentation", "classification"],
    encoder_config: Any | None,
    init: str | os.PathLike | None,
    *,
    num_classes: int,
    seed: int,
    network_args: dict[str, Any] | None = None,
    transfer_decoder: bool = True,
) -> FinetuneModel:
    """Build the network of ``task`` for ``init`` (see module docstring). ``encoder_config`` (an
    :class:`~medssl.config.EncoderConfig` or its dict) is used for scratch only; a pretrained
    encoder brings its own. ``transfer_decoder``: load the init's pretrained decoder when it has one
    (segmentation only)."""
    from medssl import models

    network_args = dict(network_args or {})
    encoder, card = load_encoder(init, encoder_config)
    config = dict(getattr(encoder, "config", None) or _encoder_config_dict(encoder_config))
    spatial_dims = int(getattr(encoder, "spatial_dims", config.get("spatial_dims", 3)))
    init_name = SCRATCH if is_scratch(init) else str(init)
    transfer = decoder_transfer = None
    if task == "segmentation":
        seed_everything(seed)  # same random decoder for every init
        network = models.build_segmentation_network(config, num_classes, **network_args)
        encoder_names = [name for name, _ in encoder.named_parameters()]
        network_names = {name for name, _ in network.named_parameters()}
        absent = [n for n in encoder_names if n not in network_names]
        if absent:
            raise CheckpointError(
                f"encoder {config.get('name')!r}: {len(absent)} encoder parameter(s) have no counterpart in the "
                f"segmentation network (e.g. {absent[:3]}); the registry and the network disagree"
            )
        if not is_scratch(init):
            transfer = models.load_encoder_weights(network, encoder.state_dict(), config)
            _log_transfer(init_name, transfer)
            decoder = models.load_pretrained_decoder(init) if transfer_decoder else None
            if decoder is not None:
                decoder_transfer = models.load_decoder_weights(network, decoder[0], config)
                log.info("init %s: pretrained decoder (%s) transferred: %s", init_name,
                         decoder[1].get("pretext", "?"), decoder_transfer.summary())
        del encoder
    elif task == "classification":
        if is_scratch(init):
            seed_everything(seed)
            encoder, _ = load_encoder(None, encoder_config)
        seed_everything(seed)  # same random head for every init
        network = models.build_classifier(encoder, num_classes, **network_args)
        own = {id(p) for p in encoder.parameters()}
        encoder_names = [name for name, p in network.named_parameters() if id(p) in own]
        if not is_scratch(init):
            transfer = _classification_transfer(encoder_names)
            log.info("init %s: classifier encoder from %s (%d tensors)", init_name, init, len(encoder_names))
    else:
        raise ValueError(f"unknown fine-tuning task {task!r}: segmentation or classification")
    stages = encoder_stages(network, encoder_names)
    return FinetuneModel(network, task, spatial_dims, config, stages, init_name, transfer, card,
                         decoder_transfer=decoder_transfer)


@dataclass
class _ClassifierTransfer:
    loaded: list[str]
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)


def _classification_transfer(encoder_names: list[str]) -> _ClassifierTransfer:
    """The classifier holds the pretrained encoder module itself: every encoder weight is loaded."""
    return _ClassifierTransfer(loaded=list(encoder_names))


def _log_transfer(init: str, report: Any) -> None:
    counts = {kind: len(getattr(report, kind, []) or []) for kind in ("loaded", "missing", "unexpected", "mismatched")}
    log.info("init %s: transferred encoder weights: %d loaded, %d missing, %d unexpected, %d mismatched",
             init, counts["loaded"], counts["missing"], counts["unexpected"], counts["mismatched"])
    for kind in ("missing", "unexpected", "mismatched"):
        names = list(getattr(report, kind, []) or [])
        if names:
            log.warning("init %s: %d %s weight(s), e.g. %s", init, len(names), kind, ", ".join(map(str, names[:5])))


def network_state(model: FinetuneModel) -> dict[str, torch.Tensor]:
    """A CPU copy of the network's weights (for keeping the best validation state)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.network.state_dict().items()}
