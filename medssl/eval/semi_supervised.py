"""Semi-supervised fine-tuning: consistency between predictions on weak and strong views of
unlabeled patches, added to the supervised loss on the few labeled ones.

The unlabeled archive is used a second time, during fine-tuning. Each step draws a labeled batch
``(x_l, y_l)`` and an unlabeled batch ``x_u`` (the *weak* view: a patch with the mild geometry of
fine-tuning); a *strong* view ``S(x_u)`` is the same patch through the modality's intensity
artefacts (:func:`medssl.transforms.presets.build_preset`), so weak and strong views share their
geometry and a dense target of one is the target of the other, voxel for voxel. A *teacher*
predicts ``p_t = softmax(f_t(x_u))`` on the weak view; the student ``f_s`` is trained with

    L = L_sup(f_s(x_l), y_l) + w(step) * L_u

where ``w`` rises from 0 to ``weight`` along the sigmoid ramp-up ``exp(-5 (1 - t)^2)`` of
Laine & Aila (2017) after ``start_step`` labels-only steps (a teacher warmed up on the labels
first). ``L_u`` by method (``finetune.semi.method``):

* ``mean_teacher`` (Tarvainen & Valpola, NeurIPS 2017; for 3D medical segmentation Yu et al.,
  MICCAI 2019, github.com/yulequan/UA-MT): ``mean((softmax(f_s(S(x_u))) - p_t)^2)``, with an EMA
  teacher ``theta_t <- a theta_t + (1 - a) theta_s``.
* ``uda`` (Xie et al., NeurIPS 2020, github.com/google-research/uda): ``KL(sharpen(p_t, T) ||
  softmax(f_s(S(x_u))))`` over the voxels where ``max p_t >= threshold``;
  ``sharpen(p, T)_c = p_c^(1/T) / sum_k p_k^(1/T)``.
* ``fixmatch`` (Sohn et al., NeurIPS 2020, github.com/google-research/fixmatch): cross-entropy
  to the hard pseudo-label ``argmax p_t`` over the voxels where its confidence reaches the
  threshold of its class, on a strong view with CutMix (a box of one patch pasted into another,
  the pseudo-labels mixed with the same box; French et al., BMVC 2020).
* ``unimatch`` (Yang et al., CVPR 2023, github.com/LiheYoung/UniMatch): FixMatch with two strong
  views (each with its own CutMix) and a feature-perturbed stream (channel dropout on the
  encoder's features of the weak view, decoded and trained on the same pseudo-labels):
  ``L_u = 0.5 * (L_s1 + L_s2) / 2 + 0.5 * L_fp``.
* ``cps``, cross pseudo supervision (Chen et al., CVPR 2021, github.com/charlesCXK/TorchSemiSeg;
  for medical images Luo's SSL4MIS, github.com/HiLab-git/SSL4MIS): no teacher, but a *peer*, a
  second network of the same architecture built from another seed (for a pretrained init: the
  same pretrained weights, other random ones elsewhere), trained alongside on the same batches.
  Each network learns the other's hard pseudo-labels: ``L_u = l(f_a(S(x_u)), argmax p_b) +
  l(f_b(S(x_u)), argmax p_a)`` with ``l`` the masked cross-entropy of ``fixmatch`` (CutMix boxes
  and thresholds as there), and the supervised loss counts both networks. The labels come from the
  weak view and the predictions on the strong view (FixMatch's split; the paper uses one view,
  with CutMix in its strongest variant). ``threshold: 0`` keeps every voxel, as the paper does.
  The student ``f_a`` is the network evaluated; the peer is dropped after training.

Small structures: one global threshold silences a class on which the teacher is never very
sure (the kidneys of the built-in cohort). ``threshold`` may be given per class, and with
``class_balanced`` the masked loss is averaged per pseudo-class, then over the classes present:
``L_u = mean_c [ sum_{v: yhat_v = c, conf_v} l_v / #{v: yhat_v = c} ]``, so a class's share of the
loss does not depend on its size, and the fraction of confident voxels still scales it (as
FixMatch's division by all voxels does).

Where the unlabeled cases carry an annotation (the training pool of a study), the accuracy of the
confident pseudo-labels against it is measured per class (:class:`PseudoLabelStats`): a
diagnostic only, never a training signal.

Example::

    objective = ConsistencyObjective(cfg.finetune.semi, num_classes=3, strong=build_strong_view("ct"))
    teacher = objective.make_teacher(network)
    loss_u, logs = objective.unlabeled_loss(network, teacher, x_u, student_logits_u, step, generator)
"""

from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medssl.config import SemiSupervisedConfig
from medssl.errors import ConfigError

IntensityFn = Callable[[torch.Tensor, torch.Generator], torch.Tensor]

METHODS = ("mean_teacher", "uda", "fixmatch", "unimatch", "cps")


# ---- schedules and targets ---------------------------------------------------------------------


def sigmoid_rampup(step: int, start: int, length: int) -> float:
    """The consistency weight's ramp-up: 0 before ``start``, then ``exp(-5 (1 - t)^2)`` with
    ``t = (step - start) / length`` clipped to [0, 1] (Laine & Aila 2017); 1 at once for ``length`` 0.

    >>> sigmoid_rampup(5, start=10, length=100), sigmoid_rampup(10, 10, 0), round(sigmoid_rampup(60, 10, 100), 4)
    (0.0, 1.0, 0.2865)
    """
    if step < start:
        return 0.0
    if length <= 0:
        return 1.0
    t = min(max((step - start) / float(length), 0.0), 1.0)
    return float(math.exp(-5.0 * (1.0 - t) ** 2))


def sharpen(probabilities: torch.Tensor, temperature: float) -> torch.Tensor:
    """``p_c^(1/T) / sum_k p_k^(1/T)`` over the class axis 1 (UDA's sharpening; ``T = 1`` keeps ``p``).

    >>> sharpen(torch.tensor([[0.6, 0.4]]), 0.5)
    tensor([[0.6923, 0.3077]])
    """
    if not 0.0 < temperature <= 1.0:
        raise ConfigError(f"sharpening temperature {temperature} must lie in (0, 1]")
    logits = torch.log(probabilities.clamp_min(1e-12)) / temperature
    return torch.softmax(logits, dim=1)


def class_thresholds(threshold: float | dict[int, float], num_classes: int) -> torch.Tensor:
    """One confidence threshold per class: a single value for all, or ``{class: value}`` (classes not
    named take the largest value given, the safe side).

    >>> class_thresholds({0: 0.95, 2: 0.7}, 3)
    tensor([0.9500, 0.9500, 0.7000])
    """
    if isinstance(threshold, dict):
        unknown = [int(k) for k in threshold if not 0 <= int(k) < num_classes]
        if unknown:
            raise ConfigError(f"finetune.semi.threshold names class(es) {unknown}, but there are {num_classes} classes")
        default = max(float(v) for v in threshold.values())
        values = [float(threshold.get(c, threshold.get(str(c), default))) for c in range(num_classes)]  # type: ignore[call-overload]
    else:
        values = [float(threshold)] * num_classes
    return torch.tensor(values, dtype=torch.float32)


def pseudo_labels(probabilities: torch.Tensor, thresholds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Hard pseudo-labels ``argmax p`` (``(B, *S)`` int64) and the mask of voxels whose confidence
    reaches the threshold of their pseudo-class (``(B, *S)`` bool)."""
    confidence, labels = probabilities.max(dim=1)
    return labels, confidence >= thresholds.to(probabilities.device)[labels]


# ---- the unlabeled losses ----------------------------------------------------------------------


def softmax_mse(student_logits: torch.Tensor, teacher_probabilities: torch.Tensor) -> torch.Tensor:
    """Mean teacher's consistency: ``mean((softmax(z_s) - p_t)^2)`` over batch, classes and voxels;
    0 when the two predictions agree."""
    return F.mse_loss(torch.softmax(student_logits.float(), dim=1), teacher_probabilities.float())


def masked_softmax_mse(student_logits: torch.Tensor, teacher_probabilities: torch.Tensor, mask: torch.Tensor, *,
                       num_classes: int, class_balanced: bool = True) -> torch.Tensor:
    """Mean teacher's consistency on the voxels where the teacher is confident only
    (``finetune.semi.confident_only``; the certainty mask of UA-MT, Yu et al. 2019, with the
    teacher's confidence in place of its Monte-Carlo entropy): ``mean_c((softmax(z_s) - p_t)^2)`` per
    voxel, reduced as the pseudo-label losses are; equal to :func:`softmax_mse` when every voxel is
    confident and ``class_balanced`` is off."""
    per_voxel = (torch.softmax(student_logits.float(), dim=1) - teacher_probabilities.float()).pow(2).mean(dim=1)
    return _reduce(per_voxel, mask, teacher_probabilities.argmax(dim=1), num_classes, class_balanced)


def _reduce(per_voxel: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor, num_classes: int,
            class_balanced: bool) -> torch.Tensor:
    """Masked mean of a per-voxel loss: over all voxels (FixMatch's ``sum(mask * l) / N``) or per
    pseudo-class, then over the classes present (module docstring)."""
    weighted = per_voxel * mask.to(per_voxel.dtype)
    if not class_balanced:
        return weighted.sum() / max(1, per_voxel.numel())
    terms = []
    for c in range(num_classes):
        members = labels == c
        count = int(members.sum())
        if count:
            terms.append(weighted[members].sum() / count)
    return torch.stack(terms).mean() if terms else weighted.sum() * 0.0


def pseudo_label_loss(student_logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, *,
                      num_classes: int, class_balanced: bool = True) -> torch.Tensor:
    """Cross-entropy to hard pseudo-labels on the confident voxels (FixMatch); 0 where none is
    confident. ``student_logits`` ``(B, K, *S)``, ``labels`` and ``mask`` ``(B, *S)``."""
    per_voxel = F.cross_entropy(student_logits.float(), labels, reduction="none")
    return _reduce(per_voxel, mask, labels, num_classes, class_balanced)


def cross_pseudo_supervision(logits_a: torch.Tensor, logits_b: torch.Tensor,
                             targets_a: tuple[torch.Tensor, torch.Tensor], targets_b: tuple[torch.Tensor, torch.Tensor],
                             *, num_classes: int, class_balanced: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross pseudo supervision (Chen et al. 2021): network ``a`` is trained on the pseudo-labels and
    mask of network ``b`` (``targets_b``), and ``b`` on those of ``a``. Returns the two terms
    ``(l(z_a, yhat_b), l(z_b, yhat_a))``; each network's gradient comes from its own term only, as
    the pseudo-labels carry no gradient.

    >>> z = torch.tensor([[[4.0, -4.0]], [[-4.0, 4.0]]]).permute(1, 0, 2)  # (B=1, K=2, S=2)
    >>> agree = (torch.tensor([[0, 1]]), torch.ones(1, 2, dtype=torch.bool))
    >>> [round(float(t), 4) for t in cross_pseudo_supervision(z, z, agree, agree, num_classes=2)]
    [0.0003, 0.0003]
    """
    labels_a, mask_a = targets_a
    labels_b, mask_b = targets_b
    term_a = pseudo_label_loss(logits_a, labels_b, mask_b, num_classes=num_classes, class_balanced=class_balanced)
    term_b = pseudo_label_loss(logits_b, labels_a, mask_a, num_classes=num_classes, class_balanced=class_balanced)
    return term_a, term_b


def masked_kl(student_logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, *, num_classes: int,
              class_balanced: bool = True) -> torch.Tensor:
    """UDA's ``KL(target || softmax(z_s))`` per voxel on the confident voxels; 0 when the student's
    prediction equals the target."""
    log_student = torch.log_softmax(student_logits.float(), dim=1)
    target = target.float()
    per_voxel = (target * (torch.log(target.clamp_min(1e-12)) - log_student)).sum(dim=1)
    return _reduce(per_voxel, mask, target.argmax(dim=1), num_classes, class_balanced)


# ---- CutMix ------------------------------------------------------------------------------------


def cutmix_boxes(batch: int, spatial: Sequence[int], generator: torch.Generator, *,
                 area: tuple[float, float] = (0.02, 0.4), prob: float = 0.5) -> torch.Tensor:
    """Per sample, a box covering a random fraction ``area`` of the patch (aspect ratios within
    [0.5, 2] per axis), or nothing with probability ``1 - prob``: a ``(B, *spatial)`` bool tensor.
    CutMix (Yun et al. 2019) as UniMatch uses it for dense prediction."""
    d = len(spatial)
    boxes = torch.zeros((batch, *spatial), dtype=torch.bool)
    draws = torch.rand(batch, 2 + 2 * d, generator=generator, dtype=torch.float64)
    for b in range(batch):
        if float(draws[b, 0]) >= prob:
            continue
        fraction = area[0] + float(draws[b, 1]) * (area[1] - area[0])
        aspects = torch.exp((draws[b, 2:2 + d] - 0.5) * math.log(4.0))
        aspects = aspects / aspects.prod() ** (1.0 / d)
        slices = []
        for axis, n in enumerate(spatial):
            side = int(round(min(1.0, fraction ** (1.0 / d) * float(aspects[axis])) * n))
            side = max(1, min(n, side))
            start = int(float(draws[b, 2 + d + axis]) * (n - side + 1))
            slices.append(slice(start, min(n, start + side)))
        boxes[(b, *slices)] = True
    return boxes


def apply_cutmix(tensor: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Paste, inside each sample's box, the content of the next sample of the batch (rolled by one).
    Works for images ``(B, C, *S)`` and labels or masks ``(B, *S)`` alike, so a strong view and its
    pseudo-labels are mixed with the same boxes."""
    partner = torch.roll(tensor, shifts=1, dims=0)
    box = boxes.to(tensor.device)
    if tensor.ndim == boxes.ndim + 1:
        box = box[:, None]
    return torch.where(box, partner, tensor)


# ---- teachers ----------------------------------------------------------------------------------


class EMATeacher:
    """An exponential moving average of the student's weights (mean teacher):
    ``theta_t <- a theta_t + (1 - a) theta_s`` with ``a = min(decay, (step + 1) / (step + 10))``
    (the warm-up of Tarvainen & Valpola's code, so the early teacher follows the student); buffers
    (batch-norm statistics) are copied from the student."""

    def __init__(self, student: nn.Module, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ConfigError(f"finetune.semi.ema_decay {decay} must lie in [0, 1)")
        self.decay = float(decay)
        self.network = copy.deepcopy(student)
        for parameter in self.network.parameters():
            parameter.requires_grad_(False)

    @torch.no_grad()
    def update(self, student: nn.Module, step: int) -> float:
        """One EMA step; returns the factor ``a`` used."""
        decay = min(self.decay, (step + 1.0) / (step + 10.0))
        for teacher_p, student_p in zip(self.network.parameters(), student.parameters()):
            teacher_p.mul_(decay).add_(student_p.detach(), alpha=1.0 - decay)
        for teacher_b, student_b in zip(self.network.buffers(), student.buffers()):
            teacher_b.copy_(student_b)
        return decay

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)


# ---- batch-norm statistics of the unlabeled stream ---------------------------------------------


@contextlib.contextmanager
def frozen_running_statistics(network: nn.Module) -> Iterator[None]:
    """Within the block, batch norm still normalises each batch by its own statistics, but the
    running mean and variance (what the network uses at test time) are left as they were.

    Consistency training forwards the strong views of unlabeled patches: other images (uniform
    patch centres, the intensity artefacts of the strong preset) than the labeled patches and the
    test images. Folded into the running statistics, they shift the test-time normalisation away
    from the one the supervised loss trained; ``finetune.semi.bn_statistics: labeled`` keeps them out.
    The same idea as the separate batch-norm statistics per domain of Chang et al. 2019
    ("Domain-specific batch normalization"). Implemented by setting each norm's ``momentum`` to 0
    (``running = (1 - 0) * running + 0 * batch``) and restoring it and ``num_batches_tracked`` after.

    >>> bn = nn.BatchNorm1d(2).train()
    >>> with frozen_running_statistics(bn):
    ...     _ = bn(torch.randn(8, 2) + 5)
    >>> bool(bn.running_mean.eq(0).all())
    True
    """
    norms = [m for m in network.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [(m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone()) for m in norms]
    for module in norms:
        module.momentum = 0.0
    try:
        yield
    finally:
        for module, (momentum, tracked) in zip(norms, saved):
            module.momentum = momentum
            if tracked is not None:
                module.num_batches_tracked.copy_(tracked)


@contextlib.contextmanager
def predicting_as_at_test_time(network: nn.Module) -> Iterator[None]:
    """Within the block ``network`` is in evaluation mode (batch norm uses its running statistics,
    dropout is off); its former mode is restored after. The teacher of ``bn_statistics: labeled``
    predicts this way, so its targets are what the network would predict at test time, not
    predictions normalised by the statistics of a batch of unlabeled patches.

    >>> net = nn.BatchNorm1d(2).train()
    >>> with predicting_as_at_test_time(net):
    ...     net.training
    False
    >>> net.training
    True
    """
    was_training = network.training
    network.eval()
    try:
        yield
    finally:
        network.train(was_training)


# ---- feature perturbation (UniMatch) -----------------------------------------------------------


@contextlib.contextmanager
def perturbed_features(network: nn.Module, module_names: Sequence[str], rate: float,
                       generator: torch.Generator) -> Iterator[None]:
    """Within the block, channel dropout (rate ``rate``, kept channels scaled by ``1 / (1 - rate)``)
    on the outputs of ``network``'s modules ``module_names`` (the encoder): UniMatch's feature
    perturbation, ``Dropout2d(0.5)`` on every encoder feature before the decoder. Masks come from
    ``generator`` (no global random state)."""
    modules = dict(network.named_children())
    missing = [name for name in module_names if name not in modules]
    if missing or not module_names:
        raise ConfigError(f"feature perturbation needs the encoder modules {list(module_names)} in "
                          f"{type(network).__name__} (it has {sorted(modules)}); use finetune.semi.method=fixmatch")

    def drop(tensor: torch.Tensor) -> torch.Tensor:
        if not torch.is_tensor(tensor) or tensor.ndim < 2 or not tensor.is_floating_point():
            return tensor
        keep = (torch.rand(tensor.shape[:2], generator=generator) >= rate).to(tensor.dtype).to(tensor.device)
        return tensor * keep.reshape(*tensor.shape[:2], *([1] * (tensor.ndim - 2))) / (1.0 - rate)

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> Any:
        if isinstance(output, (list, tuple)):
            return type(output)(drop(t) for t in output)
        return drop(output)

    handles = [modules[name].register_forward_hook(hook) for name in module_names]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


# ---- diagnostics -------------------------------------------------------------------------------


@dataclass
class PseudoLabelStats:
    """Running counts, per class, of confident pseudo-labelled voxels and of those that agree with
    the unlabeled cases' own annotation where they have one (truth -1: none); a diagnostic, never a
    training signal."""

    num_classes: int
    confident: np.ndarray = field(init=False)
    checked: np.ndarray = field(init=False)
    correct: np.ndarray = field(init=False)
    total: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.confident = np.zeros(self.num_classes, np.int64)
        self.checked = np.zeros(self.num_classes, np.int64)
        self.correct = np.zeros(self.num_classes, np.int64)
        self.total = np.zeros(self.num_classes, np.int64)

    def add(self, labels: torch.Tensor, mask: torch.Tensor, truth: torch.Tensor | None) -> None:
        labels, mask = labels.detach().cpu(), mask.detach().cpu()
        truth = None if truth is None else truth.detach().cpu()
        for c in range(self.num_classes):
            members = labels == c
            self.total[c] += int(members.sum())
            confident = members & mask
            self.confident[c] += int(confident.sum())
            if truth is not None:
                known = confident & (truth >= 0)
                self.checked[c] += int(known.sum())
                self.correct[c] += int((known & (truth == c)).sum())

    def as_dict(self) -> dict[str, list[float | None]]:
        """Per class: the fraction of pseudo-labelled voxels that were confident, and the accuracy of
        the confident ones against the annotation (None where none could be checked)."""
        coverage = [float(c / t) if t else None for c, t in zip(self.confident, self.total)]
        accuracy = [float(k / c) if c else None for k, c in zip(self.correct, self.checked)]
        return {"pseudo_label_coverage": coverage, "pseudo_label_accuracy": accuracy}


# ---- the objective -----------------------------------------------------------------------------


def build_strong_view(preset: str, *, spatial_dims: int = 3, **args: Any) -> IntensityFn:
    """The strong view's intensity augmentation: the preset's intensity transforms (noise, blur,
    windows, bias field...) for ``spatial_dims``-D patches, geometry untouched (the same transforms as
    ``finetune.intensity_augmentation: strong``)."""
    from medssl.transforms.presets import build_preset

    augmentation = build_preset(preset, spatial_dims=spatial_dims, **args)
    return augmentation.apply_intensity


class ConsistencyObjective:
    """The unlabeled part of the loss for ``cfg.method`` (module docstring).

    Args:
        cfg: ``finetune.semi``.
        num_classes: classes of the segmentation output (background included).
        strong: the strong view's intensity augmentation ``f(x, generator)``.
        encoder_modules: the network's encoder module names (UniMatch's feature perturbation).
        dense: per-voxel predictions (segmentation: CutMix, flips undone on the output) or one
            prediction per case (classification: no CutMix).
    """

    def __init__(self, cfg: SemiSupervisedConfig, num_classes: int, strong: IntensityFn,
                 encoder_modules: Sequence[str] = (), dense: bool = True):
        if cfg.method not in METHODS:
            raise ConfigError(f"finetune.semi.method={cfg.method!r}: choose one of {list(METHODS)}")
        self.cfg = cfg
        self.num_classes = int(num_classes)
        self.strong = strong
        self.encoder_modules = tuple(encoder_modules)
        self.dense = bool(dense)
        self.thresholds = class_thresholds(cfg.threshold, self.num_classes)
        self.stats = PseudoLabelStats(self.num_classes)

    @property
    def strong_views(self) -> int:
        """Strong views of each unlabeled patch the student sees per step."""
        return 2 if self.cfg.method == "unimatch" else 1

    def make_teacher(self, student: nn.Module) -> EMATeacher | None:
        """An EMA teacher (``teacher: ema``), or None when the student teaches itself (or, for
        ``cps``, the peer teaches it)."""
        if self.cfg.method == "cps" or self.cfg.teacher != "ema":
            return None
        return EMATeacher(student, self.cfg.ema_decay)

    def weight(self, step: int) -> float:
        """``weight * ramp-up(step)``: the unlabeled loss's factor at ``step``."""
        return self.cfg.weight * sigmoid_rampup(step, self.cfg.start_step, self.cfg.rampup_steps)

    @torch.no_grad()
    def teacher_probabilities(self, teacher: Callable[[torch.Tensor], torch.Tensor], weak: torch.Tensor
                              ) -> torch.Tensor:
        """``softmax(f_t(weak))``, averaged over a left-right flip with ``teacher_flips``."""
        probabilities = torch.softmax(teacher(weak).float(), dim=1)
        if self.cfg.teacher_flips:
            flipped = torch.softmax(teacher(torch.flip(weak, dims=(2,))).float(), dim=1)
            probabilities = 0.5 * (probabilities + (torch.flip(flipped, dims=(2,)) if self.dense else flipped))
        return probabilities

    def strong_inputs(self, weak: torch.Tensor, generator: torch.Generator) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The strong views of ``weak`` and their CutMix boxes (empty boxes for methods without CutMix)."""
        views, boxes = [], []
        spatial = tuple(weak.shape[2:])
        use_cutmix = self.dense and self.cfg.method in ("fixmatch", "unimatch", "cps")
        for _ in range(self.strong_views):
            view = self.strong(weak, generator)
            box = (cutmix_boxes(weak.shape[0], spatial, generator, prob=self.cfg.cutmix_prob) if use_cutmix
                   else torch.zeros((weak.shape[0], *spatial), dtype=torch.bool))
            views.append(apply_cutmix(view, box) if use_cutmix else view)
            boxes.append(box)
        return views, boxes

    def loss(self, student: nn.Module, probabilities: torch.Tensor, strong_logits: Sequence[torch.Tensor],
             boxes: Sequence[torch.Tensor], weak: torch.Tensor, generator: torch.Generator,
             truth: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """``L_u`` from the teacher's ``probabilities`` on the weak view and the student's logits on
        the strong views (CutMix ``boxes`` already applied to those views)."""
        cfg, k = self.cfg, self.num_classes
        labels, mask = pseudo_labels(probabilities, self.thresholds)  # mean teacher: a diagnostic only
        self.stats.add(labels, mask, None if truth is None else truth.reshape(labels.shape))
        logs = {"confident_fraction": float(mask.float().mean())}
        if cfg.method == "mean_teacher":
            loss = (masked_softmax_mse(strong_logits[0], probabilities, mask, num_classes=k,
                                       class_balanced=cfg.class_balanced)
                    if cfg.confident_only else softmax_mse(strong_logits[0], probabilities))
            return loss, {**logs, "consistency": float(loss.detach())}
        if cfg.method == "uda":
            target = sharpen(probabilities, cfg.temperature)
            loss = masked_kl(strong_logits[0], target, mask, num_classes=k, class_balanced=cfg.class_balanced)
            logs["consistency"] = float(loss.detach())
            return loss, logs
        if self.dense:
            targets = [(apply_cutmix(labels, box), apply_cutmix(mask, box)) for box in boxes]
        else:
            targets = [(labels, mask)] * len(strong_logits)
        terms = [pseudo_label_loss(z, y, m, num_classes=k, class_balanced=cfg.class_balanced)
                 for z, (y, m) in zip(strong_logits, targets)]
        loss = sum(terms) / len(terms)
        if cfg.method == "unimatch":
            frozen = frozen_running_statistics(student) if cfg.bn_statistics == "labeled" else contextlib.nullcontext()
            with frozen, perturbed_features(student, self.encoder_modules, cfg.feature_dropout, generator):
                fp_logits = student(weak)
            fp = pseudo_label_loss(fp_logits, labels, mask, num_classes=k, class_balanced=cfg.class_balanced)
            logs["feature_perturbation"] = float(fp.detach())
            loss = 0.5 * loss + 0.5 * fp
        logs["consistency"] = float(loss.detach())
        return loss, logs

    def cross_loss(self, probabilities: Sequence[torch.Tensor], strong_logits: Sequence[torch.Tensor],
                   boxes: Sequence[torch.Tensor], truth: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, dict[str, float]]:
        """``cps``'s ``L_u``: ``probabilities`` ``(p_a, p_b)`` of student and peer on the weak view,
        ``strong_logits`` ``(z_a, z_b)`` of both on the same strong view (its CutMix ``boxes[0]``
        already applied). The pseudo-label diagnostics are those the student learns from, the peer's."""
        cfg, k = self.cfg, self.num_classes
        targets = [pseudo_labels(p, self.thresholds) for p in probabilities]
        labels_b, mask_b = targets[1]
        self.stats.add(labels_b, mask_b, None if truth is None else truth.reshape(labels_b.shape))
        if self.dense:
            targets = [(apply_cutmix(y, boxes[0]), apply_cutmix(m, boxes[0])) for y, m in targets]
        term_a, term_b = cross_pseudo_supervision(strong_logits[0], strong_logits[1], targets[0], targets[1],
                                                  num_classes=k, class_balanced=cfg.class_balanced)
        return term_a + term_b, {"confident_fraction": float(mask_b.float().mean()), "consistency": float(term_a.detach())}
