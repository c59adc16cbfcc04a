"""A pretrained encoder's network as a MONAI bundle that MONAI's own bundle tools load and run."""

from __future__ import annotations

import json

import pytest
import torch
from monai.bundle import ConfigParser, load, verify_net_in_out

from medssl.errors import ConfigError
from medssl.methods import build_method
from medssl.models import build_encoder, export_encoder
from medssl.models.export_bundle import export_monai_bundle
from nnunet_plans_fixture import write_tiny_plans

pytestmark = pytest.mark.filterwarnings("ignore:parsing config_file:UserWarning")  # MONAI's trust notice


def _export(tmp_path, encoder, method_name, **method_args):
    method = build_method(method_name, encoder, **method_args)
    decoder = method.decoder_export() if hasattr(method, "decoder_export") else None
    card = {"method": method_name, "steps": 3, "num_volumes": 5, "data_fingerprint": "abc123",
            "config": {"data": {"manifest": "/hospital/private/manifest.csv", "preprocess": {"target_spacing": [1.5] * 3}},
                       "pretrain": {"augmentation": {"patch_size": [32, 32, 32], "preset": "ct"}}}}
    return export_encoder(encoder, tmp_path / "run" / "encoder.pt", card, decoder=decoder)


def _assert_loads_and_runs(bundle, x, out_channels):
    """monai.bundle.load rebuilds network_def and loads every tensor of models/model.pt; it runs."""
    network = load(bundle.name, bundle_dir=bundle.parent, workflow_type="inference", device="cpu")
    saved = torch.load(bundle / "models" / "model.pt", weights_only=True)
    assert set(network.state_dict()) == set(saved)
    assert all(torch.equal(network.state_dict()[k], v) for k, v in saved.items())
    with torch.no_grad():
        assert network.eval()(x).shape == (x.shape[0], out_channels, *x.shape[2:])
    return network, saved


def test_a_monai_network_bundle_loads_with_monai_bundle_load_and_carries_the_card(tmp_path):
    torch.manual_seed(0)
    encoder = build_encoder("basicunet", spatial_dims=3, features=(4, 4, 8, 8, 16, 4))
    path = _export(tmp_path, encoder, "genesis", decoder="network")
    bundle = export_monai_bundle(path, tmp_path / "bundles" / "genesis_ct", out_channels=3)
    network, saved = _assert_loads_and_runs(bundle, torch.randn(1, 1, 32, 32, 32), 3)
    assert type(network).__name__ == "BasicUNet"
    for key, value in encoder.state_dict().items():  # the pretrained encoder is in the bundle
        assert torch.equal(saved[key], value)

    parser = ConfigParser()  # the plain parser reads the same definition
    parser.read_config(bundle / "configs" / "inference.json")
    assert parser.get_parsed_content("network_def").__class__.__name__ == "BasicUNet"

    metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
    card = metadata["medssl_model_card"]
    assert card["method"] == "genesis" and card["steps"] == 3 and card["data_fingerprint"] == "abc123"
    assert card["decoder"].startswith("pretrained") and card["output_layer"].startswith("fresh")
    assert "/hospital/private" not in (bundle / "configs" / "metadata.json").read_text()  # no local paths
    assert metadata["network_data_format"]["inputs"]["image"]["spatial_shape"] == [32, 32, 32]
    # MONAI's own check of the metadata's input and output shapes against the network
    verify_net_in_out(net_id="network_def", meta_file=str(bundle / "configs" / "metadata.json"),
                      config_file=str(bundle / "configs" / "inference.json"), device="cpu")

    with pytest.raises(ConfigError, match="already exists"):
        export_monai_bundle(path, bundle)
    export_monai_bundle(path, bundle, out_channels=2, overwrite=True)
    assert json.loads((bundle / "configs" / "metadata.json").read_text())[
        "network_data_format"]["outputs"]["pred"]["num_channels"] == 2


def test_a_scaled_resnet_bundle_registers_its_backbone_in_the_definition(tmp_path):
    torch.manual_seed(0)
    path = _export(tmp_path, build_encoder("resnet10_tiny", spatial_dims=3), "simclr", projection_dim=8)
    bundle = export_monai_bundle(path, tmp_path / "bundles" / "simclr_tiny")
    definition = json.loads((bundle / "configs" / "inference.json").read_text())["network_def"]
    assert "register_scaled_backbone" in definition["backbone"]
    _assert_loads_and_runs(bundle, torch.randn(1, 1, 32, 32, 32), 2)
    assert json.loads((bundle / "configs" / "metadata.json").read_text())["medssl_model_card"]["decoder"].startswith(
        "fresh")


def test_an_nnunet_bundle_holds_the_planned_network(tmp_path):
    pytest.importorskip("dynamic_network_architectures")
    torch.manual_seed(0)
    plans = write_tiny_plans(tmp_path)
    encoder = build_encoder("nnunet", plans=str(plans))
    path = _export(tmp_path, encoder, "spark")
    bundle = export_monai_bundle(path, tmp_path / "bundles" / "spark_nnunet", out_channels=3)
    definition = json.loads((bundle / "configs" / "inference.json").read_text())["network_def"]
    assert definition["_target_"] == "dynamic_network_architectures.architectures.unet.PlainConvUNet"
    # the plans' axis order (16, 32, 24), as nnU-Net feeds the network
    network, saved = _assert_loads_and_runs(bundle, torch.randn(1, 1, 16, 32, 24), 3)
    for key, value in encoder.state_dict().items():
        assert torch.equal(saved[key], value)
    metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert metadata["network_data_format"]["inputs"]["image"]["spatial_shape"] == [16, 32, 24]
    assert "dynamic-network-architectures" in metadata["required_packages_version"]


def test_medssl_export_writes_the_bundle_and_says_how_to_load_it(tmp_path, capsys, cli_logging):
    from medssl.cli import main

    path = _export(tmp_path, build_encoder("basicunet", spatial_dims=3, features=(4, 4, 8, 8, 16, 4)), "simclr",
                   projection_dim=8)
    assert main(["export", "--to", "monai-bundle", "--encoder", str(path), "--out", str(tmp_path / "b")]) == 0
    assert "monai.bundle.load('b'" in capsys.readouterr().out
    assert (tmp_path / "b" / "models" / "model.pt").is_file()
    assert main(["export", "--to", "monai-bundle", "--encoder", str(path), "--out", str(tmp_path / "b")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["export", "--to", "nnunet", "--encoder", str(path), "--out", str(tmp_path / "x.pth")]) == 2
    assert "not an nnU-Net network" in capsys.readouterr().err
