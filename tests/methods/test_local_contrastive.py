"""Local contrastive learning (Chaitanya et al. 2020, local loss) of the whole segmentation network.

Pinned here: matched regions cover the same voxels of the shared crop; the loss rewards content,
not position (a head that only knows where a voxel sits in its sub-crop cannot match regions,
because the two sub-crops are shifted); the views must be one crop (``shared_geometry``), which
the generator provides and the engine demands; the whole network trains and its decoder transfers
to fine-tuning except the last layer.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medssl.config import load_config
from medssl.engine.pretrain import build_method_from_config
from medssl.errors import ConfigError, DataError
from medssl.eval.networks import build_finetune_model
from medssl.methods import LocalContrastive, build_method
from medssl.methods.local_contrastive import crop_at, draw_offsets, matching_regions
from medssl.models import build_encoder, export_encoder
from medssl.transforms.spatial import SpatialAugmentation
from medssl.transforms.views import TwoViewGenerator

from tests.engine.test_every_method_on_cohort import PRETRAIN_CONFIGS

ENCODER = {"name": "resnet10_tiny", "spatial_dims": 3, "in_channels": 1}


def test_matching_regions_by_hand():
    # one axis, 4 regions of 4 voxels; sub-crop b starts 8 voxels (2 regions) after sub-crop a
    ia, ib = matching_regions(torch.tensor([0]), torch.tensor([8]), (4,), 4)
    assert ia.tolist() == [2, 3] and ib.tolist() == [0, 1]
    ia, ib = matching_regions(torch.tensor([4, 0]), torch.tensor([0, 4]), (2, 2), 4)
    # a's region (0, 1) is b's (1, 0): flat 1 -> 2
    assert ia.tolist() == [1] and ib.tolist() == [2]


def test_matched_regions_hold_the_same_voxels():
    generator = torch.Generator().manual_seed(0)
    crop = torch.rand(3, 2, 24, 20, generator=generator)
    size, region = (16, 12), 4
    offsets_a = draw_offsets(3, 2, 8, region, generator)
    offsets_b = draw_offsets(3, 2, 8, region, generator)
    assert set(offsets_a.flatten().tolist()) <= {0, 4, 8}
    pooled_a = F.avg_pool2d(crop_at(crop, offsets_a, size), region).flatten(2)
    pooled_b = F.avg_pool2d(crop_at(crop, offsets_b, size), region).flatten(2)
    for b in range(3):
        ia, ib = matching_regions(offsets_a[b], offsets_b[b], (4, 3), region)
        assert ia.numel() > 0
        torch.testing.assert_close(pooled_a[b][:, ia], pooled_b[b][:, ib])


def region_codes(batch: int, channels: int, size: int, region: int, seed: int) -> torch.Tensor:
    """Images whose every ``region``-sided block is one random vector: content identifies a region."""
    generator = torch.Generator().manual_seed(seed)
    codes = torch.randn(batch, channels, size // region, size // region, generator=generator)
    return codes.repeat_interleave(region, dim=2).repeat_interleave(region, dim=3)


class PositionOnly(torch.nn.Module):
    """A head that sees nothing of the image: one channel per region position of its input (one-hot),
    the most a network could learn about *where* a voxel sits in its sub-crop."""

    def __init__(self, region: int):
        super().__init__()
        self.region = region

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows, cols = x.shape[2] // self.region, x.shape[3] // self.region
        codes = torch.eye(rows * cols).reshape(rows * cols, rows, cols)
        codes = codes.repeat_interleave(self.region, dim=1).repeat_interleave(self.region, dim=2)
        return codes.expand(x.shape[0], -1, -1, -1)


def method_with_head(head: torch.nn.Module) -> LocalContrastive:
    method = LocalContrastive(build_encoder("resnet10_tiny", spatial_dims=2), embedding_dim=4, num_regions=64)
    method.head = head
    return method


def test_content_matches_regions_and_position_cannot():
    content = region_codes(8, 8, 40, 4, seed=1)
    torch.manual_seed(0)
    loss_content, logs_content = method_with_head(torch.nn.Identity())({"views": [content, content.clone()]})
    torch.manual_seed(0)  # the same sub-crop offsets
    loss_where, logs_where = method_with_head(PositionOnly(4))({"views": [content, content.clone()]})
    assert float(logs_content["region_accuracy"]) == 1.0
    # position matches only where the two sub-crops happen to start at the same offset (1 in 9)
    assert float(logs_where["region_accuracy"]) < 0.5
    assert float(loss_content) < float(loss_where)


def test_views_of_one_crop_differ_only_where_intensity_made_them():
    views = TwoViewGenerator(SpatialAugmentation(flip_prob=(0.5, 0.5, 0.5), rotate_prob=1.0, scale_prob=1.0),
                             (8, 8, 8), shared_geometry=True, num_views=3)
    volume = np.random.default_rng(0).random((1, 24, 24, 24), dtype=np.float32)
    a, b, c = views(volume, np.random.default_rng(1))
    assert torch.equal(a, b) and torch.equal(a, c) and a.data_ptr() != b.data_ptr()
    geometries = views.draw(volume.shape[1:], np.random.default_rng(1))
    assert all(g == geometries[0] for g in geometries)


def test_the_engine_demands_one_crop(tmp_path):
    base = load_config(PRETRAIN_CONFIGS / "local_contrastive.yaml")
    assert base.pretrain.augmentation.shared_geometry
    build_method_from_config(base)
    apart = load_config(PRETRAIN_CONFIGS / "local_contrastive.yaml", ["pretrain.augmentation.shared_geometry=false"])
    with pytest.raises(ConfigError, match="shared_geometry: true"):
        build_method_from_config(apart)


def test_bad_sizes_are_errors():
    encoder = build_encoder("resnet10_tiny", spatial_dims=2)
    with pytest.raises(ConfigError, match="multiple of region_size"):
        LocalContrastive(encoder, region_size=4, max_shift=6)
    method = LocalContrastive(build_encoder("resnet10_tiny", spatial_dims=2), embedding_dim=4)
    with pytest.raises(DataError, match="shared_geometry"):
        method({"views": [torch.rand(2, 1, 40, 40), torch.rand(2, 1, 36, 36)]})
    with pytest.raises(DataError, match="multiples of region_size"):
        method({"views": [torch.rand(2, 1, 42, 42)] * 2})


def test_a_step_trains_encoder_and_decoder_and_the_decoder_transfers(tmp_path):
    torch.manual_seed(0)
    method = build_method("local_contrastive", build_encoder(**ENCODER), embedding_dim=8, num_regions=32)
    for name in type(method.encoder).network_modules:
        assert getattr(method.head, name) is getattr(method.encoder, name)
    before = {k: v.clone() for k, v in method.state_dict().items() if v.is_floating_point()}
    x = torch.rand(2, 1, 40, 40, 40)
    loss, _ = method({"views": [x, x + 0.05 * torch.randn_like(x)]})
    loss.backward()
    torch.optim.SGD(method.parameters(), lr=0.1).step()
    moved = {k.split(".")[0] for k, v in method.state_dict().items() if k in before and not torch.equal(v, before[k])}
    assert {"encoder", "head"} <= moved

    state, info = method.decoder_export()
    assert info["pretext"] == "local_contrastive" and info["out_channels"] == 8
    assert not any(k.split(".")[0] in type(method.encoder).network_modules for k in state)
    path = export_encoder(method.encoder, tmp_path / "encoder.pt", {"method": "local_contrastive"},
                          decoder=(state, info))
    model = build_finetune_model("segmentation", ENCODER, str(path), num_classes=3, seed=7)
    report = model.decoder_transfer
    assert report.loaded and not report.missing and not report.unexpected
    assert report.mismatched, "the 8-channel embedding layer cannot fit a 3-class head"
    target = model.network.state_dict()
    assert all(torch.equal(target[k], state[k]) for k in report.loaded)
