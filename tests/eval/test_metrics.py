"""Segmentation and classification metrics against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medssl.eval.metrics import (
    classification_metrics,
    classification_table,
    classification_metrics_from_table,
    segmentation_case_metrics,
    segmentation_table,
)


def _cube(shape, lo, hi, value=1):
    array = np.zeros(shape, np.int64)
    array[tuple(slice(a, b) for a, b in zip(lo, hi))] = value
    return array


def test_dice_matches_hand_count():
    ref = _cube((10, 10, 10), (2, 2, 2), (6, 6, 6))          # 64 voxels
    pred = _cube((10, 10, 10), (2, 2, 3), (6, 6, 7))         # 64 voxels, 48 shared
    m = segmentation_case_metrics(pred, ref, num_classes=2, spacing=(1, 1, 1), metrics=["dice"])
    assert m["dice"] == pytest.approx(2 * 48 / 128)
    assert m["dice_1"] == m["dice"]


def test_hd95_uses_spacing_in_mm():
    # a slab shifted by one voxel along z: every surface distance is 0 or one voxel step along z
    ref = _cube((12, 12, 12), (3, 3, 3), (9, 9, 7))
    pred = _cube((12, 12, 12), (3, 3, 4), (9, 9, 8))
    iso = segmentation_case_metrics(pred, ref, num_classes=2, spacing=(1, 1, 1), metrics=["hd95"])
    aniso = segmentation_case_metrics(pred, ref, num_classes=2, spacing=(0.5, 0.5, 3.0), metrics=["hd95"])
    assert iso["hd95"] == pytest.approx(1.0)
    assert aniso["hd95"] == pytest.approx(3.0)


def test_surface_dice_tolerance():
    ref = _cube((12, 12, 12), (3, 3, 3), (9, 9, 7))
    pred = _cube((12, 12, 12), (3, 3, 4), (9, 9, 8))
    loose = segmentation_case_metrics(pred, ref, num_classes=2, spacing=(1, 1, 1), surface_tolerance_mm=1.5,
                                      metrics=["surface_dice"])
    tight = segmentation_case_metrics(pred, ref, num_classes=2, spacing=(1, 1, 1), surface_tolerance_mm=0.5,
                                      metrics=["surface_dice"])
    assert loose["surface_dice"] == pytest.approx(1.0)   # every surface voxel within 1 mm
    assert 0.0 < tight["surface_dice"] < 1.0


def test_identical_masks_are_perfect_per_class():
    ref = _cube((10, 10, 10), (1, 1, 1), (4, 4, 4), 1) + _cube((10, 10, 10), (5, 5, 5), (9, 9, 9), 2)
    m = segmentation_case_metrics(ref, ref, num_classes=3, spacing=(1, 1, 1))
    for k in (1, 2):
        assert m[f"dice_{k}"] == 1.0 and m[f"hd95_{k}"] == 0.0 and m[f"surface_dice_{k}"] == 1.0


def test_empty_structures_follow_documented_convention():
    empty = np.zeros((8, 8, 8), np.int64)
    full = _cube((8, 8, 8), (2, 2, 2), (5, 5, 5))
    both = segmentation_case_metrics(empty, empty, num_classes=2, spacing=(1, 1, 2))
    assert all(math.isnan(both[m]) for m in ("dice", "hd95", "surface_dice", "dice_1"))  # not scored
    assert (both["present_1"], both["predicted_1"]) == (0.0, 0.0)
    missed = segmentation_case_metrics(empty, full, num_classes=2, spacing=(1, 1, 2))
    assert missed["dice"] == 0.0 and missed["surface_dice"] == 0.0
    assert missed["hd95"] == pytest.approx(math.sqrt(7**2 + 7**2 + 14**2))  # diagonal in mm
    assert (missed["present_1"], missed["predicted_1"]) == (1.0, 0.0)
    hallucinated = segmentation_case_metrics(full, empty, num_classes=2, spacing=(1, 1, 2))
    assert hallucinated["dice"] == 0.0 and hallucinated["predicted_1"] == 1.0  # a false positive counts
    # a class missing in one case of a multi-class map does not turn the others into NaN
    two = _cube((8, 8, 8), (2, 2, 2), (5, 5, 5), 2)
    mixed = segmentation_case_metrics(two, full * 0 + two, num_classes=3, spacing=(1, 1, 1))
    assert math.isnan(mixed["dice_1"]) and mixed["dice_2"] == 1.0 and mixed["dice"] == 1.0
    assert np.isfinite(mixed["hd95"])


def test_a_class_absent_from_a_case_and_never_predicted_does_not_raise_the_mean():
    """The issue's case: organ learned (Dice 0.5 everywhere), lesion never predicted; 2 of 8 cases
    have no lesion. Scoring their absent lesion as 1 would add 2 / 8 * 1 / 2 = 0.0625 to the mean."""
    organ = _cube((12, 12, 12), (1, 1, 1), (9, 9, 9), 1)
    half = organ.copy()
    half[1:9, 1:9, 5:9] = 0  # half the organ predicted: Dice 2 * 256 / (512 + 256) = 2 / 3
    means = []
    for has_lesion in [True] * 6 + [False] * 2:
        reference = organ.copy()
        if has_lesion:
            reference[3:5, 3:5, 3:5] = 2
        m = segmentation_case_metrics(half, reference, num_classes=3, spacing=(1, 1, 1), metrics=["dice"])
        assert m["present_2"] == float(has_lesion) and m["predicted_2"] == 0.0
        means.append(m["dice"])
    organ_only = [m for m, lesion in zip(means, [True] * 6 + [False] * 2) if not lesion]
    with_lesion = [m for m, lesion in zip(means, [True] * 6 + [False] * 2) if lesion]
    # with a lesion: (organ Dice + lesion Dice 0) / 2; the 8 lesion voxels predicted as organ
    assert with_lesion == pytest.approx([(2 * 248 / (504 + 256) + 0.0) / 2] * 6)
    assert organ_only == pytest.approx([2 / 3] * 2)  # the organ alone: no free 1 for the absent lesion


def test_bad_input_is_refused():
    a = np.zeros((4, 4, 4), np.int64)
    with pytest.raises(ValueError, match="shape"):
        segmentation_case_metrics(a, np.zeros((4, 4, 5), np.int64), num_classes=2, spacing=(1, 1, 1))
    with pytest.raises(ValueError, match="outside"):
        segmentation_case_metrics(a + 3, a, num_classes=2, spacing=(1, 1, 1))
    with pytest.raises(ValueError, match="unknown"):
        segmentation_case_metrics(a, a, num_classes=2, spacing=(1, 1, 1), metrics=["jaccard"])


def test_segmentation_table_one_row_per_case():
    ref = _cube((6, 6, 6), (1, 1, 1), (4, 4, 4))
    table = segmentation_table([("a", ref, ref, (1, 1, 1)), ("b", ref * 0, ref, (1, 1, 1))], num_classes=2,
                               metrics=["dice"])
    assert list(table["case_id"]) == ["a", "b"]
    assert list(table["dice"]) == [1.0, 0.0]


def test_classification_metrics_hand_values():
    targets = [0, 0, 0, 1, 1, 1]
    scores = np.array([0.1, 0.4, 0.7, 0.3, 0.8, 0.9])
    m = classification_metrics(targets, scores)
    # positives beat negatives in 7 of 9 pairs
    assert m["auc"] == pytest.approx(7 / 9)
    # predictions (p > 0.5): 0 0 1 0 1 1 -> recall 2/3 for both classes, precision 2/3
    assert m["balanced_accuracy"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["accuracy"] == pytest.approx(4 / 6)


def test_binary_f1_is_the_macro_mean_so_an_all_positive_guess_does_not_look_good():
    targets = [0, 1, 1, 1]
    all_positive = np.array([0.9, 0.9, 0.9, 0.9])
    m = classification_metrics(targets, all_positive)
    # F1 of class 1 alone would be 2 * 3 / (3 + 4) = 0.857; class 0 is never predicted: F1 0
    assert m["f1"] == pytest.approx((6 / 7 + 0.0) / 2)


def test_auc_single_class_is_nan():
    m = classification_metrics([1, 1], np.array([0.2, 0.9]))
    assert math.isnan(m["auc"])


def test_classification_table_round_trip():
    probs = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7], [0.5, 0.4, 0.1]])
    table = classification_table(["a", "b", "c", "d"], [0, 1, 2, 1], probs)
    assert list(table["prediction"]) == [0, 1, 2, 0]
    assert list(table["correct"]) == [1.0, 1.0, 1.0, 0.0]
    again = classification_metrics_from_table(table)
    assert again == classification_metrics([0, 1, 2, 1], probs)
