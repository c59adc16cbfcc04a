"""Transfer into the MONAI segmentation networks, classifiers, and export / load of encoders."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from monai.networks.nets import UNETR, BasicUNet, FlexibleUNet, SegResNet, SwinUNETR

from models_tiny_configs import SIZE, TINY_ARGS, encoder_param, needs_einops
from medssl.errors import CheckpointError, ConfigError
from medssl.models import (
    build_classifier,
    build_encoder,
    build_segmentation_network,
    export_encoder,
    load_encoder_weights,
    load_pretrained,
)

NETWORK = {"resnet": FlexibleUNet, "segresnet": SegResNet, "basicunet": BasicUNet, "swin": SwinUNETR,
           "vit": UNETR}


def _network_features(network, x):
    """The encoder path of each MONAI network, computed with the network's own modules."""
    if isinstance(network, FlexibleUNet):
        return list(network.encoder(x))
    if isinstance(network, SegResNet):
        return network.encode(x)[1]
    if isinstance(network, BasicUNet):
        x0 = network.conv_0(x)
        x1 = network.down_1(x0)
        x2 = network.down_2(x1)
        x3 = network.down_3(x2)
        return [x0, x1, x2, x3, network.down_4(x3)]
    if isinstance(network, SwinUNETR):
        return list(network.swinViT(x, network.normalize))
    if isinstance(network, UNETR):
        final, hidden = network.vit(x)
        return [network.proj_feat(hidden[i]) for i in (3, 6, 9)] + [network.proj_feat(final)]
    raise AssertionError(type(network))


FAMILIES_2D = ("resnet10_tiny", "segresnet", "basicunet", "swin", "vit")


@pytest.mark.parametrize(("name", "spatial_dims"), [encoder_param(name, 3) for name in TINY_ARGS]
                         + [encoder_param(name, 2) for name in FAMILIES_2D])
def test_transfer_loads_every_encoder_weight_and_reproduces_its_features(name, spatial_dims):
    torch.manual_seed(0)
    args = dict(TINY_ARGS[name])
    if name == "vit":
        args["num_layers"] = 12  # UNETR's fixed depth
    encoder = build_encoder(name, spatial_dims=spatial_dims, **args).eval()
    network = build_segmentation_network(encoder.config, out_channels=3).eval()
    family = "resnet" if name.startswith("resnet") else name
    assert isinstance(network, NETWORK[family])
    # SwinUNETR's instance-normed bottleneck needs more than one voxel at stride 32
    size = 64 if name == "swin" else SIZE
    x = torch.randn(2, 1, *(size,) * spatial_dims)
    with torch.no_grad():
        fresh = _network_features(network, x)
    assert not torch.allclose(fresh[-1], encoder.forward_features(x)[-1])

    report = load_encoder_weights(network, encoder.state_dict(), encoder.config)
    assert report.missing == [] and report.unexpected == [] and report.mismatched == []
    assert report.loaded == list(encoder.state_dict()) and report.complete
    with torch.no_grad():
        for ours, theirs in zip(encoder.forward_features(x), _network_features(network, x), strict=True):
            torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
        assert network(x).shape == (2, 3, *(size,) * spatial_dims)


def test_transfer_report_names_mismatched_unexpected_and_missing(caplog):
    encoder = build_encoder("resnet10", spatial_dims=2, in_channels=1, widths=(8, 8, 16, 16))
    other = build_encoder("resnet10", spatial_dims=2, in_channels=2, widths=(8, 8, 16, 16))
    network = build_segmentation_network(other.config, out_channels=2)
    state = dict(encoder.state_dict())
    state["projector.weight"] = torch.zeros(3)
    del state["encoder.layer4.0.bn2.bias"]
    with caplog.at_level(logging.WARNING, logger="medssl.models.transfer"):
        report = load_encoder_weights(network, state, other.config)
    assert report.mismatched == ["encoder.conv1.weight"]  # 1 vs 2 input channels
    assert report.unexpected == ["projector.weight"]
    assert set(report.missing) == {"encoder.conv1.weight", "encoder.layer4.0.bn2.bias"}
    assert not report.complete and "1 shape-mismatched" in caplog.text
    with pytest.raises(CheckpointError):
        load_encoder_weights(network, state, other.config, strict=True)
    # without a config the encoder part is read from the state dict's top-level names
    inferred = load_encoder_weights(network, state)
    assert set(inferred.missing) == {"encoder.conv1.weight", "encoder.layer4.0.bn2.bias"}
    assert inferred.unexpected == ["projector.weight"]


@needs_einops
def test_vit_that_unetr_cannot_take_is_refused():
    encoder = build_encoder("vit", spatial_dims=2, **TINY_ARGS["vit"], num_layers=4)
    with pytest.raises(ConfigError, match="12 layers"):
        build_segmentation_network(encoder.config, out_channels=2)


def test_segmentation_network_arguments_pass_through():
    encoder = build_encoder("resnet10_tiny", spatial_dims=2)
    network = build_segmentation_network(encoder.config, out_channels=2, decoder_channels=(32, 16, 8, 8, 4))
    assert network.segmentation_head[0].in_channels == 4
    default = build_segmentation_network(encoder.config, out_channels=2)
    assert default.segmentation_head[0].in_channels == 4  # scaled from MONAI's 16 at a quarter of the width


def test_classifier_shares_the_encoder_and_trains():
    encoder = build_encoder("resnet10_tiny", spatial_dims=2)
    classifier = build_classifier(encoder, num_classes=3, dropout=0.1)
    assert classifier.encoder is encoder
    logits = classifier(torch.randn(4, 1, SIZE, SIZE))
    assert logits.shape == (4, 3)
    logits.sum().backward()
    assert encoder.encoder.conv1.weight.grad is not None
    assert set(classifier.state_dict()) >= {f"encoder.{k}" for k in encoder.state_dict()}


def test_export_and_load_pretrained_round_trip(tmp_path):
    torch.manual_seed(0)
    encoder = build_encoder("segresnet", spatial_dims=3, init_filters=8, blocks_down=(1, 1, 1)).eval()
    with torch.no_grad():  # move the weights away from their initial values
        for parameter in encoder.parameters():
            parameter.add_(0.01)
    card = {"method": "barlow_twins", "steps": 12, "data_fingerprint": "abc123", "config": {"lr": 0.1}}
    path = export_encoder(encoder, tmp_path / "run" / "encoder.pt", card)
    card_file = tmp_path / "run" / "encoder.card.json"
    written = json.loads(card_file.read_text())
    assert written["method"] == "barlow_twins" and written["monai_network"] == "SegResNet"
    assert written["encoder"] == encoder.config and written["feature_dim"] == 32
    assert not list((tmp_path / "run").glob(".*tmp"))  # atomic: no temporary files left

    restored, restored_card = load_pretrained(path)
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(restored.eval()(x), encoder(x))
    assert restored_card["data_fingerprint"] == "abc123"

    # the plain state dict loads straight into the MONAI network it came from
    network = SegResNet(spatial_dims=3, init_filters=8, blocks_down=(1, 1, 1), blocks_up=(1, 1), out_channels=2)
    result = network.load_state_dict(torch.load(path, weights_only=True), strict=False)
    assert result.unexpected_keys == []
    assert not [k for k in result.missing_keys if k.startswith(("convInit", "down_layers"))]


def test_load_pretrained_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_pretrained(tmp_path / "missing.pt")
    encoder = build_encoder("resnet10_tiny", spatial_dims=2)
    path = export_encoder(encoder, tmp_path / "encoder.pt", {"method": "simclr"})
    (tmp_path / "encoder.card.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_pretrained(path)
    other = build_encoder("resnet10", spatial_dims=2, widths=(8, 8, 8, 8))
    export_encoder(other, tmp_path / "encoder.pt", {})
    card = json.loads((tmp_path / "encoder.card.json").read_text())
    card["encoder"] = encoder.config  # card and weights disagree
    (tmp_path / "encoder.card.json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="do not fit"):
        load_pretrained(path)
    path.write_bytes(b"truncated")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_pretrained(path)
