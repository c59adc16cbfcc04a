"""Each encoder states the multiple its segmentation network needs; the statement matches the network."""

import pytest
import torch

from medssl.errors import ConfigError
from medssl.eval.networks import check_patch_size
from medssl.models import build_encoder


@pytest.mark.parametrize("name, multiple", [("resnet10_tiny", 32), ("segresnet", 8)])
def test_the_stated_multiple_is_what_the_network_takes(name, multiple):
    encoder = build_encoder(name, spatial_dims=2)
    assert encoder.input_multiple == multiple
    network = encoder.build_segmentation_network(3).eval()
    with torch.no_grad():
        assert network(torch.zeros(1, 1, multiple * 2, multiple)).shape == (1, 3, multiple * 2, multiple)
        with pytest.raises(RuntimeError):
            network(torch.zeros(1, 1, multiple + 4, multiple))
    check_patch_size({"name": name, "spatial_dims": 2}, (multiple * 2, multiple))
    with pytest.raises(ConfigError, match=f"multiple of {multiple}"):
        check_patch_size({"name": name, "spatial_dims": 2}, (multiple + 4, multiple))


def test_the_log_and_card_name_the_encoder_as_asked_for(tmp_path, caplog):
    from medssl.models import export_encoder, load_pretrained

    encoder = build_encoder("resnet10_tiny", spatial_dims=2)
    with caplog.at_level("INFO", logger="medssl.models.export"):
        path = export_encoder(encoder, tmp_path / "encoder.pt", {"method": "test"})
    assert "exported encoder resnet10_tiny (resnet10, widths [16, 32, 64, 128]" in caplog.text
    loaded, card = load_pretrained(path)
    assert card["encoder_name"] == "resnet10_tiny" and loaded.registered_name == "resnet10_tiny"
