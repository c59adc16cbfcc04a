"""Evaluation metrics: segmentation overlap and surface distances per case, classification scores.

Segmentation metrics come from MONAI (``compute_dice``, ``compute_hausdorff_distance``,
``compute_surface_dice``), classification metrics from scikit-learn (``roc_auc_score``,
``balanced_accuracy_score``, ``f1_score``). What this module adds is the policy MONAI leaves open and
a clinician reading a table needs fixed:

* distances are in millimetres, using the voxel spacing of the case;
* a class absent from a case's reference is not scored on that case, as nnU-Net's evaluation does
  (and MONAI's ``DiceMetric(ignore_empty=True)``): scoring it 1 would let a class that was never
  learned raise every mean on the cases without it. Its per-class values are NaN, the case's mean
  is over the classes it contains, and the rows ``present_<k>`` and ``predicted_<k>`` (1 or 0)
  record whether the class is in the reference and in the prediction, so a report can count the
  cases that contain each class and the classes never predicted where present:

  ===========================  ======  =================================  ============
  reference / prediction       Dice    HD95                               surface Dice
  ===========================  ======  =================================  ============
  both empty                   NaN     NaN                                NaN
  reference empty, predicted   0       diagonal of the image in mm        0
  present, not predicted       0       diagonal of the image in mm        0
  ===========================  ======  =================================  ============

  A structure predicted where the reference has none scores 0, as in nnU-Net (MONAI's
  ``ignore_empty`` would drop it and hide the false positive). The HD95 of a missed (or
  hallucinated) structure is the worst distance the image allows, the convention of several
  challenges (a miss must never look better than a poor hit). A case that contains no class at
  all and gets no prediction has a NaN mean: it is left out of means and intervals (and counted).

Formulas (``P`` prediction, ``G`` reference, ``dP`` / ``dG`` their surfaces):

* Dice = 2 |P ∩ G| / (|P| + |G|);
* HD95 = max(95th percentile of d(p, dG) over p in dP, 95th percentile of d(g, dP) over g in dG);
* surface Dice at tolerance tau (Nikolov et al., 2021, "Clinically applicable segmentation of
  head and neck anatomy for radiotherapy"): the fraction of both surfaces lying within tau mm of
  the other surface.

Example:
    >>> import numpy as np
    >>> ref = np.zeros((8, 8, 8), np.int64); ref[2:6, 2:6, 2:6] = 1
    >>> pred = np.zeros_like(ref); pred[2:6, 2:6, 3:6] = 1
    >>> m = segmentation_case_metrics(pred, ref, num_classes=2, spacing=(1.0, 1.0, 1.0))
    >>> round(m["dice"], 4)
    0.8571
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch

log = logging.getLogger(__name__)

SEGMENTATION_METRICS = ("dice", "hd95", "surface_dice")
"""Per-case segmentation metrics; each also exists per class as ``<metric>_<class index>``."""

CLASSIFICATION_METRICS = ("auc", "balanced_accuracy", "f1", "accuracy")
"""Classification metrics computed over a set of cases (not per case)."""

HIGHER_IS_BETTER = {
    "dice": True,
    "hd95": False,
    "surface_dice": True,
    "auc": True,
    "balanced_accuracy": True,
    "f1": True,
    "accuracy": True,
}


def _one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(*spatial)`` integer labels -> ``(1, num_classes, *spatial)`` one-hot float tensor."""
    return torch.nn.functional.one_hot(labels.long(), num_classes).movedim(-1, 0).unsqueeze(0).float()


def _as_label_tensor(labels: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    tensor = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels)
    if tensor.is_floating_point():
        rounded = tensor.round()
        if not torch.equal(rounded, tensor):
            raise ValueError(f"{name} must hold integer class labels, got non-integer values")
        tensor = rounded
    return tensor.long().cpu()


def segmentation_case_metrics(
    prediction: np.ndarray | torch.Tensor,
    reference: np.ndarray | torch.Tensor,
    *,
    num_classes: int,
    spacing: Sequence[float],
    surface_tolerance_mm: float = 2.0,
    metrics: Sequence[str] = SEGMENTATION_METRICS,
) -> dict[str, float]:
    """Dice, HD95 (mm) and surface Dice (at ``surface_tolerance_mm``) of one case, per class and mean.

    Args:
        prediction: integer label map ``(*spatial)`` (a leading channel of size 1 is accepted).
        reference: integer label map of the same shape.
        num_classes: number of classes including background (label 0, never scored).
        spacing: voxel size in mm along each spatial axis of the arrays.
        surface_tolerance_mm: the tolerance tau of the surface Dice.
        metrics: which of :data:`SEGMENTATION_METRICS` to compute (HD95 and surface Dice cost a
            distance transform each; Dice is cheap).

    Returns:
        ``{"dice_1": ..., "hd95_1": ..., "surface_dice_1": ..., "dice": mean over the scored
        classes, ..., "present_1": 1.0, "predicted_1": 0.0, ...}``; a class absent from both the
        reference and the prediction is NaN (see the module docstring).
    """
    unknown = set(metrics) - set(SEGMENTATION_METRICS)
    if unknown:
        raise ValueError(f"unknown segmentation metric(s) {sorted(unknown)}; choose from {SEGMENTATION_METRICS}")
    pred = _as_label_tensor(prediction, "prediction")
    ref = _as_label_tensor(reference, "reference")
    if pred.ndim == ref.ndim + 1 and pred.shape[0] == 1:
        pred = pred[0]
    if ref.ndim == pred.ndim + 1 and ref.shape[0] == 1:
        ref = ref[0]
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} differs from reference shape {tuple(ref.shape)}")
    spacing = [float(s) for s in spacing][: pred.ndim]
    if len(spacing) != pred.ndim:
        raise ValueError(f"spacing {spacing} does not give one value per spatial axis of shape {tuple(pred.shape)}")
    if num_classes < 2:
        raise ValueError("num_classes counts the background too and must be >= 2")
    for name, tensor in (("prediction", pred), ("reference", ref)):
        if tensor.numel() and (int(tensor.min()) < 0 or int(tensor.max()) >= num_classes):
            raise ValueError(f"{name} holds labels outside [0, {num_classes - 1}]")

    pred_oh = _one_hot(pred, num_classes)
    ref_oh = _one_hot(ref, num_classes)
    pred_present = pred_oh[0, 1:].flatten(1).any(dim=1)
    ref_present = ref_oh[0, 1:].flatten(1).any(dim=1)
    both = pred_present & ref_present
    neither = ~pred_present & ~ref_present
    diagonal_mm = math.sqrt(sum(((n - 1) * s) ** 2 for n, s in zip(pred.shape, spacing)))

    per_class: dict[str, np.ndarray] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI warns on empty structures; handled below
        from monai.metrics import compute_dice, compute_hausdorff_distance, compute_surface_dice

        if "dice" in metrics:
            dice = compute_dice(pred_oh, ref_oh, include_background=False, ignore_empty=False)[0].numpy()
            per_class["dice"] = np.where(neither.numpy(), np.nan, dice)
        if "hd95" in metrics:
            values = np.zeros(num_classes - 1)
            if bool(both.any()):
                hd = compute_hausdorff_distance(
                    pred_oh, ref_oh, include_background=False, percentile=95, spacing=spacing
                )[0].numpy()
                values = np.where(both.numpy(), hd, 0.0)
            values = np.where(neither.numpy(), np.nan, np.where(both.numpy(), values, diagonal_mm))
            per_class["hd95"] = values
        if "surface_dice" in metrics:
            values = np.zeros(num_classes - 1)
            if bool(both.any()):
                nsd = compute_surface_dice(
                    pred_oh,
                    ref_oh,
                    class_thresholds=[float(surface_tolerance_mm)] * (num_classes - 1),
                    include_background=False,
                    spacing=spacing,
                )[0].numpy()
                values = np.where(both.numpy(), nsd, 0.0)
            per_class["surface_dice"] = np.where(neither.numpy(), np.nan, values)

    result: dict[str, float] = {}
    for metric in metrics:
        values = per_class[metric]
        for class_index, value in enumerate(values, start=1):
            result[f"{metric}_{class_index}"] = float(value)
        result[metric] = float(np.mean(values[np.isfinite(values)])) if np.isfinite(values).any() else float("nan")
    for class_index, (present, predicted) in enumerate(zip(ref_present.tolist(), pred_present.tolist()), start=1):
        result[f"present_{class_index}"] = float(present)
        result[f"predicted_{class_index}"] = float(predicted)
    return result


def segmentation_table(
    cases: Iterable[tuple[str, np.ndarray | torch.Tensor, np.ndarray | torch.Tensor, Sequence[float]]],
    *,
    num_classes: int,
    surface_tolerance_mm: float = 2.0,
    metrics: Sequence[str] = SEGMENTATION_METRICS,
) -> pd.DataFrame:
    """Per-case table: one row per ``(case_id, prediction, reference, spacing)``, one column per metric.

    Example:
        >>> import numpy as np
        >>> ref = np.zeros((6, 6, 6), np.int64); ref[1:4, 1:4, 1:4] = 1
        >>> segmentation_table([("a", ref, ref, (1, 1, 1))], num_classes=2, metrics=["dice"])
          case_id  dice_1  dice  present_1  predicted_1
        0       a     1.0   1.0        1.0          1.0
    """
    rows = []
    for case_id, prediction, reference, spacing in cases:
        row: dict[str, object] = {"case_id": str(case_id)}
        row.update(
            segmentation_case_metrics(
                prediction,
                reference,
                num_classes=num_classes,
                spacing=spacing,
                surface_tolerance_mm=surface_tolerance_mm,
                metrics=metrics,
            )
        )
        rows.append(row)
    return pd.DataFrame(rows)


def _check_probabilities(targets: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim == 1:  # scores of the positive class
        probabilities = np.stack([1.0 - probabilities, probabilities], axis=1)
    if probabilities.ndim != 2 or probabilities.shape[0] != targets.shape[0]:
        raise ValueError(
            f"probabilities must be (N,) or (N, num_classes) for N={targets.shape[0]} targets, "
            f"got shape {probabilities.shape}"
        )
    return probabilities


def classification_metrics(
    targets: Sequence[int] | np.ndarray, probabilities: np.ndarray, *, num_classes: int | None = None
) -> dict[str, float]:
    """AUC, balanced accuracy, F1 and accuracy of class probabilities against integer targets.

    Binary problems: AUC of the positive-class probability; more classes: one-vs-rest macro AUC.
    ``f1`` is the macro F1 (the mean of the per-class F1s over ``0 .. num_classes - 1``) for binary
    problems too: the F1 of class 1 alone rewards an all-positive guess (0.857 with 3 positives in
    4) and says nothing of the negatives. Predictions are the argmax of ``probabilities``. AUC is
    NaN (with a warning) when the targets hold a single class, as it is undefined there.

    Example:
        >>> import numpy as np
        >>> m = classification_metrics([0, 0, 1, 1], np.array([0.1, 0.6, 0.4, 0.9]))
        >>> m["auc"], m["accuracy"]
        (0.75, 0.5)
    """
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, roc_auc_score

    targets = np.asarray(targets).astype(np.int64)
    probabilities = _check_probabilities(targets, probabilities)
    num_classes = num_classes or probabilities.shape[1]
    predictions = probabilities.argmax(axis=1)
    labels = list(range(num_classes))
    present = np.unique(targets)
    if present.size < 2:
        log.warning("AUC is undefined when the test targets hold a single class (%s); reporting NaN", present)
        auc = float("nan")
    elif num_classes == 2:
        auc = float(roc_auc_score(targets, probabilities[:, 1]))
    else:
        auc = float(roc_auc_score(targets, probabilities, multi_class="ovr", average="macro", labels=labels))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # balanced accuracy warns when a class is absent from predictions
        balanced = float(balanced_accuracy_score(targets, predictions))
    f1 = float(f1_score(targets, predictions, average="macro", labels=labels, zero_division=0.0))
    return {
        "auc": auc,
        "balanced_accuracy": balanced,
        "f1": f1,
        "accuracy": float(accuracy_score(targets, predictions)),
    }


def classification_table(
    case_ids: Sequence[str], targets: Sequence[int], probabilities: np.ndarray
) -> pd.DataFrame:
    """Per-case table of a classifier: ``case_id``, ``target``, ``prediction``, ``correct``, ``prob_<k>``."""
    targets = np.asarray(targets).astype(np.int64)
    probabilities = _check_probabilities(targets, probabilities)
    table = pd.DataFrame({"case_id": [str(c) for c in case_ids], "target": targets})
    table["prediction"] = probabilities.argmax(axis=1)
    table["correct"] = (table["prediction"] == table["target"]).astype(float)
    for k in range(probabilities.shape[1]):
        table[f"prob_{k}"] = probabilities[:, k]
    return table


def classification_metrics_from_table(table: pd.DataFrame) -> dict[str, float]:
    """:func:`classification_metrics` of a table made by :func:`classification_table`."""
    prob_columns = sorted((c for c in table.columns if str(c).startswith("prob_")), key=lambda c: int(c[5:]))
    return classification_metrics(table["target"].to_numpy(), table[prob_columns].to_numpy())
