"""Export a pretrained ``nnunet`` encoder as an nnU-Net v2 checkpoint for ``-pretrained_weights``.

nnU-Net v2 fine-tunes from pretrained weights with ``nnUNetv2_train DATASET CONFIGURATION FOLD
-pretrained_weights FILE``: ``nnunetv2.run.load_pretrained_weights.load_pretrained_weights`` reads
``torch.load(FILE)["network_weights"]`` and requires every key of the planned network's
``state_dict``, except the segmentation outputs (keys containing ``.seg_layers.``), with the same
shape. :func:`export_nnunet_checkpoint` writes that file from an exported encoder (``encoder.pt``
with its model card, :mod:`medssl.models.export`):

- ``network_weights``: the planned network's ``state_dict`` (the encoder's pretrained weights; the
  decoder's pretrained weights when the method trained the whole network, ``spark`` or a pretext
  task with ``decoder: network``, and nnU-Net's own initialisation otherwise, which the card says),
  ``seg_layers`` left out;
- ``medssl``: what the model card says (plain data), for whoever opens the file;

and the model card beside it (``FILE.card.json``: the encoder's card plus an ``nnunet`` entry with
the plans' name and configuration, the network class, where the decoder came from and the command
that uses the file).

The network must be the one the plans build for the *same* ``input_channels`` (nnU-Net reads them
from ``dataset.json``): the first convolution's shape is checked by nnU-Net's loader.

Example (needs ``medssl[nnunet]``)::

    medssl export --to nnunet --encoder runs/spark_nnunet/encoder.pt --out pretrained_nnunet.pth
    nnUNetv2_train 999 3d_fullres 0 -pretrained_weights pretrained_nnunet.pth
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from medssl.errors import CheckpointError, ConfigError
from medssl.models.encoders.nnunet import NnUNetEncoder
from medssl.models.export import card_path, load_pretrained, load_pretrained_decoder
from medssl.models.transfer import load_decoder_weights
from medssl.utils.atomic import atomic_torch_save, atomic_write_text

logger = logging.getLogger(__name__)

NNUNET_FORMAT = "nnunet-v2-pretrained-weights/1"
#: the parts of a key nnU-Net's loader never transfers (the segmentation outputs)
SEGMENTATION_OUTPUTS = ".seg_layers."


def planned_network_weights(encoder_path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(state, info)``: the planned network's weights with the pretrained encoder (and decoder,
    when exported beside it) in place, segmentation outputs left out; ``info`` says where each part
    came from."""
    encoder, card = load_pretrained(encoder_path)
    if not isinstance(encoder, NnUNetEncoder):
        raise ConfigError(f"{encoder_path}: encoder {card.get('encoder_name', encoder.name)!r} is not an nnU-Net "
                          "network; pretrain with pretrain.encoder.name=nnunet and pretrain.encoder.args.plans="
                          "<nnUNetPlans.json> to export for nnU-Net")
    network = encoder.build_segmentation_network(out_channels=1)
    encoder.share_into(network)
    decoder = load_pretrained_decoder(encoder_path)
    decoder_source = "nnU-Net's initialisation (the method pretrained the encoder only)"
    if decoder is not None:
        report = load_decoder_weights(network, decoder[0], encoder)
        missing = [k for k in report.missing if SEGMENTATION_OUTPUTS not in k]
        if missing or report.mismatched and any(SEGMENTATION_OUTPUTS not in k for k in report.mismatched):
            raise CheckpointError(f"the decoder exported beside {encoder_path} does not fit the planned network "
                                  f"({report.summary()})")
        decoder_source = f"pretrained ({decoder[1].get('pretext', 'whole-network method')})"
    state = {key: value.detach().cpu().contiguous().clone() for key, value in network.state_dict().items()
             if SEGMENTATION_OUTPUTS not in key}
    plan = dict(encoder.config["args"].get("plan") or {})
    info = {
        "format": NNUNET_FORMAT,
        "network_class_name": encoder.architecture["network_class_name"],
        "plans_name": plan.get("plans_name", ""),
        "dataset_name": plan.get("dataset_name", ""),
        "configuration": encoder.config["args"].get("configuration"),
        "input_channels": encoder.in_channels,
        "encoder": "pretrained",
        "decoder": decoder_source,
        "excluded": "segmentation outputs (*.seg_layers.*): nnU-Net builds them for the dataset's labels",
        "num_tensors": len(state),
    }
    return state, dict(info, card=card)


def export_nnunet_checkpoint(encoder_path: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write the nnU-Net v2 checkpoint of the encoder at ``encoder_path`` to ``out`` and its model
    card beside it (``out`` with ``.card.json``); returns ``out``."""
    out = Path(out)
    state, info = planned_network_weights(encoder_path)
    card = dict(info.pop("card"))
    dataset = info["dataset_name"] or "DATASET"
    info["usage"] = (f"nnUNetv2_train {dataset} {info['configuration']} FOLD -pretrained_weights {out.name} "
                     "(the same plans; the dataset's input channels must be the encoder's)")
    card["nnunet"] = info
    card["weights_file"] = out.name
    card_text = json.dumps(card, indent=2, sort_keys=True, default=str)
    checkpoint = {"network_weights": state, "medssl": json.loads(card_text)}
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(checkpoint, out)
    atomic_write_text(card_path(out), card_text + "\n")
    logger.info("exported %d tensors of %s for nnU-Net to %s (decoder: %s)", len(state), info["network_class_name"],
                out, info["decoder"])
    return out
