"""Put a pretrained encoder into the network that is fine-tuned: a MONAI segmentation network or a
classifier.

Every registry encoder names its parameters as they are inside its segmentation network (see
:mod:`medssl.models.base`), so transfer is ``network.load_state_dict(encoder_state, strict=False)``
after a check of every key. :func:`load_encoder_weights` does the check and says, in the log and in
a :class:`TransferReport`, which weights loaded and which did not:

- ``loaded``: encoder keys copied into the network;
- ``missing``: keys of the network's *encoder part* that the state dict lacked (should be empty;
  the decoder is meant to start fresh and is not listed);
- ``unexpected``: keys of the state dict that the network does not have;
- ``mismatched``: keys present in both with different shapes (for example a different number of
  input channels), left at their fresh values.

:func:`load_decoder_weights` does the same for a pretrained decoder (from a method that trained the
whole segmentation network, see :func:`medssl.models.export.load_pretrained_decoder`).

``encoder -> network``: ``resnet*`` -> ``FlexibleUNet``, ``segresnet`` -> ``SegResNet``,
``basicunet`` -> ``BasicUNet``, ``swin`` -> ``SwinUNETR``, ``vit`` -> ``UNETR``.

Example:
    >>> import torch
    >>> from medssl.models import build_encoder
    >>> encoder = build_encoder("resnet10_tiny", spatial_dims=2)
    >>> network = build_segmentation_network(encoder.config, out_channels=2)
    >>> report = load_encoder_weights(network, encoder.state_dict(), encoder.config)
    >>> report.missing, report.unexpected, report.mismatched, len(report.loaded) > 0
    ([], [], [], True)
    >>> build_classifier(encoder, num_classes=3)(torch.randn(2, 1, 32, 32)).shape
    torch.Size([2, 3])
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch import nn

from medssl.errors import CheckpointError
from medssl.models.base import Encoder
from medssl.models.registry import encoder_class, encoder_from_config

logger = logging.getLogger(__name__)


@dataclass
class TransferReport:
    """What :func:`load_encoder_weights` copied and what it could not (lists of parameter names)."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """True when every encoder weight of the network was loaded and nothing was left over."""
        return bool(self.loaded) and not (self.missing or self.unexpected or self.mismatched)

    def summary(self) -> str:
        return (f"{len(self.loaded)} loaded, {len(self.missing)} missing, {len(self.unexpected)} unexpected, "
                f"{len(self.mismatched)} shape-mismatched")

    def as_dict(self) -> dict[str, list[str]]:
        return {"loaded": list(self.loaded), "missing": list(self.missing),
                "unexpected": list(self.unexpected), "mismatched": list(self.mismatched)}


def _encoder_class(encoder_config: Mapping[str, Any] | Encoder) -> Encoder:
    return encoder_config if isinstance(encoder_config, Encoder) else encoder_from_config(encoder_config)


def build_segmentation_network(encoder_config: Mapping[str, Any] | Encoder, out_channels: int,
                               **args: Any) -> nn.Module:
    """The MONAI segmentation network whose encoder part has the encoder's architecture.

    ``args`` go to the network (for example ``decoder_channels`` for FlexibleUNet, ``blocks_up`` for
    SegResNet, ``feature_size`` for UNETR). The network's weights are fresh; call
    :func:`load_encoder_weights` to copy the pretrained encoder in.
    """
    encoder = _encoder_class(encoder_config)
    return encoder.build_segmentation_network(out_channels=out_channels, **args)


def _encoder_part(key: str, modules: tuple[str, ...]) -> bool:
    return any(key == m or key.startswith(m + ".") for m in modules)


def load_encoder_weights(network: nn.Module, encoder_state_dict: Mapping[str, torch.Tensor],
                         encoder_config: Mapping[str, Any] | Encoder | None = None,
                         strict: bool = False) -> TransferReport:
    """Copy ``encoder_state_dict`` into ``network`` key by key and report what happened.

    Args:
        network: from :func:`build_segmentation_network` (or any module using the same names).
        encoder_state_dict: an encoder's ``state_dict()`` (as written by ``export_encoder``).
        encoder_config: the encoder's ``config`` (or the encoder): tells which network keys form the
            encoder part. Without it, the top-level module names of the state dict's keys do.
        strict: raise :class:`CheckpointError` unless the report is complete.
    """
    if isinstance(encoder_config, Encoder):
        modules = type(encoder_config).network_modules
    elif encoder_config is not None:
        modules = encoder_class(str(encoder_config["name"])).network_modules
    else:
        modules = tuple(sorted({key.split(".", 1)[0] for key in encoder_state_dict}))
    target = network.state_dict()
    report, to_load = _sort_keys(encoder_state_dict, target, refused=lambda key: False)
    report.missing = [k for k in target if _encoder_part(k, modules) and k not in to_load]
    network.load_state_dict(to_load, strict=False)
    message = f"encoder transfer into {type(network).__name__}: {report.summary()}"
    if report.complete:
        logger.info(message)
    else:
        logger.warning(message)
        for kind in ("missing", "unexpected", "mismatched"):
            names = getattr(report, kind)
            if names:
                shown = ", ".join(names[:10]) + (f" ... (+{len(names) - 10})" if len(names) > 10 else "")
                logger.warning("  %s: %s", kind, shown)
    if strict and not report.complete:
        raise CheckpointError(f"encoder weights do not match {type(network).__name__}: {report.summary()}")
    return report


def _sort_keys(state: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor],
               refused: Callable[[str], bool]) -> tuple[TransferReport, dict[str, torch.Tensor]]:
    """A report of ``state``'s keys against ``target`` (``unexpected``: absent there or ``refused``;
    ``mismatched``: another shape; ``loaded``: the rest) and the tensors to load. ``missing`` is
    left to the caller, which knows which part of the network the state should cover."""
    report = TransferReport()
    to_load: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key not in target or refused(key):
            report.unexpected.append(key)
        elif tuple(target[key].shape) != tuple(value.shape):
            report.mismatched.append(key)
        else:
            to_load[key] = value
            report.loaded.append(key)
    return report, to_load


def _encoder_keys_and_aliases(network: nn.Module, modules: tuple[str, ...]) -> set[str]:
    """The keys of the network's encoder part, plus other names of the same tensors (nnU-Net's
    ``UNetDecoder`` keeps its encoder, so ``decoder.encoder.*`` repeats ``encoder.*``)."""
    state = network.state_dict(keep_vars=True)
    own = {id(v) for k, v in state.items() if _encoder_part(k, modules)}
    return {k for k, v in state.items() if _encoder_part(k, modules) or id(v) in own}


def load_decoder_weights(network: nn.Module, decoder_state_dict: Mapping[str, torch.Tensor],
                         encoder_config: Mapping[str, Any] | Encoder) -> TransferReport:
    """Copy a pretrained decoder (every weight of the network outside its encoder part, as
    :meth:`medssl.methods.pretext.PretextMethod.decoder_export` gives) into ``network``.

    The report lists ``loaded`` keys, ``missing`` decoder keys of the network the state lacked,
    ``unexpected`` keys the network does not have (or that belong to its encoder part: those come
    from the encoder file only) and ``mismatched`` shapes, left fresh. A pretrained restoration
    network has one output channel, so its last layer is normally ``mismatched`` against a
    segmentation network with one output per class: that layer starts from the same random weights
    as every other init's.
    """
    modules = (type(encoder_config).network_modules if isinstance(encoder_config, Encoder)
               else encoder_class(str(encoder_config["name"])).network_modules)
    target = network.state_dict()
    encoder_side = _encoder_keys_and_aliases(network, modules)
    report, to_load = _sort_keys(decoder_state_dict, target, refused=lambda key: key in encoder_side)
    report.missing = [k for k in target if k not in encoder_side and k not in decoder_state_dict]
    network.load_state_dict(to_load, strict=False)
    logger.info("decoder transfer into %s: %s", type(network).__name__, report.summary())
    if report.unexpected or report.missing or not report.loaded:
        logger.warning("the pretrained decoder does not fit %s (%s): is finetune.network_args the network_args "
                       "of the pretraining method?", type(network).__name__, report.summary())
    return report


class EncoderClassifier(nn.Module):
    """``Linear(dropout(encoder(x)))``: a case-level classifier over the pooled features.

    The encoder stays reachable as ``.encoder`` (for freezing or layer-wise learning rates) and
    its weights keep their names under the ``encoder.`` prefix.
    """

    def __init__(self, encoder: Encoder, num_classes: int, dropout: float = 0.0):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Linear(encoder.feature_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.encoder(x)))


def build_classifier(encoder: Encoder, num_classes: int, dropout: float = 0.0) -> nn.Module:
    """A classifier with ``encoder`` (weights included, not copied) and a fresh linear head."""
    return EncoderClassifier(encoder, num_classes, dropout)
