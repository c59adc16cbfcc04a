"""Keeping each organ's largest connected components (``finetune.keep_largest_components``)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medssl.config import FinetuneConfig
from medssl.eval.cases import LabeledCase
from medssl.eval.evaluate import evaluate_segmentation, predict_case
from medssl.eval.networks import FinetuneModel
from medssl.eval.postprocess import keep_largest_components


def _two_organs() -> torch.Tensor:
    """Class 1: a 27-voxel organ and a 1-voxel island; class 2: two 8-voxel kidneys and a 1-voxel island."""
    labels = torch.zeros(12, 12, 6, dtype=torch.long)
    labels[0:3, 0:3, 0:3] = 1
    labels[10, 10, 5] = 1
    labels[6:8, 0:2, 0:2] = 2
    labels[6:8, 4:6, 0:2] = 2
    labels[0, 11, 5] = 2
    return labels


def test_each_listed_class_keeps_its_largest_components_and_the_rest_becomes_background():
    labels = _two_organs()
    kept = keep_largest_components(labels, {1: 1, 2: 2})
    assert int((kept == 1).sum()) == 27 and int(kept[10, 10, 5]) == 0
    assert int((kept == 2).sum()) == 16 and int(kept[0, 11, 5]) == 0          # both kidneys stay
    assert int((labels == 1).sum()) == 28                                      # the input is not changed


def test_an_unlisted_class_is_left_as_predicted():
    labels = _two_organs()
    kept = keep_largest_components(labels, {1: 1})
    assert torch.equal(kept == 2, labels == 2)
    assert torch.equal(keep_largest_components(labels, {}), labels)


def test_voxels_touching_at_a_corner_are_one_component():
    labels = torch.zeros(6, 6, 6, dtype=torch.long)
    labels[0, 0, 0] = labels[1, 1, 1] = labels[2, 2, 2] = 1                   # a diagonal line
    labels[5, 5, 4:6] = 1                                                     # a 2-voxel piece
    kept = keep_largest_components(labels, {1: 1})
    assert int((kept == 1).sum()) == 3 and int(kept[5, 5, 5]) == 0


def test_an_absent_class_or_fewer_pieces_than_allowed_change_nothing():
    labels = _two_organs()
    assert torch.equal(keep_largest_components(labels, {2: 3}), labels)
    assert torch.equal(keep_largest_components(torch.zeros(4, 4, 4, dtype=torch.long), {1: 1}),
                       torch.zeros(4, 4, 4, dtype=torch.long))


def test_bad_requests_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="count >= 1"):
        keep_largest_components(_two_organs(), {1: 0})
    with pytest.raises(ValueError, match=r"label map \(X, Y, Z\)"):
        keep_largest_components(torch.zeros(1, 4, 4, 4, dtype=torch.long), {1: 1})
    with pytest.raises(ValueError, match=r"class index in \[1, 2\]"):
        FinetuneConfig(num_classes=3, keep_largest_components={3: 1})
    with pytest.raises(ValueError, match=r"class index in \[1, 2\]"):
        FinetuneConfig(num_classes=3, keep_largest_components={0: 1})


class _Threshold(nn.Module):
    """A 3D 'network' that predicts class 1 wherever the image is above 0.5."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(10.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        foreground = (x[:, :1] > 0.5).float()
        return torch.cat([1.0 - foreground, foreground], dim=1) * self.scale


def test_the_scored_prediction_is_post_processed():
    """The island the network predicts costs Dice without post-processing and nothing with it."""
    image = torch.zeros(1, 16, 16, 8)
    image[0, 2:8, 2:8, 2:6] = 1.0                                             # the organ, also the truth
    image[0, 13:15, 13:15, 6:8] = 1.0                                         # a false-positive island
    mask = torch.zeros(1, 16, 16, 8, dtype=torch.long)
    mask[0, 2:8, 2:8, 2:6] = 1
    case = LabeledCase("c1", image, mask)
    model = FinetuneModel(network=_Threshold(), task="segmentation", spatial_dims=3, encoder_config={}, stages=[])
    plain = FinetuneConfig(num_classes=2, patch_size=(16, 16, 8), eval_metrics=["dice"])
    processed = plain.model_copy(update={"keep_largest_components": {1: 1}})
    assert int((predict_case(model, case, plain) == 1).sum()) == 144 + 8
    assert torch.equal(predict_case(model, case, processed), mask[0])
    assert float(evaluate_segmentation(model, [case], plain)["dice"].iloc[0]) == pytest.approx(2 * 144 / (152 + 144))
    assert float(evaluate_segmentation(model, [case], processed)["dice"].iloc[0]) == pytest.approx(1.0)


def test_the_scored_prediction_uses_test_time_flips_when_set(monkeypatch):
    import medssl.eval.evaluate as evaluate

    seen = {}

    def fake_predict_labels(network, image, **kwargs):
        seen.update(kwargs)
        return torch.zeros(image.shape[1:], dtype=torch.long)

    monkeypatch.setattr(evaluate, "predict_labels", fake_predict_labels)
    case = LabeledCase("c1", torch.zeros(1, 8, 8, 4), torch.zeros(1, 8, 8, 4, dtype=torch.long))
    model = FinetuneModel(network=_Threshold(), task="segmentation", spatial_dims=3, encoder_config={}, stages=[])
    predict_case(model, case, FinetuneConfig(patch_size=(8, 8, 4), test_time_flips=True))
    assert seen["flip_axes"] == (0,)                       # only the left-right flip training used
    predict_case(model, case, FinetuneConfig(patch_size=(8, 8, 4), test_time_flips=True, augment=False))
    assert seen["flip_axes"] == ()                         # trained without flips: nothing to mirror
    predict_case(model, case, FinetuneConfig(patch_size=(8, 8, 4)))
    assert seen["flip_axes"] == ()
