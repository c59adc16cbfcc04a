"""Each class's soft Dice on the training batches: computed as DiceCE's batch Dice, absent classes
left out, summarised over the last steps, and recorded by every segmentation fine-tuning run."""

from __future__ import annotations

import math

import pytest
import torch
from monai.losses import DiceCELoss

from medssl.config import FinetuneConfig, OptimizerConfig
from medssl.eval.class_fit import ClassFitTracker, TrackedLoss, batch_soft_dice
from medssl.eval.finetune import finetune_segmentation
from medssl.eval.networks import build_finetune_model

from tests.eval.toys import RandomPatches, disk_cases


def test_soft_dice_by_hand_over_the_whole_batch():
    # two images of two pixels; equal logits give p = 0.5 everywhere
    logits = torch.zeros(2, 2, 1, 2)
    target = torch.tensor([[[[1, 0]]], [[[1, 1]]]])
    background, foreground = batch_soft_dice(logits, target)
    # class 1: sum(p*y) = 3 * 0.5, sum(p) = 2, sum(y) = 3 -> 2 * 1.5 / 5
    assert foreground == pytest.approx(0.6)
    # class 0: sum(p*y) = 0.5, sum(p) = 2, sum(y) = 1 -> 1 / 3
    assert background == pytest.approx(1 / 3)


def test_a_perfect_prediction_scores_one_and_an_absent_class_is_not_scored():
    target = torch.tensor([[[[0, 1], [1, 0]]]])
    logits = torch.stack([(target[:, 0] == c).float() * 40 - 20 for c in range(3)], dim=1)
    scores = batch_soft_dice(logits, target)
    assert scores[0] == pytest.approx(1.0) and scores[1] == pytest.approx(1.0)
    assert math.isnan(scores[2])


def test_the_summary_averages_the_last_window_of_batches_that_hold_the_class():
    tracker = ClassFitTracker(num_classes=3, window=2)
    right = torch.tensor([[[[-20.0, -20.0]], [[20.0, -20.0]], [[-20.0, 20.0]]]])   # predicts [1, 2]
    wrong = torch.tensor([[[[-20.0, -20.0]], [[-20.0, 20.0]], [[20.0, -20.0]]]])   # predicts [2, 1]
    only_one = torch.tensor([[[[1, 1]]]])
    both = torch.tensor([[[[1, 2]]]])
    tracker.update(wrong, both)          # block 1: classes 1 and 2 at 0
    tracker.update(right, both)          # block 1: both at 1
    tracker.update(right, only_one)      # block 2: class 1 at 2/3 (p sums to 1, y to 2), class 2 absent
    summary = tracker.summary()
    assert summary["train_class_dice_window"] == 2 and summary["train_class_dice_every"] == 2
    assert tracker.summary(steps=6)["train_class_dice_every"] == 4   # 3 batches in 6 steps: 2 * 6 / 3
    assert summary["train_class_dice"] == [None, pytest.approx(0.8333, abs=1e-4), 1.0]
    assert summary["train_class_dice_curve"] == [[None, 0.5, 0.5], [None, pytest.approx(0.6667, abs=1e-4), None]]


def test_the_tracked_loss_is_the_loss_and_records_each_call():
    loss = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False, batch=True)
    tracker = ClassFitTracker(num_classes=2)
    tracked = TrackedLoss(loss, tracker)
    logits, target = torch.randn(2, 2, 4, 4), torch.randint(0, 2, (2, 1, 4, 4))
    assert torch.equal(tracked(logits, target), loss(logits, target))
    assert len(tracker.records) == 1
    with pytest.raises(ValueError, match="3 channels"):
        tracked(torch.randn(1, 3, 4, 4), target[:1])


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="num_classes"):
        ClassFitTracker(num_classes=1)
    with pytest.raises(ValueError, match="window"):
        ClassFitTracker(num_classes=2, window=0)


def test_a_run_that_learns_fits_its_class_and_a_run_that_cannot_move_does_not():
    cases = disk_cases(6, seed=0)

    def fit(lr: float) -> list:
        cfg = FinetuneConfig(patch_size=(32, 32, 1), steps=60, batch_size=4, device="cpu", num_classes=2,
                             optimizer=OptimizerConfig(lr=lr, warmup_steps=2))
        model = build_finetune_model("segmentation", {"name": "resnet10_tiny", "spatial_dims": 2}, None,
                                     num_classes=2, seed=0)
        history = finetune_segmentation(model, RandomPatches(cases, (32, 32, 1), seed=0), cfg, seed=0).as_dict()
        assert len(history["train_class_dice_curve"]) == 2  # 60 batches in blocks of 50
        assert history["train_class_dice_every"] == 50
        return history["train_class_dice"]

    learned, frozen = fit(1e-2), fit(1e-9)
    assert learned[0] is None and frozen[0] is None
    assert learned[1] > 0.7
    assert frozen[1] < 0.5
