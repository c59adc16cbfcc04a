"""Did a segmentation run fit each class on its own training patches? Per-class soft Dice in training.

A fine-tuning run can end without having learned a small class at all. On the built-in CT cohort
(2D track, 600 steps) a few runs scored kidney Dice 0.00 on every test case. Two causes give the
same test score and call for different remedies:

* a *training stall*: the class never fit the run's own training patches (one held-out run's kidney
  soft Dice stayed near 0.14 for all 600 steps; with 1200 steps the same run learned them, 0.73 on
  the test cases). Its test score measures the schedule, not the labels: train longer;
* a *generalisation failure*: the class fit the training patches (soft Dice 0.75 in one run whose
  two labeled cases were venous-phase CT) but not test cases unlike them (kidney Dice 0.01 on the
  non-contrast test cases). More steps do not help; labeled cases that cover the test cases do
  (``study.subgroup_columns`` shows it).

:class:`ClassFitTracker` tells them apart at no extra forward pass. On each labeled batch it
records, per foreground class ``c``, the soft Dice of the softmax probabilities ``p`` against the
one-hot target ``y`` over the whole batch (as MONAI's ``DiceCELoss(batch=True)`` computes it):

    d_c = 2 * sum(p_c * y_c) / (sum(p_c) + sum(y_c)),

leaving out batches without the class (``sum(y_c) = 0``: there it would only score false positives).
:meth:`ClassFitTracker.summary` gives each class's mean over its last ``window`` recorded batches
(``train_class_dice``) and the mean per block of ``window`` batches (``train_class_dice_curve``),
indexed by class (index 0, background, is None). :func:`medssl.study.training_fit.stalled_class_warning`
reads them from the cell records.

Example:
    >>> tracker = ClassFitTracker(num_classes=3, window=2)
    >>> logits = torch.tensor([[[[9.0, -9.0]], [[-9.0, 9.0]], [[-9.0, -9.0]]]])  # (B, C, X, Y)
    >>> tracker.update(logits, torch.tensor([[[[0, 1]]]]))      # class 1 right, class 2 absent
    >>> tracker.summary()["train_class_dice"]
    [None, 1.0, None]
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import nn

__all__ = ["ClassFitTracker", "TrackedLoss", "batch_soft_dice"]


def batch_soft_dice(logits: torch.Tensor, target: torch.Tensor) -> list[float]:
    """Soft Dice per class (index 0 included) of ``softmax(logits)`` against the integer ``target``
    ``(B, 1, *spatial)`` over the whole batch; NaN for a class absent from ``target``. One transfer
    from the device per call."""
    with torch.no_grad():
        probabilities = torch.softmax(logits.detach().float(), dim=1)
        n_classes = probabilities.shape[1]
        labels = target.detach().long().reshape(target.shape[0], *target.shape[2:])
        truth = torch.nn.functional.one_hot(labels, n_classes).movedim(-1, 1).to(probabilities.dtype)
        reduce = [0] + list(range(2, probabilities.ndim))
        overlap = (probabilities * truth).sum(reduce)
        n_truth = truth.sum(reduce)
        dice = torch.where(n_truth > 0, 2 * overlap / (probabilities.sum(reduce) + n_truth),
                           torch.full_like(overlap, math.nan))
    return dice.cpu().tolist()


class ClassFitTracker:
    """Per-class soft Dice of the training batches, kept for the run's summary (module docstring)."""

    def __init__(self, num_classes: int, window: int = 50) -> None:
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2 (background and one class), got {num_classes}")
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        self.num_classes = num_classes
        self.window = window
        self.records: list[list[float]] = []

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        """Record one labeled batch: ``logits (B, C, *spatial)``, ``target (B, 1, *spatial)``."""
        if logits.shape[1] != self.num_classes:
            raise ValueError(f"logits have {logits.shape[1]} channels, the tracker expects {self.num_classes}")
        self.records.append(batch_soft_dice(logits, target))

    @staticmethod
    def _mean(rows: Sequence[Sequence[float]], c: int) -> float | None:
        values = [row[c] for row in rows if not math.isnan(row[c])]
        return round(sum(values) / len(values), 4) if values else None

    def _per_class(self, rows: Sequence[Sequence[float]]) -> list[float | None]:
        return [None] + [self._mean(rows, c) for c in range(1, self.num_classes)]

    def summary(self, steps: int | None = None) -> dict[str, Any]:
        """``train_class_dice``: per class, the mean over the last ``window`` batches that contain it
        (None where none did); ``train_class_dice_curve``: the same per block of ``window`` batches;
        ``train_class_dice_window``: the block size; ``train_class_dice_every``: the training steps
        per block, given the run's ``steps`` (a step may record more than one batch: cross pseudo
        supervision records both networks'), else the block size."""
        blocks = [self.records[i:i + self.window] for i in range(0, len(self.records), self.window)]
        every = self.window * steps / len(self.records) if steps and self.records else self.window
        return {
            "train_class_dice": self._per_class(self.records[-self.window:]),
            "train_class_dice_curve": [self._per_class(block) for block in blocks],
            "train_class_dice_window": self.window,
            "train_class_dice_every": round(every, 3),
        }


class TrackedLoss(nn.Module):
    """``loss(logits, target)``, recording the batch in ``tracker`` first.

    Example::

        criterion = TrackedLoss(DiceCELoss(to_onehot_y=True, softmax=True), ClassFitTracker(3))
    """

    def __init__(self, loss: nn.Module, tracker: ClassFitTracker) -> None:
        super().__init__()
        self.loss = loss
        self.tracker = tracker

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self.tracker.update(logits, target)
        return self.loss(logits, target)
