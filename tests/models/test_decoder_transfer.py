"""A restoration method that pretrains the whole segmentation network (Models Genesis design:
``decoder="network"``) ships its decoder beside the encoder, and fine-tuning loads it.

Pinned here: the pretext network shares the encoder's modules (training it trains the encoder);
the exported decoder holds no encoder weight; ``encoder.pt`` stays a plain encoder; the decoder
weights reach the fine-tuning network except the last layer (1 channel there, one per class
here); ``transfer_decoder=False`` and scratch leave the decoder at the same random start; a card
that names a missing decoder file is an error naming it.
"""

from __future__ import annotations

import json

import pytest
import torch

from medssl.errors import CheckpointError, ConfigError
from medssl.eval.networks import build_finetune_model
from medssl.methods import build_method
from medssl.models import build_encoder, export_encoder, load_pretrained, load_pretrained_decoder

ENCODER = {"name": "resnet10_tiny", "spatial_dims": 3, "in_channels": 1}


def genesis_with_network(seed: int = 0):
    torch.manual_seed(seed)
    encoder = build_encoder(**ENCODER)
    return build_method("genesis", encoder, decoder="network")


def test_the_pretext_network_shares_the_encoder_modules():
    method = genesis_with_network()
    for name in type(method.encoder).network_modules:
        assert getattr(method.head, name) is getattr(method.encoder, name)
    x = torch.rand(2, 1, 32, 32, 32)  # the 5-level network needs 32 voxels a side
    before = {k: v.clone() for k, v in method.encoder.state_dict().items() if v.is_floating_point()}
    optimizer = torch.optim.SGD(method.parameters(), lr=0.1)
    loss, _ = method({"input": x * 0.5, "target": x})  # restore x from a corrupted copy
    loss.backward()
    optimizer.step()
    changed = [k for k, v in method.encoder.state_dict().items() if k in before and not torch.equal(v, before[k])]
    assert changed, "a step on the restoration loss must move the shared encoder weights"


def test_export_writes_a_plain_encoder_and_the_decoder_beside_it(tmp_path):
    method = genesis_with_network()
    state, info = method.decoder_export()
    modules = type(method.encoder).network_modules
    assert state and not any(k.split(".")[0] in modules for k in state)
    assert info["pretext"] == "genesis" and info["out_channels"] == 1
    path = export_encoder(method.encoder, tmp_path / "encoder.pt", {"method": "genesis"}, decoder=(state, info))
    assert (tmp_path / "encoder.decoder.pt").is_file()
    card = json.loads((tmp_path / "encoder.card.json").read_text())
    assert card["decoder"]["num_tensors"] == len(state)
    encoder, _ = load_pretrained(path)  # the encoder file alone loads as before
    assert set(encoder.state_dict()) == set(method.encoder.state_dict())
    loaded_state, loaded_info = load_pretrained_decoder(path)
    assert set(loaded_state) == set(state) and all(torch.equal(loaded_state[k], state[k]) for k in state)
    assert loaded_info["pretext"] == "genesis"


def test_a_plain_encoder_has_no_decoder(tmp_path):
    path = export_encoder(build_encoder(**ENCODER), tmp_path / "encoder.pt", {"method": "simclr"})
    assert load_pretrained_decoder(path) is None


def test_a_missing_decoder_file_is_an_error_naming_it(tmp_path):
    method = genesis_with_network()
    path = export_encoder(method.encoder, tmp_path / "encoder.pt", {}, decoder=method.decoder_export())
    (tmp_path / "encoder.decoder.pt").unlink()
    with pytest.raises(CheckpointError, match="encoder.decoder.pt"):
        load_pretrained_decoder(path)


def test_finetuning_loads_the_pretrained_decoder_except_the_last_layer(tmp_path):
    method = genesis_with_network(seed=3)
    with torch.no_grad():  # make the pretrained decoder unmistakable
        for name, parameter in method.head.named_parameters():
            if name.split(".")[0] not in type(method.encoder).network_modules:
                parameter.add_(1.0)
    state, info = method.decoder_export()
    path = export_encoder(method.encoder, tmp_path / "encoder.pt", {}, decoder=(state, info))

    with_decoder = build_finetune_model("segmentation", ENCODER, str(path), num_classes=3, seed=7)
    without = build_finetune_model("segmentation", ENCODER, str(path), num_classes=3, seed=7, transfer_decoder=False)
    scratch = build_finetune_model("segmentation", ENCODER, None, num_classes=3, seed=7)

    report = with_decoder.decoder_transfer
    assert report is not None and report.loaded and not report.unexpected and not report.missing
    assert report.mismatched, "the 1-channel restoration output cannot fit a 3-class head"
    target = with_decoder.network.state_dict()
    for key in report.loaded:
        assert torch.equal(target[key], state[key]), key
    fresh = scratch.network.state_dict()
    for key in report.mismatched:  # the last layer starts as every other init's
        assert torch.equal(target[key], fresh[key]), key
    assert without.decoder_transfer is None
    for key in report.loaded:
        assert torch.equal(without.network.state_dict()[key], fresh[key]), key


def test_network_decoder_needs_an_image_or_mask_target():
    with pytest.raises(ConfigError, match="decoder='network'"):
        build_method("rotation", build_encoder(**ENCODER), decoder="network")
    with pytest.raises(ConfigError, match="network_args"):
        build_method("genesis", build_encoder(**ENCODER), network_args={"decoder_channels": [8, 8, 8, 8, 8]})
