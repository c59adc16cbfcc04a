"""Fine-tuning on tiny toys: learns, is deterministic, transfers and freezes the right weights."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from medssl.config import FinetuneConfig, OptimizerConfig
from medssl.eval.cases import WholeVolumeDataset
from medssl.eval.evaluate import evaluate_segmentation, predict_classification
from medssl.eval.finetune import finetune_classification, finetune_segmentation
from medssl.eval.metrics import classification_metrics_from_table
from medssl.eval.networks import build_finetune_model
from medssl.models import build_encoder, export_encoder

from tests.eval.toys import RandomPatches, disk_cases

ENCODER_2D = {"name": "resnet10_tiny", "spatial_dims": 2}


def _cfg(**changes) -> FinetuneConfig:
    base = dict(patch_size=(32, 32, 1), steps=25, batch_size=4, device="cpu", num_classes=2,
                optimizer=OptimizerConfig(lr=1e-2, warmup_steps=2), eval_metrics=["dice", "hd95"])
    base.update(changes)
    return FinetuneConfig(**base)


@pytest.fixture(scope="module")
def cases():
    return disk_cases(10, seed=0)


def _state(model):
    return {k: v.clone() for k, v in model.network.state_dict().items()}


def test_segmentation_learns_the_toy_and_evaluates_whole_volumes(cases):
    cfg = _cfg()
    model = build_finetune_model("segmentation", ENCODER_2D, None, num_classes=2, seed=0)
    before = evaluate_segmentation(model, cases[6:], cfg)["dice"].mean()
    history = finetune_segmentation(model, RandomPatches(cases[:6], (32, 32, 1), seed=0), cfg, seed=0)
    table = evaluate_segmentation(model, cases[6:], cfg)
    assert list(table["case_id"]) == [c.case_id for c in cases[6:]]
    assert {"dice", "dice_1", "hd95", "hd95_1"} <= set(table.columns)
    assert table["dice"].mean() > 0.8 > before + 0.2
    assert history.final_loss < history.losses[0]
    assert len(history.losses) == cfg.steps


def test_same_seed_identical_numbers_other_seed_differs(cases):
    cfg = _cfg(steps=6)

    def run(seed):
        model = build_finetune_model("segmentation", ENCODER_2D, None, num_classes=2, seed=seed)
        history = finetune_segmentation(model, RandomPatches(cases[:4], (32, 32, 1), seed=seed), cfg, seed=seed)
        return history.losses, _state(model)

    losses_a, state_a = run(1)
    losses_b, state_b = run(1)
    losses_c, _ = run(2)
    assert losses_a == losses_b
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert losses_a != losses_c


def test_pretrained_transfer_is_logged_and_decoder_matches_scratch(tmp_path, caplog):
    torch.manual_seed(7)
    encoder = build_encoder("resnet10_tiny", spatial_dims=2)
    with torch.no_grad():
        for p in encoder.parameters():
            p.add_(0.5)  # unmistakable weights
    path = export_encoder(encoder, tmp_path / "encoder.pt", {"method": "test"})
    with caplog.at_level(logging.INFO, logger="medssl"):
        pretrained = build_finetune_model("segmentation", None, path, num_classes=2, seed=3)
    scratch = build_finetune_model("segmentation", ENCODER_2D, None, num_classes=2, seed=3)
    assert "transferred encoder weights" in caplog.text
    summary = pretrained.transfer_summary()
    assert summary["n_loaded"] == len(encoder.state_dict()) and summary["n_missing"] == 0
    net_state = pretrained.network.state_dict()
    for name, value in encoder.state_dict().items():
        assert torch.equal(net_state[name], value)
    scratch_state = scratch.network.state_dict()
    decoder = [k for k in net_state if k not in encoder.state_dict()]
    assert decoder and all(torch.equal(net_state[k], scratch_state[k]) for k in decoder)
    assert pretrained.card["method"] == "test"


def test_frozen_encoder_does_not_move_and_partial_freezes_shallow_stages(cases):
    patches = RandomPatches(cases[:4], (32, 32, 1), seed=0)
    model = build_finetune_model("segmentation", ENCODER_2D, None, num_classes=2, seed=0)
    before = _state(model)
    history = finetune_segmentation(model, patches, _cfg(steps=3, freeze="encoder"), seed=0)
    after = model.network.state_dict()
    encoder_names = set(model.encoder_parameter_names)
    assert history.frozen == len(encoder_names)
    assert all(torch.equal(before[n], after[n]) for n in encoder_names)
    bn_stats = [k for k in before if k.startswith("encoder.bn1.running")]
    assert bn_stats and all(torch.equal(before[k], after[k]) for k in bn_stats)
    assert any(not torch.equal(before[n], after[n]) for n in after if n.startswith("decoder"))

    model = build_finetune_model("segmentation", ENCODER_2D, None, num_classes=2, seed=0)
    before = _state(model)
    finetune_segmentation(model, patches, _cfg(steps=3, freeze="partial", frozen_stages=1, layer_decay=0.5), seed=0)
    after = model.network.state_dict()
    shallow, deep = model.stages[0].parameter_names, model.stages[-1].parameter_names
    assert all(torch.equal(before[n], after[n]) for n in shallow)
    assert any(not torch.equal(before[n], after[n]) for n in deep)


def test_classification_whole_volume_learns_presence(cases):
    labeled = disk_cases(16, seed=4, with_object=[i % 2 for i in range(16)])
    cfg = _cfg(task="classification", steps=30, patch_size=(32, 32, 1), batch_size=4,
               optimizer=OptimizerConfig(lr=1e-2))
    model = build_finetune_model("classification", ENCODER_2D, None, num_classes=2, seed=0)
    dataset = WholeVolumeDataset(labeled[:10], (32, 32), seed=0)
    history = finetune_classification(model, dataset, cfg, seed=0)
    table = predict_classification(model, labeled[10:], cfg)
    scores = classification_metrics_from_table(table)
    assert scores["auc"] >= 0.85
    assert np.isfinite(history.final_loss)
    # patch input: the mean logit over a sliding grid of patches
    patch_table = predict_classification(model, labeled[10:], _cfg(task="classification",
                                                                   classification_input="patch"))
    assert len(patch_table) == 6 and np.allclose(patch_table.filter(like="prob_").sum(axis=1), 1.0)


def test_3d_segmentation_with_segresnet_runs():
    cases3d = disk_cases(3, seed=1, shape=(20, 20, 18))
    cfg = _cfg(patch_size=(16, 16, 16), steps=2, batch_size=2, eval_metrics=["dice", "surface_dice"])
    model = build_finetune_model("segmentation", {"name": "segresnet", "spatial_dims": 3,
                                                  "args": {"init_filters": 8}}, None, num_classes=2, seed=0)
    finetune_segmentation(model, RandomPatches(cases3d[:2], (16, 16, 16), seed=0), cfg, seed=0)
    table = evaluate_segmentation(model, cases3d[2:], cfg)
    assert table.shape[0] == 1 and 0.0 <= table["surface_dice"].iloc[0] <= 1.0


def test_mask_labels_beyond_num_classes_are_refused(cases):
    model = build_finetune_model("segmentation", ENCODER_2D, None, num_classes=2, seed=0)
    bad = RandomPatches(cases[:2], (32, 32, 1), seed=0)
    bad.cases = [type(c)(c.case_id, c.image, c.mask * 3, c.label, c.spacing) for c in bad.cases]
    from medssl.errors import DataError

    with pytest.raises(DataError, match="num_classes"):
        finetune_segmentation(model, bad, _cfg(steps=2), seed=0)


def test_bf16_autocast_on_cpu_runs(cases):
    model = build_finetune_model("segmentation", ENCODER_2D, None, num_classes=2, seed=0)
    history = finetune_segmentation(model, RandomPatches(cases[:2], (32, 32, 1), seed=0),
                                    _cfg(steps=2, precision="bf16"), seed=0)
    assert len(history.losses) == 2 and all(np.isfinite(history.losses))
