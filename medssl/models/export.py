"""Export a pretrained encoder as a plain state dict with a model card, and load it back.

``export_encoder(encoder, "run/encoder.pt", card)`` writes two files, both atomically:

- ``encoder.pt``: ``encoder.state_dict()``, tensors only (``torch.load(..., weights_only=True)``
  reads it). The keys are the parameter names inside the MONAI segmentation network the encoder
  belongs to, so ``network.load_state_dict(torch.load(path), strict=False)`` works directly on, say,
  a ``monai.networks.nets.SwinUNETR`` built with the same arguments;
- ``encoder.card.json``: the model card: what the caller passes (method, data fingerprint, steps,
  config, ...) plus ``encoder`` (the config that rebuilds it), ``feature_dim``, ``monai_network``
  (the class to load it into), ``format`` and ``num_parameters``;
- with ``decoder=(state, info)`` (a method that pretrained the whole segmentation network, such as
  a restoration task with ``decoder="network"``), ``encoder.decoder.pt``: the network's other
  weights (decoder and output layer), and a ``decoder`` entry in the card (``info``: the network,
  its arguments, its output channels; plus ``weights_file`` and ``num_tensors``).
  :func:`load_pretrained_decoder` reads them back. ``encoder.pt`` is a plain encoder either way.

Example:
    >>> import tempfile, pathlib
    >>> from medssl.models import build_encoder
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> encoder = build_encoder("resnet10_tiny", spatial_dims=2)
    >>> export_encoder(encoder, folder / "encoder.pt", {"method": "simclr", "steps": 10})
    PosixPath('...encoder.pt')
    >>> restored, card = load_pretrained(folder / "encoder.pt")
    >>> card["method"], card["monai_network"], restored.feature_dim
    ('simclr', 'FlexibleUNet', 128)
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from medssl.errors import CheckpointError, ConfigError
from medssl.models.base import Encoder
from medssl.models.registry import encoder_from_config
from medssl.utils.atomic import atomic_torch_save, atomic_write_text

logger = logging.getLogger(__name__)

CARD_FORMAT = "medssl-encoder/1"


def card_path(path: str | os.PathLike) -> Path:
    """The model card beside a weights file: ``encoder.pt`` -> ``encoder.card.json``."""
    path = Path(path)
    return path.with_name(path.stem + ".card.json")


def decoder_path(path: str | os.PathLike) -> Path:
    """The decoder weights beside an encoder file: ``encoder.pt`` -> ``encoder.decoder.pt``."""
    path = Path(path)
    return path.with_name(path.stem + ".decoder" + path.suffix)


def export_encoder(encoder: Encoder, path: str | os.PathLike, card: dict[str, Any] | None = None,
                   decoder: tuple[dict[str, torch.Tensor], dict[str, Any]] | None = None) -> Path:
    """Write ``encoder``'s weights to ``path`` and its model card beside it; returns ``path``.

    ``decoder``: ``(state, info)`` of a pretrained decoder to ship beside the encoder (see the
    module docstring), or None.
    """
    path = Path(path)
    state = {key: value.detach().cpu().contiguous().clone() for key, value in encoder.state_dict().items()}
    full_card = dict(card or {})
    if decoder is not None:
        decoder_state, info = decoder
        decoder_state = {key: value.detach().cpu().contiguous().clone() for key, value in decoder_state.items()}
        full_card["decoder"] = dict(info, weights_file=decoder_path(path).name, num_tensors=len(decoder_state))
    full_card.update({
        "format": CARD_FORMAT,
        "encoder": encoder.config,
        "encoder_name": encoder_display_name(encoder),
        "feature_dim": encoder.feature_dim,
        "monai_network": type(encoder).segmentation_network,
        "num_parameters": int(sum(p.numel() for p in encoder.parameters())),
        "weights_file": path.name,
    })
    try:
        card_text = json.dumps(full_card, indent=2, sort_keys=True, default=str)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model card for {path} is not JSON-serialisable: {exc}") from exc
    if decoder is not None:
        atomic_torch_save(decoder_state, decoder_path(path))
    atomic_torch_save(state, path)
    atomic_write_text(card_path(path), card_text + "\n")
    logger.info("exported encoder %s, %d tensors, to %s", encoder_display_name(encoder, detailed=True), len(state),
                path)
    return path


def encoder_display_name(encoder: Encoder, detailed: bool = False) -> str:
    """The registry name the encoder was built under (``resnet10_tiny``), which its ``config`` may
    record as its base (``resnet10`` with narrower widths); with ``detailed``, the base and its
    arguments too: ``resnet10_tiny (resnet10, widths [16, 32, 64, 128])``."""
    base = str(encoder.config.get("name"))
    name = str(getattr(encoder, "registered_name", None) or base)
    if not detailed or name == base:
        return name
    args = ", ".join(f"{k} {v}" for k, v in (encoder.config.get("args") or {}).items())
    return f"{name} ({base}{', ' + args if args else ''})"


def read_card(path: str | os.PathLike) -> dict[str, Any]:
    """The model card of the weights file ``path`` (or of the card file itself)."""
    path = Path(path)
    card_file = path if path.name.endswith(".card.json") else card_path(path)
    if not card_file.is_file():
        raise CheckpointError(f"no model card {card_file} beside {path}; export the encoder with "
                              "medssl.models.export_encoder")
    try:
        card = json.loads(card_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"model card {card_file} is not valid JSON: {exc}") from exc
    if not isinstance(card, dict) or "encoder" not in card:
        raise CheckpointError(f"model card {card_file} has no 'encoder' entry; it was not written by medssl")
    return card


def load_pretrained(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[Encoder, dict]:
    """Rebuild the encoder described by the card beside ``path`` and load its weights (strictly)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"pretrained encoder {path} does not exist")
    card = read_card(path)
    encoder = encoder_from_config(card["encoder"])
    if card.get("encoder_name"):
        encoder.registered_name = str(card["encoder_name"])
    state = _read_state_dict(path, "encoder", map_location)
    try:
        result = encoder.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise CheckpointError(f"encoder weights {path} do not fit the card's encoder: {exc}") from exc
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(f"encoder weights {path} do not match the card's encoder "
                              f"({len(result.missing_keys)} missing, e.g. {result.missing_keys[:3]}; "
                              f"{len(result.unexpected_keys)} unexpected, e.g. {result.unexpected_keys[:3]})")
    return encoder, card


def load_pretrained_decoder(path: str | os.PathLike, map_location: str | torch.device = "cpu"
                            ) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """``(state, info)`` of the decoder exported beside the encoder ``path``, or None when its card
    has no decoder. Raises :class:`CheckpointError` when the card names a decoder file that is
    missing or unreadable."""
    path = Path(path)
    info = read_card(path).get("decoder")
    if not info:
        return None
    weights = path.with_name(str(info.get("weights_file") or decoder_path(path).name))
    if not weights.is_file():
        raise CheckpointError(f"the model card of {path} names decoder weights {weights.name}, which are missing; "
                              "copy them with the encoder or re-export it")
    return _read_state_dict(weights, "decoder", map_location), dict(info)


def _read_state_dict(path: Path, what: str, map_location: str | torch.device) -> dict[str, torch.Tensor]:
    """The state dict in ``path`` (tensors only); :class:`CheckpointError` naming the file otherwise."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated or foreign files raise several different types
        raise CheckpointError(f"cannot read {what} weights {path}: {exc}") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} does not hold a state dict")
    return state
