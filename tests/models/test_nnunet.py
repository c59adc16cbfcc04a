"""The network nnU-Net v2 planned, as a medssl encoder, and its export for nnU-Net's own loader.

The tiny plans file (``nnunet_plans_fixture``) has nnU-Net's layout: an anisotropic first stage, a
``transpose_forward`` that is not the identity and a configuration that inherits from another.
The tests that build networks need ``dynamic-network-architectures`` (``medssl[nnunet]``; ``make
test`` installs it); the export test calls nnU-Net's real ``load_pretrained_weights``.
"""

from __future__ import annotations

import json

import pytest
import torch

from medssl.config import load_config
from medssl.errors import ConfigError
from medssl.models.nnunet_plans import plan_from_dict, read_plans
from nnunet_plans_fixture import tiny_plans, write_tiny_plans


@pytest.fixture
def plans_file(tmp_path):
    return write_tiny_plans(tmp_path)


def test_plans_follow_inheritance_and_give_patch_and_spacing_in_medssl_axis_order(plans_file):
    plain = read_plans(plans_file, "3d_fullres")
    residual = read_plans(plans_file, "3d_resenc")
    assert plain.network_class_name.endswith("PlainConvUNet")
    assert residual.network_class_name.endswith("ResidualEncoderUNet")
    assert residual.patch_size == plain.patch_size == (16, 32, 24)  # inherited from 3d_fullres
    # transpose_forward [2, 0, 1]: plans axis 0 is the image's x, axis 1 its z, axis 2 its y
    assert plain.patch_size_xyz() == (16, 24, 32)
    assert plain.spacing_xyz() == (3.0, 1.5, 1.0)
    assert plain.spatial_dims == 3 and plain.dataset_name == "Dataset999_Tiny"


def test_bad_plans_are_config_errors_naming_file_and_reason(tmp_path, plans_file):
    with pytest.raises(ConfigError, match="does not exist"):
        read_plans(tmp_path / "missing.json", "3d_fullres")
    with pytest.raises(ConfigError, match="no configuration '3d_lowres'.*3d_fullres, 3d_resenc"):
        read_plans(plans_file, "3d_lowres")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ConfigError, match="broken.json cannot be read as JSON"):
        read_plans(broken, "3d_fullres")
    circular = tiny_plans()
    circular["configurations"]["3d_fullres"]["inherits_from"] = "3d_resenc"
    with pytest.raises(ConfigError, match="inherit in a circle"):
        plan_from_dict(circular, "3d_resenc")
    legacy = tiny_plans()
    del legacy["configurations"]["3d_fullres"]["architecture"]
    with pytest.raises(ConfigError, match="no 'architecture' entry"):
        plan_from_dict(legacy, "3d_fullres")


def test_a_config_takes_patch_size_spacing_and_dimensions_from_the_plans(plans_file):
    config = load_config(None, ["pretrain.encoder.name=nnunet", f"pretrain.encoder.args.plans={plans_file}"])
    assert config.pretrain.augmentation.patch_size == (16, 24, 32)
    assert config.data.preprocess.target_spacing == (3.0, 1.5, 1.0)
    assert config.pretrain.encoder.spatial_dims == 3
    chosen = load_config(None, ["pretrain.encoder.name=nnunet", f"pretrain.encoder.args.plans={plans_file}",
                                "pretrain.augmentation.patch_size=[32,32,32]"])
    assert chosen.pretrain.augmentation.patch_size == (32, 32, 32)  # what the config sets wins
    with pytest.raises(ConfigError, match="no configuration"):
        load_config(None, ["pretrain.encoder.name=nnunet", f"pretrain.encoder.args.plans={plans_file}",
                           "pretrain.encoder.args.configuration=2d"])


@pytest.mark.parametrize("configuration", ["3d_fullres", "3d_resenc"])
def test_the_network_is_the_one_nnunet_builds_from_the_plans(plans_file, configuration):
    pytest.importorskip("dynamic_network_architectures")
    nnunet_builder = pytest.importorskip("nnunetv2.utilities.get_network_from_plans")
    from medssl.models import build_encoder

    encoder = build_encoder("nnunet", plans=str(plans_file), configuration=configuration)
    architecture = read_plans(plans_file, configuration).architecture()
    theirs = nnunet_builder.get_network_from_plans(
        architecture["network_class_name"], architecture["arch_kwargs"], architecture["_kw_requires_import"],
        input_channels=1, output_channels=3, deep_supervision=True)
    ours = encoder.build_segmentation_network(out_channels=3, deep_supervision=True)
    assert type(ours) is type(theirs)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    network_keys = set(theirs.state_dict())
    assert {f"{k}" for k in encoder.state_dict()} <= network_keys  # the encoder's names are the network's
    assert all(k.startswith("encoder.") for k in encoder.state_dict())


def test_encoder_features_are_the_network_encoders_in_medssl_axis_order(plans_file, tmp_path):
    pytest.importorskip("dynamic_network_architectures")
    from medssl.models import build_encoder, encoder_from_config

    torch.manual_seed(0)
    encoder = build_encoder("nnunet", plans=str(plans_file)).eval()
    assert encoder.feature_channels == [4, 8, 16] and encoder.feature_dim == 16
    # plans strides (1,1,1), (1,2,2), (2,2,2) on plans axes (x, z, y): x halves once, y and z twice
    assert encoder.cell_size == (2, 4, 4) and encoder.input_multiple == 4
    x = torch.randn(2, 1, 16, 24, 32)
    features = encoder.forward_features(x)
    assert [tuple(f.shape[2:]) for f in features] == [(16, 24, 32), (16, 12, 16), (8, 6, 8)]
    with torch.no_grad():  # the network's own encoder on the plans-ordered patch (x, z, y)
        planned = encoder.encoder(x.permute(0, 1, 2, 4, 3))
    torch.testing.assert_close(features[-1], planned[-1].permute(0, 1, 2, 4, 3))
    assert encoder(x).shape == (2, 16)
    network = encoder.build_segmentation_network(out_channels=2)
    assert network(x).shape == (2, 2, 16, 24, 32)

    plans_file.unlink()  # the config records the architecture: the encoder rebuilds without the plans
    rebuilt = encoder_from_config(json.loads(json.dumps(encoder.config)))
    rebuilt.load_state_dict(encoder.state_dict())
    torch.testing.assert_close(rebuilt.eval()(x), encoder(x))


def test_spark_pretrains_the_whole_planned_network_with_anisotropic_cells(plans_file):
    pytest.importorskip("dynamic_network_architectures")
    from medssl.methods import build_method
    from medssl.models import build_encoder

    torch.manual_seed(0)
    method = build_method("spark", build_encoder("nnunet", plans=str(plans_file), configuration="3d_resenc"))
    assert method.cell == (2, 4, 4) and type(method.head).__name__ == "ResidualEncoderUNet"
    assert method.head.encoder is method.encoder.encoder is method.head.decoder.encoder  # shared, not copied
    loss, logs = method({"views": [torch.rand(2, 1, 16, 24, 32)]})
    loss.backward()
    assert float(logs["masked_fraction"]) == pytest.approx(0.6, abs=0.02)
    assert method.encoder.encoder.stem.convs[0].conv.weight.grad.abs().sum() > 0
    assert method.head.decoder.stages[0].convs[0].conv.weight.grad.abs().sum() > 0
    decoder_state, info = method.decoder_export()
    assert info["network"] == "ResidualEncoderUNet"
    assert decoder_state and not any(k.startswith("encoder.") or ".encoder." in k for k in decoder_state)
    with pytest.raises(Exception, match="multiple of the encoder's total stride"):
        method({"views": [torch.rand(2, 1, 15, 24, 32)]})


def test_a_restoration_task_with_decoder_network_trains_the_planned_decoder(plans_file):
    pytest.importorskip("dynamic_network_architectures")
    from medssl.methods import build_method
    from medssl.models import build_encoder

    torch.manual_seed(0)
    method = build_method("genesis", build_encoder("nnunet", plans=str(plans_file)), decoder="network")
    assert type(method.head).__name__ == "PlainConvUNet" and method.head.encoder is method.encoder.encoder
    x = torch.rand(2, 1, 16, 24, 32)
    loss, _ = method({"input": x, "target": x})
    loss.backward()
    assert method.head.decoder.stages[0].convs[0].conv.weight.grad.abs().sum() > 0
    assert method.encoder.encoder.stages[0][0].convs[0].conv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("method_name", ["spark", "simclr"])
def test_the_nnunet_checkpoint_loads_with_nnunets_own_loader(plans_file, tmp_path, method_name):
    pytest.importorskip("dynamic_network_architectures")
    loader = pytest.importorskip("nnunetv2.run.load_pretrained_weights")
    from medssl.methods import build_method
    from medssl.models import build_encoder, export_encoder
    from medssl.models.export import card_path
    from medssl.models.export_nnunet import export_nnunet_checkpoint
    from medssl.models.nnunet_plans import build_planned_network

    torch.manual_seed(0)
    encoder = build_encoder("nnunet", plans=str(plans_file))
    method = build_method(method_name, encoder)
    decoder = method.decoder_export() if hasattr(method, "decoder_export") else None
    path = export_encoder(encoder, tmp_path / "run" / "encoder.pt", {"method": method_name, "steps": 1},
                          decoder=decoder)
    out = export_nnunet_checkpoint(path, tmp_path / "pretrained.pth")

    # what nnUNetv2_train -pretrained_weights does: the planned network for the dataset's labels
    # (3 classes, deep supervision), then nnU-Net's loader
    network = build_planned_network(read_plans(plans_file, "3d_fullres"), in_channels=1, num_classes=3,
                                    deep_supervision=True)
    checkpoint = torch.load(out, weights_only=False)
    expected = {k for k in network.state_dict() if ".seg_layers." not in k}
    assert set(checkpoint["network_weights"]) == expected
    loader.load_pretrained_weights(network, str(out))
    loaded = network.state_dict()
    for key, value in encoder.state_dict().items():
        assert torch.equal(loaded[key], value)
        assert torch.equal(loaded["decoder." + key], value)  # the decoder's reference to the encoder
    card = json.loads(card_path(out).read_text())
    assert checkpoint["medssl"] == card
    assert card["method"] == method_name and card["nnunet"]["configuration"] == "3d_fullres"
    if method_name == "spark":  # the whole network was pretrained: its decoder is in the file
        for key, value in method.head.state_dict().items():
            if ".seg_layers." not in key:
                assert torch.equal(loaded[key], value)
        assert card["nnunet"]["decoder"].startswith("pretrained")
    else:
        assert card["nnunet"]["decoder"].startswith("nnU-Net's initialisation")


def test_only_an_nnunet_encoder_exports_for_nnunet(tmp_path):
    from medssl.models import build_encoder, export_encoder
    from medssl.models.export_nnunet import export_nnunet_checkpoint

    path = export_encoder(build_encoder("resnet10_tiny", spatial_dims=2), tmp_path / "encoder.pt", {})
    with pytest.raises(ConfigError, match="not an nnU-Net network"):
        export_nnunet_checkpoint(path, tmp_path / "out.pth")
    assert not (tmp_path / "out.pth").exists()


def test_medssl_export_to_nnunet_prints_the_training_command(plans_file, tmp_path, capsys, cli_logging):
    pytest.importorskip("dynamic_network_architectures")
    from medssl.cli import main
    from medssl.models import build_encoder, export_encoder

    path = export_encoder(build_encoder("nnunet", plans=str(plans_file)), tmp_path / "encoder.pt", {"method": "x"})
    assert main(["export", "--to", "nnunet", "--encoder", str(path), "--out", str(tmp_path / "nn.pth")]) == 0
    printed = capsys.readouterr().out
    assert "nnUNetv2_train Dataset999_Tiny 3d_fullres FOLD -pretrained_weights nn.pth" in printed
    assert (tmp_path / "nn.card.json").is_file()
