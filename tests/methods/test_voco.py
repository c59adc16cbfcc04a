"""VoCo (Wu et al., CVPR 2024): base crops, random crops, their overlaps, and the volume-contrast loss.

Pinned here: the base crops tile the region and a random crop's labels are the fractions of it in
each base crop (summing to one); the dataset's ``voco`` view mode yields them with the crops and the
engine demands that mode; the position-prediction loss is zero exactly when the similarities equal
the overlaps, and it does not move the base crops (stop-gradient); the regulariser pushes base
crops apart; the loss falls on a toy problem; a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from medssl.config import AugmentationConfig, DataConfig, OptimizerConfig, PreprocessConfig, PretrainConfig, load_config
from medssl.data.cache import PreprocessedCache
from medssl.data.datasets import build_pretrain_dataset
from medssl.engine.pretrain import build_method_from_config
from medssl.engine.trainer import Trainer
from medssl.errors import ConfigError, DataError
from medssl.io.nifti import save_volume
from medssl.io.volume import Volume
from medssl.methods import build_method
from medssl.methods.voco import base_separation_loss, position_prediction_loss
from medssl.models import build_encoder
from medssl.transforms.voco_crops import VoCoCropGenerator, crop_overlaps
from medssl.utils.seeding import make_torch_generator, seed_everything

from tests.engine.test_every_method_on_cohort import PRETRAIN_CONFIGS
from tests.methods.masked_toys import ImageItems, held_out_loss, train_losses


def test_overlaps_by_hand():
    base = np.array([[0, 0], [8, 0], [0, 8], [8, 8]])
    random = np.array([[4, 0], [8, 8], [2, 6]])
    overlaps = crop_overlaps(random, base, (8, 8))
    np.testing.assert_allclose(overlaps[0], [0.5, 0.5, 0.0, 0.0])
    np.testing.assert_allclose(overlaps[1], [0.0, 0.0, 0.0, 1.0])
    np.testing.assert_allclose(overlaps[2], [6 * 2 / 64, 2 * 2 / 64, 6 * 6 / 64, 2 * 6 / 64])


@pytest.mark.parametrize("shape,patch,grid", [((1, 40, 36, 20), (8, 8, 8), (2, 2, 1)), ((1, 30, 30, 1), (8, 8), (3, 2)),
                                              ((1, 12, 12, 12), (8, 8, 8), (2, 2, 2))])
def test_base_crops_tile_the_region_and_random_crops_lie_inside(shape, patch, grid):
    image = np.random.default_rng(0).random(shape, dtype=np.float32)
    crops = VoCoCropGenerator(patch, base_grid=grid, num_random=5)
    item = crops(image, np.random.default_rng(1))
    n = int(np.prod(grid))
    assert len(item["views"]) == n + 5 and item["overlaps"].shape == (5, n)
    torch.testing.assert_close(item["overlaps"].sum(dim=1), torch.ones(5))
    base_starts, random_starts = crops.draw(shape[1:], np.random.default_rng(1))
    region = torch.zeros(1, *(g * p for g, p in zip(grid, patch)))
    for start, view in zip(base_starts - base_starts[0], item["views"][:n]):  # the base crops, put back, tile it
        region[(slice(None),) + tuple(slice(s, s + p) for s, p in zip(start, patch))] = view
    for start, view in zip(random_starts - base_starts[0], item["views"][n:]):  # a random crop is its part of it
        assert (start >= 0).all() and (start + np.array(patch) <= np.array(region.shape[1:])).all()
        torch.testing.assert_close(view, region[(slice(None),) + tuple(slice(s, s + p) for s, p in zip(start, patch))])


def test_the_dataset_yields_crops_and_overlaps_in_voco_mode(tmp_path):
    ct = np.random.default_rng(0).uniform(-1000, 1000, (1, 40, 40, 20)).astype(np.float32)
    save_volume(Volume(ct, np.eye(4), "CT"), tmp_path / "ct.nii.gz")
    data_cfg = DataConfig(root=str(tmp_path), preprocess=PreprocessConfig(target_spacing=None))
    aug_cfg = AugmentationConfig(preset="ct", patch_size=(8, 8, 8), view_mode="voco", voco_base_grid=(2, 2, 1),
                                 voco_random_crops=3)
    dataset = build_pretrain_dataset(data_cfg, aug_cfg, pd.DataFrame({"path": ["ct.nii.gz"], "modality": ["CT"]}),
                                     seed=0, cache=PreprocessedCache(tmp_path / "cache", data_cfg.preprocess))
    item = dataset[0]
    assert len(item["views"]) == 7 and all(v.shape == (1, 8, 8, 8) for v in item["views"])
    assert item["overlaps"].shape == (3, 4)
    torch.testing.assert_close(item["overlaps"].sum(dim=1), torch.ones(3))
    again = dataset[0]
    assert all(torch.equal(a, b) for a, b in zip(item["views"], again["views"]))
    with pytest.raises(ConfigError, match="voco_base_grid"):
        build_pretrain_dataset(data_cfg, aug_cfg.model_copy(update={"voco_base_grid": (2, 2)}),
                               pd.DataFrame({"path": ["ct.nii.gz"]}), seed=0,
                               cache=PreprocessedCache(tmp_path / "cache", data_cfg.preprocess))


def test_the_engine_demands_voco_crops_and_keeps_them_for_voco():
    config = load_config(PRETRAIN_CONFIGS / "voco.yaml")
    assert config.pretrain.augmentation.view_mode == "voco"
    build_method_from_config(config)
    with pytest.raises(ConfigError, match="view_mode: voco"):
        build_method_from_config(load_config(PRETRAIN_CONFIGS / "voco.yaml", ["pretrain.augmentation.view_mode=overlap"]))
    with pytest.raises(ConfigError, match="view_mode: overlap"):
        build_method_from_config(load_config(PRETRAIN_CONFIGS / "simclr.yaml", ["pretrain.augmentation.view_mode=voco"]))


def test_the_losses_by_hand():
    overlaps = torch.tensor([[[0.5, 0.5, 0.0], [0.0, 0.25, 0.75]]])
    assert float(position_prediction_loss(overlaps.clone(), overlaps)) == pytest.approx(0.0, abs=1e-5)
    off = overlaps.clone()
    off[0, 0, 2] = 0.5  # a disjoint pair scored 0.5
    assert float(position_prediction_loss(off, overlaps)) == pytest.approx(0.25 / 2, abs=1e-5)
    orthogonal = torch.eye(3).unsqueeze(0)
    assert float(base_separation_loss(orthogonal)) == 0.0
    assert float(base_separation_loss(torch.ones(1, 3, 4))) == pytest.approx(1.0)


def voco(seed: int = 0, **args):
    seed_everything(seed)
    return build_method("voco", build_encoder("resnet10_tiny", spatial_dims=2),
                        **{"projection_hidden_dim": 32, "projection_dim": 16, **args})


def voco_items(generator: torch.Generator, batch: int = 1, size: int = 48) -> dict:
    """VoCo items of smooth 2D images (content differs from place to place), 2 x 2 base crops of 16."""
    crops = VoCoCropGenerator((16, 16), base_grid=(2, 2), num_random=4)
    images = torch.nn.functional.interpolate(torch.rand(batch, 1, 6, 6, generator=generator), size=(size, size),
                                             mode="bilinear", align_corners=False)
    rng = np.random.default_rng(int(torch.randint(0, 2**31, (1,), generator=generator)))
    items = [crops(image.unsqueeze(-1).numpy(), rng) for image in images]
    return {"views": [torch.stack([it["views"][k] for it in items]) for k in range(8)],
            "overlaps": torch.stack([it["overlaps"] for it in items])}


def test_prediction_does_not_move_the_base_crops():
    method = voco(reg_weight=0.0).eval()
    batch = voco_items(make_torch_generator(0, "g"), batch=2)
    views = [v.clone().requires_grad_(True) for v in batch["views"]]
    loss, logs = method({"views": views, "overlaps": batch["overlaps"]})
    loss.backward()
    assert all(float(v.grad.abs().sum()) == 0.0 for v in views[:4])  # stop-gradient on the base crops
    assert all(float(v.grad.abs().sum()) > 0.0 for v in views[4:])
    assert logs["embeddings"].shape == (2 * 4, method.encoder.feature_dim)


def test_bad_batches_are_clear_errors():
    method = voco()
    batch = voco_items(make_torch_generator(0, "b"), batch=2)
    with pytest.raises(DataError, match="view_mode: voco"):
        method({"views": batch["views"]})
    with pytest.raises(DataError, match="do not fit"):
        method({"views": batch["views"][:7], "overlaps": batch["overlaps"]})


def test_loss_falls_on_a_toy_problem():
    method = voco()
    generator = make_torch_generator(0, "toy")
    held_out = voco_items(make_torch_generator(1, "held-out"), batch=8)
    before = held_out_loss(method, held_out)
    losses = train_losses(method, lambda step: voco_items(generator, batch=8), steps=20, lr=1e-3)
    after = held_out_loss(method, held_out)
    assert after < 0.8 * before, (before, after, losses)


def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path):
    config = PretrainConfig(steps=4, batch_size=2, checkpoint_every=2, log_every=1, tensorboard=False,
                            optimizer=OptimizerConfig(name="adamw", lr=1e-3), device="cpu")

    def item(generator):
        batch = voco_items(generator)
        return {"views": [v[0] for v in batch["views"]], "overlaps": batch["overlaps"][0]}

    straight = Trainer(voco(), ImageItems(4, 0, 2, views=item), config, tmp_path / "a", seed=1)
    straight.fit()
    Trainer(voco(), ImageItems(4, 0, 2, views=item), config, tmp_path / "b", seed=1).fit(until_step=2)
    torch.manual_seed(99)
    resumed = Trainer(voco(seed=5), ImageItems(4, 0, 2, views=item), config, tmp_path / "b", seed=1)
    resumed.fit(resume=True)
    for key, value in straight.method.state_dict().items():
        assert torch.equal(value, resumed.method.state_dict()[key]), key
