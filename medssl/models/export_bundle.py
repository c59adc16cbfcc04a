"""Export a pretrained encoder's segmentation network as a MONAI bundle.

A MONAI bundle (MONAI's model-sharing format, docs.monai.io "Model Bundle") is a folder::

    <name>/
      configs/metadata.json    what the model is: versions, task, network_data_format (inputs, outputs),
                               and here the medssl model card's facts (``medssl_model_card``)
      configs/inference.json   the network definition (``network_def``: ``_target_`` class + arguments)
      models/model.pt          the network's state dict
      docs/README.md           how it was made and how to load it

``monai.bundle.load(name, bundle_dir=parent, workflow_type="inference")`` (or
``ConfigParser``) rebuilds ``network_def`` and loads ``model.pt`` into it, without medssl: the
network is the encoder's own MONAI segmentation network (FlexibleUNet, SegResNet, BasicUNet,
SwinUNETR, UNETR) or, for ``nnunet``, the planned ``PlainConvUNet`` / ``ResidualEncoderUNet``
from ``dynamic-network-architectures``. Two exceptions need medssl importable: ResNets at
non-default widths (``resnet10_tiny``) register their scaled backbone with MONAI in a ``$``
expression of the definition.

Weights: the encoder's pretrained ones; the decoder's too when the method trained the whole network
(``spark``, ``pretext`` with ``decoder: network``; its ``network_args`` are then used), fresh
otherwise; the output layer has ``out_channels`` outputs and is fresh unless the pretrained one has
that many (the metadata says which). nnU-Net networks take their input in nnU-Net's axis order (the
plans', see :mod:`medssl.models.nnunet_plans`), as nnU-Net feeds them.

Example:
    >>> import tempfile, pathlib
    >>> from medssl.models import build_encoder, export_encoder
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> path = export_encoder(build_encoder("basicunet", spatial_dims=2, features=(4, 4, 8, 8, 16, 4)),
    ...                       folder / "encoder.pt", {"method": "simclr", "steps": 10})
    >>> bundle = export_monai_bundle(path, folder / "bundle", out_channels=2)
    >>> sorted(str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file())
    ['configs/inference.json', 'configs/metadata.json', 'docs/README.md', 'models/model.pt']
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Any

import torch

from medssl.errors import CheckpointError, ConfigError
from medssl.models.export import load_pretrained, load_pretrained_decoder
from medssl.models.transfer import load_decoder_weights

logger = logging.getLogger(__name__)

BUNDLE_VERSION = "0.1.0"
METADATA_SCHEMA = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"
#: card entries left out of the bundle: the run's full config holds local paths (manifest, cache)
CARD_PRIVATE = ("config",)


def _version(package: str) -> str:
    try:
        return package_metadata.version(package)
    except package_metadata.PackageNotFoundError:
        return "unknown"


def _definition(encoder: Any, out_channels: int, network_args: dict[str, Any]) -> dict[str, Any]:
    try:
        return encoder.segmentation_network_definition(out_channels, **network_args)
    except NotImplementedError as exc:  # pragma: no cover - every registry encoder has one
        raise ConfigError(f"encoder {encoder.name!r} has no MONAI network definition to export") from exc


def _bundle_network(encoder: Any, encoder_path: Path, out_channels: int) -> tuple[Any, dict[str, Any], str, str]:
    """The network with the pretrained weights in place, its definition, and where the decoder and
    the output layer came from."""
    decoder = load_pretrained_decoder(encoder_path)
    network_args = dict((decoder[1].get("network_args") or {}) if decoder else {})
    definition = _definition(encoder, out_channels, network_args)
    from medssl.models.base import instantiate_definition

    plain = {k: v for k, v in definition.items() if not (isinstance(v, str) and v.startswith("$"))}
    if len(plain) == len(definition):
        network = instantiate_definition(definition)
    else:  # an nnU-Net network or a scaled backbone: the medssl builder makes the same module
        network = encoder.build_segmentation_network(out_channels, **network_args)
    encoder.share_into(network)
    decoder_source, output_source = "fresh (the method pretrained the encoder only)", "fresh"
    if decoder is not None:
        report = load_decoder_weights(network, decoder[0], encoder)
        if report.unexpected:
            raise CheckpointError(f"the decoder exported beside {encoder_path} does not fit the network "
                                  f"({report.summary()})")
        decoder_source = f"pretrained ({decoder[1].get('pretext', 'whole-network method')})"
        output_source = "fresh (pretrained with another number of outputs)" if report.mismatched else "pretrained"
    return network, definition, decoder_source, output_source


def bundle_metadata(card: dict[str, Any], encoder: Any, definition: dict[str, Any], out_channels: int,
                    decoder_source: str, output_source: str) -> dict[str, Any]:
    """``configs/metadata.json``: MONAI's metadata fields, plus the model card's facts."""
    config = card.get("config") or {}
    patch = list((config.get("pretrain") or {}).get("augmentation", {}).get("patch_size") or [])
    plan = (encoder.config.get("args") or {}).get("plan") or {}
    if plan.get("patch_size"):
        patch = list(plan["patch_size"])  # nnU-Net's axis order, as the network takes it
    if len(patch) != encoder.spatial_dims:
        patch = [2 * max(1, int(encoder.input_multiple))] * encoder.spatial_dims
    packages = {"monai": _version("monai"), "torch": torch.__version__}
    target = str(definition.get("_target_", ""))
    if target.startswith("dynamic_network_architectures"):
        packages["dynamic-network-architectures"] = _version("dynamic-network-architectures")
    if any(isinstance(v, str) and "medssl" in v for v in definition.values()):
        packages["medssl"] = _version("medssl")
    facts = {k: v for k, v in card.items() if k not in CARD_PRIVATE}
    facts["preprocess"] = (config.get("data") or {}).get("preprocess")
    facts["decoder"] = decoder_source
    facts["output_layer"] = output_source
    network = target.rsplit(".", 1)[-1]
    method = card.get("method", "?")
    image = {"type": "image", "format": "magnitude", "modality": str((config.get("pretrain") or {})
                                                                   .get("augmentation", {}).get("preset", "any")),
             "num_channels": int(encoder.in_channels), "spatial_shape": patch, "dtype": "float32",
             "value_range": [0, 1], "is_patch_data": True,
             "channel_def": {str(i): f"image channel {i}" for i in range(int(encoder.in_channels))}}
    pred = {"type": "image", "format": "segmentation", "num_channels": int(out_channels), "spatial_shape": patch,
            "dtype": "float32", "value_range": [], "is_patch_data": True,
            "channel_def": {str(i): f"class {i}" for i in range(int(out_channels))}}
    return {
        "schema": METADATA_SCHEMA,
        "version": BUNDLE_VERSION,
        "changelog": {BUNDLE_VERSION: f"exported by medssl from {card.get('weights_file', 'encoder.pt')}"},
        "monai_version": packages["monai"],
        "pytorch_version": packages["torch"],
        "numpy_version": _version("numpy"),
        "required_packages_version": {k: v for k, v in packages.items() if k not in ("monai", "torch")},
        "name": f"{network} pretrained with {method} (medssl)",
        "task": f"self-supervised pretrained {network} ({method}), to fine-tune for segmentation",
        "description": (f"{network} whose encoder ({card.get('encoder_name', encoder.name)}) was pretrained with "
                        f"{method} for {card.get('steps', '?')} steps on {card.get('num_volumes', '?')} unlabeled "
                        f"volumes by medssl; decoder: {decoder_source}; output layer ({out_channels} channels): "
                        f"{output_source}. Fine-tune it before use: it does not segment anything yet."),
        "authors": "exported by medssl",
        "copyright": "the owner of the pretraining data and run",
        "data_source": f"unlabeled volumes, medssl data fingerprint {card.get('data_fingerprint', 'unknown')}",
        "data_type": "nifti/dicom, preprocessed by medssl (see medssl_model_card.preprocess)",
        "network_data_format": {"inputs": {"image": image}, "outputs": {"pred": pred}},
        "medssl_model_card": facts,
    }


def inference_config(definition: dict[str, Any]) -> dict[str, Any]:
    """``configs/inference.json``: the network definition and the device."""
    return {
        "imports": ["$import torch"],
        "bundle_root": ".",
        "device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
        "network_def": definition,
        "network": "$@network_def.to(@device)",
    }


def export_monai_bundle(encoder_path: str | os.PathLike, out: str | os.PathLike, out_channels: int = 2,
                        overwrite: bool = False) -> Path:
    """Write the MONAI bundle of the encoder at ``encoder_path`` (``encoder.pt`` with its model
    card) to the folder ``out``; returns ``out``. The folder appears whole or not at all."""
    out = Path(out)
    encoder_path = Path(encoder_path)
    if out_channels < 1:
        raise ConfigError(f"a bundle's network needs out_channels >= 1, got {out_channels}")
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} already exists; choose another folder or pass --overwrite")
    encoder, card = load_pretrained(encoder_path)
    network, definition, decoder_source, output_source = _bundle_network(encoder, encoder_path, out_channels)
    metadata = bundle_metadata(card, encoder, definition, out_channels, decoder_source, output_source)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in network.state_dict().items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (staging / "configs").mkdir()
        (staging / "models").mkdir()
        (staging / "docs").mkdir()
        (staging / "configs" / "metadata.json").write_text(
            json.dumps(metadata, indent=2, default=str) + "\n", encoding="utf-8")
        (staging / "configs" / "inference.json").write_text(
            json.dumps(inference_config(definition), indent=2, default=str) + "\n", encoding="utf-8")
        torch.save(state, staging / "models" / "model.pt")
        (staging / "docs" / "README.md").write_text(_readme(metadata, out.name), encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("exported a MONAI bundle of %s (%d tensors) to %s", definition.get("_target_"), len(state), out)
    return out


def _readme(metadata: dict[str, Any], name: str) -> str:
    card = metadata["medssl_model_card"]
    return "\n".join([
        f"# {metadata['name']}",
        "",
        metadata["description"],
        "",
        f"- method: {card.get('method')}, steps: {card.get('steps')}, seed: {card.get('seed')}",
        f"- encoder: {card.get('encoder_name')} ({card.get('num_parameters')} parameters)",
        f"- decoder: {card.get('decoder')}; output layer: {card.get('output_layer')}",
        "",
        "Load it (the folder's parent is the bundle directory):",
        "",
        "```python",
        "import monai",
        f"network = monai.bundle.load({name!r}, bundle_dir='.', workflow_type='inference', device='cpu')",
        "```",
        "",
    ])
