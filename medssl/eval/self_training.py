"""Offline self-training for segmentation: a teacher trained on the labels pseudo-labels whole
unlabeled volumes, and a new network learns from the labels and the pseudo-labels.

Papers: Lee 2013 ("Pseudo-Label"); Xie et al. 2020, "Self-training with Noisy Student improves
ImageNet classification" (the student gets noise the teacher did not: here the strong view); Yang,
Zhuo, Qi, Shi & Gao 2022, "ST++: Make Self-training Work Better for Semi-supervised Semantic
Segmentation", CVPR (reference implementation: github.com/LiheYoung/ST-PlusPlus), whose selection
of reliable images this module follows.

Unlike the online methods of :mod:`medssl.eval.semi_supervised`, whose teacher labels one patch at a
time, the teacher here labels each unlabeled volume whole, exactly as a test case is predicted
(:func:`medssl.eval.evaluate.predict_case`: sliding window, the slice track stacked back into the
volume, ``finetune.keep_largest_components``). A pseudo-label then sees the whole anatomy, and
post-processing removes the scattered false positives a patch teacher would pass on.

The recipe (``finetune.semi.method: self_training``):

1. Teacher: the labels-only recipe (the same seed, patches, augmentation and steps), its weights
   kept at ``checkpoints`` evenly spaced steps (the last is the final network).
2. Pseudo-labels: the final teacher predicts every unlabeled volume.
3. Reliability (ST++): volume ``v`` scores
   ``s(v) = mean_k mean_c Dice(P_k(v) == c, P_K(v) == c)`` over the earlier checkpoints ``k < K``
   and the foreground classes ``c`` present in either prediction: a volume whose prediction kept
   changing while the teacher trained is one it is unsure of. The ``select_fraction`` highest
   scoring volumes are kept (default 0.5, ST++'s; 1.0: all, no checkpoints needed).
4. Student: a new network from the same init trains for the same steps on batches of which a
   ``pseudo_share`` (in expectation) are patches of the pseudo-labeled volumes (class-balanced
   centres from the pseudo-labels, the labeled recipe's augmentation; ``pseudo_view: strong``: the
   strong view instead, Noisy Student's noise) and the rest labeled patches, with the same DiceCE
   loss.
5. Optional (``relabel_rest``, ST++'s selective re-training): the student of step 4 labels the
   volumes step 3 left out, and a new network from the init trains as in step 4 on every volume,
   the reliable ones with the teacher's labels.
6. Optional (``rounds`` > 1, Noisy Student's iteration, Xie et al. 2020): the student of step 4,
   its weights kept at the same checkpoints, is the next round's teacher (steps 2-4 again). Two
   rounds gained +0.013 to +0.015 Dice over one on the built-in cohorts (docs/studies.md).

The cost is a labels-only run (the teacher), ``checkpoints`` predictions of every unlabeled volume
(one when all are kept), and a second run (the student); each further round adds the
predictions and a run; ``relabel_rest`` one prediction of the volumes left out and a run. Where
an unlabeled volume has an
annotation (a labels table's pool), the history records how right the kept pseudo-labels were per
class: a diagnostic, never a training signal.

Example::

    model, history = self_train_segmentation(build_model, labeled_patches, pseudo_patches, volumes,
                                             cfg.finetune, seed=0)
    history.extra["pseudo_label_dice"]     # per class, kept volumes with an annotation
"""

from __future__ import annotations

import bisect
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import Dataset

from medssl.config import FinetuneConfig
from medssl.errors import ConfigError, DataError
from medssl.eval.cases import LabeledCase, remap_mask
from medssl.eval.finetune import FinetuneHistory, finetune_segmentation
from medssl.eval.networks import FinetuneModel, network_state

log = logging.getLogger(__name__)

__all__ = [
    "UnlabeledVolume", "PatchMixture", "class_agreement", "prediction_stability", "select_reliable",
    "classes_to_mask_values", "checkpoint_steps", "self_train_segmentation",
]


@dataclass
class UnlabeledVolume:
    """One unlabeled volume for self-training.

    ``name`` is pseudonymous (a case id or a running number, never a path); ``row`` the manifest
    row a patch dataset reads it from; ``load()`` gives the whole preprocessed case (its mask, where
    there is one, is the annotation: a diagnostic only)."""

    name: str
    row: dict[str, Any]
    load: Callable[[], LabeledCase]


class PatchMixture(Dataset):
    """The items of several patch datasets as one dataset: ``parts[0]``'s items, then ``parts[1]``'s...

    ``set_epoch`` reaches every part, so each keeps drawing new patches epoch after epoch.

    Example:
        >>> mixture = PatchMixture([list(range(3)), ["a", "b"]])
        >>> len(mixture), mixture[2], mixture[3]
        (5, 2, 'a')
    """

    def __init__(self, parts: Sequence[Any]):
        if not parts:
            raise ValueError("PatchMixture needs at least one dataset")
        self.parts = list(parts)
        self.ends = list(np.cumsum([len(p) for p in self.parts]))
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        for part in self.parts:
            if hasattr(part, "set_epoch"):
                part.set_epoch(epoch)

    def __len__(self) -> int:
        return int(self.ends[-1])

    def __getitem__(self, index: int) -> Any:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        part = bisect.bisect_right(self.ends, index)
        start = 0 if part == 0 else int(self.ends[part - 1])
        return self.parts[part][index - start]


def class_agreement(a: torch.Tensor, b: torch.Tensor, num_classes: int) -> float:
    """Mean Dice between two label maps over the foreground classes present in either (1.0 when
    neither holds any foreground).

    Example:
        >>> a = torch.tensor([0, 1, 1, 2]); b = torch.tensor([0, 1, 0, 2])
        >>> round(class_agreement(a, b, 3), 4)     # class 1: 2*1/(2+1), class 2: 1
        0.8333
    """
    scores = []
    for c in range(1, num_classes):
        in_a, in_b = a == c, b == c
        total = int(in_a.sum()) + int(in_b.sum())
        if total:
            scores.append(2.0 * int((in_a & in_b).sum()) / total)
    return float(np.mean(scores)) if scores else 1.0


def prediction_stability(final: torch.Tensor, earlier: Sequence[torch.Tensor], num_classes: int) -> float:
    """ST++'s reliability of one volume: the mean :func:`class_agreement` of each earlier
    checkpoint's prediction with the final one (1.0 without earlier checkpoints)."""
    if not earlier:
        return 1.0
    return float(np.mean([class_agreement(e, final, num_classes) for e in earlier]))


def select_reliable(scores: Sequence[float], fraction: float) -> list[int]:
    """Indices of the ``ceil(fraction * n)`` highest ``scores`` (at least one), in index order; ties
    go to the earlier index.

    Example:
        >>> select_reliable([0.2, 0.9, 0.5, 0.9], 0.5)
        [1, 3]
    """
    if not 0.0 < fraction <= 1.0:
        raise ConfigError(f"finetune.semi.select_fraction={fraction} must be in (0, 1]")
    if not len(scores):
        return []
    keep = max(1, math.ceil(fraction * len(scores) - 1e-9))
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    return sorted(order[:keep])


def classes_to_mask_values(labels: torch.Tensor, mask_labels: Sequence[int] | None) -> np.ndarray:
    """Class indices ``(X, Y, Z)`` back to mask values ``(1, X, Y, Z)`` uint8, the inverse of
    :func:`medssl.eval.cases.remap_mask` (class ``i + 1`` is ``mask_labels[i]``).

    Example:
        >>> classes_to_mask_values(torch.tensor([[[0, 1, 2]]]), [6, 3]).tolist()
        [[[[0, 6, 3]]]]
    """
    labels = labels.long().cpu()
    if mask_labels is not None:
        lookup = torch.tensor([0, *[int(v) for v in mask_labels]], dtype=torch.long)
        labels = lookup[labels]
    if labels.numel() and int(labels.max()) > 255:
        raise DataError(f"a pseudo-label holds mask value {int(labels.max())}: masks are stored as uint8")
    return labels[None].numpy().astype(np.uint8)


def checkpoint_steps(steps: int, checkpoints: int) -> list[int]:
    """The steps (counted from 1) after which the teacher's earlier checkpoints are kept:
    ``checkpoints - 1`` evenly spaced ones before the final network.

    Example:
        >>> checkpoint_steps(600, 3)
        [200, 400]
    """
    return sorted({max(1, round(k * steps / checkpoints)) for k in range(1, checkpoints)} - {steps})


def _volume_counts(labels: torch.Tensor, truth: torch.Tensor | None, num_classes: int) -> np.ndarray:
    """Per class ``c`` of one volume: voxels labelled ``c``, of those the ones the annotation also
    calls ``c``, and the annotation's voxels of ``c`` (the last two 0 without an annotation);
    shape ``(3, num_classes)``."""
    counts = np.zeros((3, num_classes), np.int64)
    for c in range(num_classes):
        members = labels == c
        counts[0, c] = int(members.sum())
        if truth is not None:
            counts[1, c] = int((members & (truth == c)).sum())
            counts[2, c] = int((truth == c).sum())
    return counts


@dataclass
class _PseudoLabelCounts:
    """Per class: voxels labelled, those in kept volumes, those checked against an annotation and
    right, and the Dice of each annotated volume (kept ones apart)."""

    num_classes: int

    def __post_init__(self) -> None:
        self.total = np.zeros(self.num_classes, np.int64)
        self.kept = np.zeros(self.num_classes, np.int64)
        self.checked = np.zeros(self.num_classes, np.int64)
        self.correct = np.zeros(self.num_classes, np.int64)
        self.dice: list[list[float]] = [[] for _ in range(self.num_classes)]
        self.dice_all: list[list[float]] = [[] for _ in range(self.num_classes)]

    def add(self, labels: torch.Tensor, kept: bool, truth: torch.Tensor | None) -> None:
        self.add_counts(_volume_counts(labels, truth, self.num_classes), kept, truth is not None)

    def add_counts(self, counts: np.ndarray, kept: bool, annotated: bool) -> None:
        """One volume's :func:`_volume_counts`."""
        labelled, right, in_truth = counts
        self.total += labelled
        if kept:
            self.kept += labelled
        if not annotated:
            return
        if kept:
            self.checked += labelled
            self.correct += right
        for c in range(1, self.num_classes):
            union = int(labelled[c] + in_truth[c])
            if union:
                self.dice_all[c].append(2.0 * int(right[c]) / union)
                if kept:
                    self.dice[c].append(2.0 * int(right[c]) / union)

    def as_dict(self) -> dict[str, list[float | None]]:
        """Coverage (voxels labelled ``c`` that are in kept volumes), accuracy (of those, the share
        the annotation also calls ``c``), the mean Dice of the kept annotated volumes, and that of
        every annotated volume, kept or not (what the selection gained)."""
        return {
            "pseudo_label_coverage": [float(k / t) if t else None for k, t in zip(self.kept, self.total)],
            "pseudo_label_accuracy": [float(r / n) if n else None for r, n in zip(self.correct, self.checked)],
            "pseudo_label_dice": [None] + [float(np.mean(d)) if d else None for d in self.dice[1:]],
            "pseudo_label_dice_all": [None] + [float(np.mean(d)) if d else None for d in self.dice_all[1:]],
        }


def _labels_only(cfg: FinetuneConfig) -> FinetuneConfig:
    return cfg.model_copy(update={"semi": cfg.semi.model_copy(update={"method": "none"})})


def _pseudo_label(teacher: FinetuneModel, volumes: Sequence[UnlabeledVolume], cfg: FinetuneConfig,
                  states: Sequence[dict[str, torch.Tensor]], device: torch.device | str | None
                  ) -> tuple[list[np.ndarray], list[float], _PseudoLabelCounts, list[bool]]:
    """The final teacher's label map of every volume (as uint8 mask values), each volume's stability
    over the earlier ``states``, the diagnostic counts, and which volumes are kept.

    Each volume is loaded once and predicted by every checkpoint in turn; only its uint8 mask and
    a few counts are kept, so memory grows by one byte per voxel per volume."""
    from medssl.eval.evaluate import predict_case

    final_state = network_state(teacher)
    masks: list[np.ndarray] = []
    scores: list[float] = []
    per_volume: list[tuple[np.ndarray, bool]] = []
    for volume in volumes:
        case = volume.load()
        earlier = []
        for state in states:
            teacher.network.load_state_dict(state)
            earlier.append(predict_case(teacher, case, cfg, device).cpu())
        if states:
            teacher.network.load_state_dict(final_state)
        final = predict_case(teacher, case, cfg, device).cpu()
        scores.append(prediction_stability(final, earlier, cfg.num_classes))
        truth = None if case.mask is None else remap_mask(case.mask_tensor(), cfg.mask_labels)[0]
        per_volume.append((_volume_counts(final, truth, cfg.num_classes), truth is not None))
        masks.append(classes_to_mask_values(final, cfg.mask_labels))
    kept_index = set(select_reliable(scores, cfg.semi.select_fraction))
    kept = [i in kept_index for i in range(len(volumes))]
    counts = _PseudoLabelCounts(cfg.num_classes)
    for (volume_counts, annotated), keep in zip(per_volume, kept):
        counts.add_counts(volume_counts, keep, annotated)
    return masks, scores, counts, kept


def self_train_segmentation(
    build_model: Callable[[], FinetuneModel],
    labeled_patches: Callable[[int], Dataset],
    pseudo_patches: Callable[[pd.DataFrame, list[np.ndarray]], Dataset],
    volumes: Sequence[UnlabeledVolume],
    cfg: FinetuneConfig,
    *,
    seed: int,
    device: torch.device | str | None = None,
    validation: Sequence[LabeledCase] | None = None,
    num_workers: int = 0,
) -> tuple[FinetuneModel, FinetuneHistory]:
    """Teacher, pseudo-labels, selection, student (module docstring); returns the student and its
    history, whose ``extra`` adds the pseudo-labels' diagnostics and each phase's seconds (its
    training fit, :mod:`medssl.eval.class_fit`, is the student's on its mixed batches). Every
    pseudo-label is held in memory, one byte per voxel of the preprocessed volume.

    Args:
        build_model: a new network from the init (called twice: teacher, then student).
        labeled_patches: ``samples_per_volume -> dataset`` of the labeled cases' patches.
        pseudo_patches: ``(rows, masks) -> dataset`` of pseudo-labeled patches of the kept volumes.
        volumes: the unlabeled volumes (never a test or validation case).
        cfg: ``finetune`` (``semi.select_fraction``, ``semi.checkpoints``, ``semi.pseudo_share``,
            ``semi.rounds``, ``semi.relabel_rest``).
    """
    if not volumes:
        raise DataError("finetune.semi.method=self_training needs unlabeled volumes, and there are none "
                        "(the training pool outside the labeled cases, or study.unlabeled)")
    semi, plain = cfg.semi, _labels_only(cfg)
    kept_steps = checkpoint_steps(cfg.steps, semi.checkpoints) if semi.select_fraction < 1.0 else []
    if semi.select_fraction < 1.0 and not kept_steps:
        raise ConfigError(f"finetune.semi.select_fraction={semi.select_fraction} ranks the volumes by how stable the "
                          f"teacher's prediction was, which needs a checkpoint before the final step: set "
                          f"finetune.semi.checkpoints >= 2 (now {semi.checkpoints}) with finetune.steps >= 2 (now "
                          f"{cfg.steps}), or select_fraction=1.0")
    if semi.relabel_rest and semi.select_fraction >= 1.0:
        raise ConfigError("finetune.semi.relabel_rest=true relabels the volumes the selection left out, and "
                          "select_fraction=1.0 leaves none out: set select_fraction < 1 or relabel_rest=false")
    started = time.perf_counter()
    teacher = build_model()
    states: list[dict[str, torch.Tensor]] = []

    def keep_checkpoint(network: nn.Module, step: int) -> None:
        if step + 1 in kept_steps:
            states.append({k: v.detach().to("cpu", copy=True) for k, v in network.state_dict().items()})

    per_volume = max(1, cfg.batch_size)
    teacher_patches = labeled_patches(per_volume)
    teacher_history = finetune_segmentation(teacher, teacher_patches, plain, seed=seed, device=device,
                                            validation=validation, num_workers=num_workers, on_step=keep_checkpoint)
    n_labeled = len(teacher_patches) // per_volume
    details: dict[str, Any] = {"volumes": len(volumes), "checkpoint_steps": kept_steps,
                               "teacher_seconds": round(time.perf_counter() - started, 3),
                               "teacher_final_loss": teacher_history.final_loss, "pseudo_label_seconds": 0.0,
                               "student_seconds": 0.0, "rounds": []}
    forward_items = teacher_history.forward_items

    def train_student(pseudo: dict[int, np.ndarray], on_step: Callable[[nn.Module, int], None] | None = None
                      ) -> tuple[FinetuneModel, FinetuneHistory, int, int]:
        rows = pd.DataFrame([volumes[i].row for i in sorted(pseudo)])
        pseudo_items = len(pseudo) * per_volume
        wanted_labeled = pseudo_items * (1.0 - semi.pseudo_share) / semi.pseudo_share
        labeled = labeled_patches(max(1, math.ceil(wanted_labeled / n_labeled)))
        mixture = PatchMixture([labeled, pseudo_patches(rows, [pseudo[i] for i in sorted(pseudo)])])
        student = build_model()
        history = finetune_segmentation(student, mixture, plain, seed=seed, device=device, validation=validation,
                                        num_workers=num_workers, on_step=on_step)
        return student, history, len(labeled), pseudo_items

    for generation in range(semi.rounds):
        started = time.perf_counter()
        masks, scores, counts, kept = _pseudo_label(teacher, volumes, cfg, states, device)
        label_seconds = time.perf_counter() - started
        teacher.network.to("cpu")
        del teacher
        states = []
        kept_masks = {i: masks[i] for i in range(len(volumes)) if kept[i]}
        del masks
        started = time.perf_counter()
        last = generation == semi.rounds - 1
        student, history, labeled_items, pseudo_items = train_student(kept_masks, None if last else keep_checkpoint)
        student_seconds = time.perf_counter() - started
        details["rounds"].append({**counts.as_dict(), "kept": int(sum(kept)),
                                  "stability": [round(s, 4) for s in sorted(scores)],
                                  "pseudo_label_seconds": round(label_seconds, 3),
                                  "student_seconds": round(student_seconds, 3), "final_loss": history.final_loss})
        details["pseudo_label_seconds"] = round(details["pseudo_label_seconds"] + label_seconds, 3)
        details["student_seconds"] = round(details["student_seconds"] + student_seconds, 3)
        if not last:
            forward_items += history.forward_items
            teacher = student
    details.update(kept=int(sum(kept)), stability=details["rounds"][-1]["stability"], labeled_items=labeled_items,
                   pseudo_items=pseudo_items)
    rest = [i for i in range(len(volumes)) if not kept[i]]
    if semi.relabel_rest and rest:
        student, history, details = _retrain_on_all(student, history, details, rest, kept_masks, train_student,
                                                    volumes, cfg, device)
    history.forward_items += forward_items
    history.extra.update(counts.as_dict(), semi_method="self_training", self_training=details)
    log.info("self-training: %d of %d unlabeled volumes kept (last round), pseudo-labels in %.1f s", sum(kept),
             len(volumes), details["pseudo_label_seconds"])
    return student, history


def _retrain_on_all(student: FinetuneModel, history: FinetuneHistory, details: dict[str, Any], rest: list[int],
                    kept_masks: dict[int, np.ndarray],
                    train_student: Callable[..., tuple[FinetuneModel, FinetuneHistory, int, int]],
                    volumes: Sequence[UnlabeledVolume], cfg: FinetuneConfig, device: torch.device | str | None
                    ) -> tuple[FinetuneModel, FinetuneHistory, dict[str, Any]]:
    """ST++'s selective re-training, its second stage: the first student (trained on the reliable
    volumes) labels the volumes the selection left out, and a new network from the init trains on
    the labels, the reliable volumes' teacher labels and those. Returns the new student, its
    history (the first student's forward items added) and ``details`` with the second stage's
    diagnostics (``rest_pseudo_label_dice``: per class, the relabelled volumes with an annotation)."""
    started = time.perf_counter()
    rest_masks, _, rest_counts, _ = _pseudo_label(student, [volumes[i] for i in rest], cfg, [], device)
    label_seconds = time.perf_counter() - started
    student.network.to("cpu")
    del student
    every = dict(kept_masks)
    every.update(zip(rest, rest_masks))
    started = time.perf_counter()
    final, final_history, labeled_items, pseudo_items = train_student(every, None)
    final_history.forward_items += history.forward_items
    details = dict(details, relabelled=len(rest), rest_pseudo_label_dice=rest_counts.as_dict()["pseudo_label_dice_all"],
                   rest_pseudo_label_seconds=round(label_seconds, 3), first_student_final_loss=history.final_loss,
                   labeled_items=labeled_items, pseudo_items=pseudo_items,
                   second_student_seconds=round(time.perf_counter() - started, 3))
    return final, final_history, details
