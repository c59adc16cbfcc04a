"""Fine-tuning on few labels: segmentation (DiceCE on patches) and case-level classification.

Segmentation (:func:`finetune_segmentation`): the network from
:func:`medssl.eval.networks.build_finetune_model` is trained on random patches (a dataset yielding
``{"image": (C, *patch), "mask": (1, *patch)}``, such as :class:`medssl.data.labeled_patches.LabeledPatchDataset`
with its positive/negative centre ratio) with MONAI's ``DiceCELoss`` (soft Dice over the foreground
classes, computed over the whole batch, plus cross-entropy over all classes; softmax outputs), for
``steps`` optimiser steps. Whole volumes are then predicted by sliding window
(:mod:`medssl.eval.inference`).

Classification (:func:`finetune_classification`): encoder + linear head, cross-entropy on the case
label; the input is the whole volume resized to a fixed size (``classification_input: whole``, see
:func:`medssl.eval.cases.whole_volume_input`) or random patches of the case
(``classification_input: patch``; at test the patch logits of a sliding-window grid are averaged).

Both: frozen, partly frozen or full fine-tuning and layer-wise learning-rate decay
(:mod:`medssl.eval.param_groups`); the optimiser and warm-up/cosine schedule of the pretraining
engine (:func:`medssl.engine.optim.build_optimizer`, :func:`medssl.engine.schedules.build_scheduler`);
bf16 autocast on CPU or GPU (:class:`medssl.engine.precision.PrecisionPolicy`). Determinism: the
batch order comes from a ``torch.Generator`` seeded from ``(seed, epoch)``, dataset items depend only
on ``(seed, epoch, index)``, and the network is built after ``seed_everything``; the same config and
seed give identical weights on CPU.

Example::

    model = build_finetune_model("segmentation", encoder_cfg, "runs/simclr/encoder.pt", num_classes=2, seed=0)
    history = finetune_segmentation(model, patch_dataset, cfg.finetune, seed=0)
    table = evaluate_segmentation(model, test_cases, cfg.finetune)    # one row per case
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from medssl.config import FinetuneConfig
from medssl.data.loaders import make_dataloader
from medssl.errors import ConfigError, DataError, TrainingDivergedError
from medssl.eval.cases import LabeledCase, remap_mask
from medssl.eval.class_fit import ClassFitTracker, TrackedLoss
from medssl.eval.networks import FinetuneModel, network_state
from medssl.eval.param_groups import FrozenNormEval, freeze_parameters, layerwise_parameter_groups
from medssl.utils.devices import resolve_device
from medssl.utils.logging import progress_bar, show_loss
from medssl.utils.memory_format import use_channels_last, wants_channels_last
from medssl.utils.seeding import make_torch_generator

log = logging.getLogger(__name__)


@dataclass
class FinetuneHistory:
    """What one fine-tuning run did: the loss per step, timing, frozen tensors, best validation step."""

    losses: list[float] = field(default_factory=list)
    learning_rates: list[float] = field(default_factory=list)
    seconds: float = 0.0
    frozen: int = 0
    trainable: int = 0
    validation: list[tuple[int, float]] = field(default_factory=list)
    best_step: int | None = None
    forward_items: int = 0
    """Images the networks (student and teacher) were run on in training: the compute of an arm."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Method-specific records (semi-supervised: pseudo-label coverage and accuracy per class)."""

    @property
    def final_loss(self) -> float:
        return self.losses[-1] if self.losses else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {
            "steps": len(self.losses), "final_loss": self.final_loss, "first_loss": self.losses[0] if self.losses else None,
            "seconds": round(self.seconds, 3), "frozen_tensors": self.frozen, "trainable_tensors": self.trainable,
            "validation": self.validation, "best_step": self.best_step, "forward_items": self.forward_items,
            **self.extra,
        }


def _epoch_batches(n_items: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """A seeded permutation of ``range(n_items)`` cut into batches (the last one may be short)."""
    order = torch.randperm(n_items, generator=make_torch_generator(seed, "finetune-order", epoch)).tolist()
    return [order[i:i + batch_size] for i in range(0, n_items, batch_size)]


def iterate_batches(dataset: Dataset, batch_size: int, *, seed: int, num_workers: int = 0) -> Iterator[Any]:
    """Endless batches: epoch after epoch, ``set_epoch(epoch)`` on the dataset (when it has one), then
    a seeded order (:func:`medssl.data.loaders.make_dataloader`, which passes the epoch to the
    workers with each index). Items depend only on ``(seed, epoch, index)``, never on the worker."""
    n_items = len(dataset)  # type: ignore[arg-type]
    if n_items == 0:
        raise DataError("the fine-tuning dataset is empty (no labeled training case)")
    epoch = 0
    while True:
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        loader = make_dataloader(dataset, None, num_workers,
                                 batch_sampler=_epoch_batches(n_items, batch_size, seed, epoch),
                                 worker_threads=None, pin_memory=False, persistent_workers=False)
        yield from loader
        epoch += 1


def _split_batch(batch: Any, keys: Sequence[str]) -> list[torch.Tensor]:
    if isinstance(batch, dict):
        found = []
        for options in keys:
            key = next((k for k in options.split("|") if k in batch), None)
            if key is None:
                raise DataError(f"a fine-tuning batch lacks {options!r} (it has {sorted(batch)})")
            found.append(batch[key])
        return found
    return list(batch)


def _to_spatial_dims(x: torch.Tensor, spatial_dims: int) -> torch.Tensor:
    """``(B, C, X, Y, 1)`` -> ``(B, C, X, Y)`` for a 2D network."""
    if spatial_dims == 2 and x.ndim == 5:
        if x.shape[-1] != 1:
            raise DataError(f"a 2D network needs 2D patches (Z == 1), got shape {tuple(x.shape)}")
        x = x[..., 0]
    return x


def _prepare_training(model: FinetuneModel, cfg: FinetuneConfig, device: torch.device):
    from medssl.engine.precision import PrecisionPolicy

    network, norm_eval, optimizer, scheduler, n_frozen = _optimisation(model.network, model, cfg, device)
    precision = PrecisionPolicy(cfg.precision, device)
    trainable = sum(1 for p in network.parameters() if p.requires_grad)
    return network, norm_eval, optimizer, scheduler, precision, n_frozen, trainable


def _optimisation(network: nn.Module, model: FinetuneModel, cfg: FinetuneConfig, device: torch.device):
    """``network`` (``model``'s or one of the same architecture) on ``device``, frozen as ``cfg``
    says, with its optimiser and learning-rate schedule."""
    from medssl.engine.optim import build_optimizer
    from medssl.engine.schedules import build_scheduler

    network = network.to(device)
    if wants_channels_last(cfg.channels_last, device, model.spatial_dims):
        use_channels_last(network)
    frozen = freeze_parameters(network, model.stages, cfg.freeze, cfg.frozen_stages)
    norm_eval = FrozenNormEval(network, frozen)
    groups = layerwise_parameter_groups(network, model.stages, decay=cfg.layer_decay,
                                        weight_decay=cfg.optimizer.weight_decay)
    optimizer = build_optimizer(groups, cfg.optimizer)
    scheduler = build_scheduler(optimizer, cfg.steps, cfg.optimizer.warmup_steps, cfg.optimizer.min_lr_ratio,
                                cfg.optimizer.schedule)
    return network, norm_eval, optimizer, scheduler, len(frozen)


def build_peer(model: FinetuneModel, cfg: FinetuneConfig, seed: int) -> FinetuneModel:
    """Cross pseudo supervision's second network: built as ``model`` was (same task, encoder,
    initialisation and ``network_args``) but from another seed, so its random weights differ and
    its pretrained ones, if any, are the same. The global random generators continue after it as
    if it had not been built.

    Example::

        peer = build_peer(model, cfg.finetune, seed=0)   # peer.network: the same shapes, other weights
    """
    from medssl.eval.networks import build_finetune_model
    from medssl.utils.seeding import derive_seed, preserved_global_random_state

    with preserved_global_random_state():
        return build_finetune_model(model.task, model.encoder_config, model.init, num_classes=cfg.num_classes,
                                    seed=derive_seed(seed, "cps-peer") % (2**31), network_args=cfg.network_args,
                                    transfer_decoder=cfg.transfer_decoder)


def _train_loop(
    model: FinetuneModel,
    batches: Iterator[Any],
    cfg: FinetuneConfig,
    loss_of_batch: Callable[[nn.Module, Any], torch.Tensor],
    *,
    device: torch.device,
    validate: Callable[[], float] | None,
    desc: str,
    after_step: Callable[[nn.Module, int], None] | None = None,
) -> FinetuneHistory:
    network, norm_eval, optimizer, scheduler, precision, n_frozen, n_trainable = _prepare_training(model, cfg, device)
    history = FinetuneHistory(frozen=n_frozen, trainable=n_trainable)
    best_score, best_state = -math.inf, None
    start = time.perf_counter()
    bar = progress_bar(range(cfg.steps), desc=desc, leave=False)
    for step in bar:
        network.train()
        norm_eval.apply()
        batch = next(batches)
        optimizer.zero_grad(set_to_none=True)
        with precision.autocast():
            loss = loss_of_batch(network, batch)
        if not torch.isfinite(loss):
            raise TrainingDivergedError(
                f"fine-tuning loss became {loss.item()} at step {step} (init {model.init}); lower finetune.optimizer.lr"
            )
        precision.backward(loss)
        precision.clip_and_step(optimizer, network.parameters(), cfg.max_grad_norm)
        history.learning_rates.append(max(float(g["lr"]) for g in optimizer.param_groups))
        scheduler.step()
        if after_step is not None:
            after_step(network, step)
        history.losses.append(float(loss.detach()))
        show_loss(bar, history.losses[-1])
        if validate is not None and cfg.val_every and ((step + 1) % cfg.val_every == 0 or step + 1 == cfg.steps):
            score = float(validate())
            history.validation.append((step + 1, score))
            if score > best_score:
                best_score, best_state, history.best_step = score, network_state(model), step + 1
    if best_state is not None:
        network.load_state_dict(best_state)
        log.info("init %s: kept the weights of step %d (validation score %.4f)", model.init, history.best_step, best_score)
    network.eval()
    history.seconds = time.perf_counter() - start
    log.info("init %s: %s fine-tuning, %d steps in %.1f s, loss %.4f -> %.4f", model.init, model.task, cfg.steps,
             history.seconds, history.losses[0], history.final_loss)
    return history


# ---- segmentation ------------------------------------------------------------------------------


def segmentation_loss() -> nn.Module:
    """MONAI ``DiceCELoss``: softmax, one-hot targets, Dice over foreground classes over the batch."""
    from monai.losses import DiceCELoss

    return DiceCELoss(to_onehot_y=True, softmax=True, include_background=False, batch=True)


def finetune_segmentation(
    model: FinetuneModel,
    patches: Dataset,
    cfg: FinetuneConfig,
    *,
    seed: int,
    device: torch.device | str | None = None,
    validation: Sequence[LabeledCase] | None = None,
    num_workers: int = 0,
    unlabeled: Dataset | None = None,
    strong: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    on_step: Callable[[nn.Module, int], None] | None = None,
) -> FinetuneHistory:
    """Train ``model`` on ``patches`` (items ``{"image", "mask"}``) for ``cfg.steps`` steps.

    Masks are mapped to classes by ``cfg.mask_labels``. With ``validation`` cases and
    ``cfg.val_every``, the weights with the best mean validation Dice are kept. With
    ``cfg.semi.method`` other than ``none``, ``unlabeled`` patches (items ``{"image"}``, optionally
    ``"truth"`` for diagnostics) and the strong view's intensity augmentation ``strong`` add the
    consistency loss of :mod:`medssl.eval.semi_supervised`; the labeled batches are the same as
    without it (same seed, same order), so the two arms are paired. The history's ``extra`` holds
    each class's soft Dice on the labeled training batches (:mod:`medssl.eval.class_fit`; with
    ``cps``, both networks' batches). ``on_step(network, step)`` is called after every optimiser
    step (self-training keeps its teacher's checkpoints with it).
    """
    if cfg.semi.method == "self_training":
        raise ConfigError("finetune.semi.method=self_training trains a teacher and then a student: run it with "
                          "medssl.eval.self_training.self_train_segmentation (train_and_evaluate does)")
    if model.task != "segmentation":
        raise ValueError(f"finetune_segmentation needs a segmentation model, got {model.task}")
    device = torch.device(device) if device is not None else resolve_device(cfg.device, "finetune.device")
    fit = ClassFitTracker(cfg.num_classes)
    criterion = TrackedLoss(segmentation_loss(), fit)

    def labeled_inputs(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = _split_batch(batch, ["image", "mask|label"])
        image = _to_spatial_dims(image.float(), model.spatial_dims).to(device)
        target = _to_spatial_dims(remap_mask(mask, cfg.mask_labels), model.spatial_dims).to(device)
        if int(target.max()) >= cfg.num_classes:
            raise DataError(f"a mask holds class {int(target.max())} but finetune.num_classes is {cfg.num_classes}; "
                            "set finetune.mask_labels or num_classes")
        return image, target

    history_extra: dict[str, Any] = {}
    forward_items = [0]

    def loss_of_batch(network: nn.Module, batch: Any) -> torch.Tensor:
        image, target = labeled_inputs(batch)
        forward_items[0] += image.shape[0]
        return criterion(network(image).float(), target)

    after_step = None
    batches = iterate_batches(patches, cfg.batch_size, seed=seed, num_workers=num_workers)
    if cfg.semi.method != "none":
        def truth_of(item: Any) -> torch.Tensor | None:
            truth = item.get("truth")
            if truth is None:
                return None
            known = truth >= 0  # -1: a volume without annotation
            truth = torch.where(known, remap_mask(truth.clamp_min(0), cfg.mask_labels), torch.full_like(truth, -1))
            return _to_spatial_dims(truth, model.spatial_dims)

        loss_of_batch, after_step, batches = _semi_supervised_step(
            model, cfg, criterion, labeled_inputs, truth_of, batches, unlabeled, strong, seed=seed, device=device,
            num_workers=num_workers, forward_items=forward_items, extra=history_extra)

    validate = None
    if validation:
        from medssl.eval.evaluate import evaluate_segmentation

        def validate() -> float:
            return float(evaluate_segmentation(model, validation, cfg, metrics=["dice"], device=device)["dice"].mean())

    if on_step is not None:
        after_step = _chained(after_step, on_step)
    history = _train_counted(model, batches, cfg, loss_of_batch, device=device, validate=validate,
                             desc="finetune seg", after_step=after_step, forward_items=forward_items,
                             extra=history_extra)
    history.extra.update(fit.summary(steps=cfg.steps))
    return history


def _chained(first: Callable[[nn.Module, int], None] | None, then: Callable[[nn.Module, int], None]
             ) -> Callable[[nn.Module, int], None]:
    """An after-step hook that calls ``first`` (where there is one), then ``then``."""
    def both(network: nn.Module, step: int) -> None:
        if first is not None:
            first(network, step)
        then(network, step)

    return both


def _train_counted(model: FinetuneModel, batches: Iterator[Any], cfg: FinetuneConfig,
                   loss_of_batch: Callable[[nn.Module, Any], torch.Tensor], *, device: torch.device,
                   validate: Callable[[], float] | None, desc: str, after_step: Callable[[nn.Module, int], None] | None,
                   forward_items: list[int], extra: dict[str, Any]) -> FinetuneHistory:
    """:func:`_train_loop`, then the images forwarded and the semi-supervised records into the history."""
    history = _train_loop(model, batches, cfg, loss_of_batch, device=device, validate=validate,
                          desc=desc if cfg.semi.method == "none" else f"{desc} + {cfg.semi.method}",
                          after_step=after_step)
    history.forward_items = forward_items[0]
    history.extra.update(extra)
    return history


def _semi_supervised_step(model: FinetuneModel, cfg: FinetuneConfig, criterion: nn.Module,
                          labeled_inputs: Callable[[Any], tuple[torch.Tensor, torch.Tensor]],
                          truth_of: Callable[[Any], torch.Tensor | None],
                          labeled_batches: Iterator[Any], unlabeled: Dataset | None, strong: Any, *, seed: int,
                          device: torch.device, num_workers: int, forward_items: list[int],
                          extra: dict[str, Any]):
    """The loss, after-step hook and batch stream of consistency training (``finetune.semi``), for
    segmentation (dense, per-voxel) and classification (per-case) alike.

    Before ``semi.start_step`` (and wherever the ramped weight is 0) a step is exactly a labels-only
    step. Afterwards the student runs on the labeled images, then on the strong views with the
    batch-norm running statistics frozen (``semi.bn_statistics: labeled``; ``mixed``: one forward
    over both), the teacher on the weak views without gradient (in evaluation mode with
    ``labeled``).
    ``truth_of(item)``: the unlabeled items' own annotation (for the pseudo-label diagnostics only).
    """
    from medssl.eval.semi_supervised import (
        ConsistencyObjective,
        build_strong_view,
        frozen_running_statistics,
        predicting_as_at_test_time,
    )
    from medssl.models.registry import encoder_class

    semi = cfg.semi
    if semi.method == "cps" and cfg.precision == "fp16":
        raise ConfigError("finetune.semi.method=cps trains a second network with its own optimiser, which the fp16 "
                          "gradient scaler does not cover: use finetune.precision bf16 or fp32")
    if unlabeled is None or len(unlabeled) == 0:  # type: ignore[arg-type]
        raise DataError(f"finetune.semi.method={semi.method} needs unlabeled volumes, and there are none "
                        "(the training pool outside the labeled cases, or study.unlabeled)")
    modules = tuple(getattr(encoder_class(str(model.encoder_config["name"])), "network_modules", ()) or ("encoder",))
    if model.task == "classification":
        modules = ("encoder",)
    objective = ConsistencyObjective(semi, cfg.num_classes, strong or build_strong_view("ct"), encoder_modules=modules,
                                     dense=model.task == "segmentation")
    unlabeled_batches = iterate_batches(unlabeled, semi.unlabeled_batch_size or cfg.batch_size,
                                        seed=seed + 7919, num_workers=num_workers)
    generator = make_torch_generator(seed, "semi-supervised")
    state: dict[str, Any] = {"step": 0, "teacher": None}
    weights: list[float] = []
    peer = _Peer(build_peer(model, cfg, seed), cfg, device) if semi.method == "cps" else None

    def loss_of_batch(network: nn.Module, batch: Any) -> torch.Tensor:
        step = state["step"]
        if state["teacher"] is None:
            state["teacher"] = objective.make_teacher(network)
        weight = objective.weight(step)
        weights.append(weight)
        image, target = labeled_inputs(batch)
        if peer is not None:
            return _cps_loss(network, peer, objective, criterion, image, target, weight, unlabeled_batches,
                             truth_of, model.spatial_dims, device, generator, forward_items)
        if weight <= 0.0:
            forward_items[0] += image.shape[0]
            return criterion(network(image).float(), target)
        item = next(unlabeled_batches)
        weak = _to_spatial_dims(item["image"].float(), model.spatial_dims).to(device)
        truth = truth_of(item)
        teacher = state["teacher"] if state["teacher"] is not None else network
        teacher_network = teacher.network if teacher is not network else network
        with (predicting_as_at_test_time(teacher_network) if semi.bn_statistics == "labeled"
              else contextlib.nullcontext()):
            probabilities = objective.teacher_probabilities(teacher, weak)
        views, boxes = objective.strong_inputs(weak, generator)
        n = image.shape[0]
        if semi.bn_statistics == "mixed":
            logits = network(torch.cat([image, *views])).float()
            supervised, strong_logits = criterion(logits[:n], target), list(torch.split(logits[n:], weak.shape[0]))
        else:
            supervised = criterion(network(image).float(), target)
            with frozen_running_statistics(network):
                strong_logits = list(torch.split(network(torch.cat(views)).float(), weak.shape[0]))
        unsupervised, _logs = objective.loss(network, probabilities, strong_logits, boxes, weak, generator, truth)
        per_teacher = 2 if semi.teacher_flips else 1
        forward_items[0] += n + weak.shape[0] * (len(views) + per_teacher + (semi.method == "unimatch"))
        return supervised + weight * unsupervised

    def after_step(network: nn.Module, step: int) -> None:
        if state["teacher"] is not None:
            state["teacher"].update(network, step)
        if peer is not None:
            peer.step()
        state["step"] = step + 1
        extra.update(objective.stats.as_dict(), semi_method=semi.method,
                     semi_steps=int(sum(1 for w in weights if w > 0)))

    return loss_of_batch, after_step, labeled_batches


class _Peer:
    """CPS's second network with its own optimiser and schedule, stepped after the student's."""

    def __init__(self, model: FinetuneModel, cfg: FinetuneConfig, device: torch.device):
        self.network, self.norm_eval, self.optimizer, self.scheduler, _ = _optimisation(model.network, model, cfg,
                                                                                      device)
        self.max_grad_norm = cfg.max_grad_norm

    def train(self) -> nn.Module:
        """The peer in training mode with cleared gradients, ready for this step's forward passes."""
        self.network.train()
        self.norm_eval.apply()
        self.optimizer.zero_grad(set_to_none=True)
        return self.network

    def step(self) -> None:
        if self.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_([p for p in self.network.parameters() if p.grad is not None],
                                           self.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()


def _cps_loss(network: nn.Module, peer: _Peer, objective: Any, criterion: nn.Module, image: torch.Tensor,
              target: torch.Tensor, weight: float, unlabeled_batches: Iterator[Any],
              truth_of: Callable[[Any], torch.Tensor | None], spatial_dims: int, device: torch.device,
              generator: torch.Generator, forward_items: list[int]) -> torch.Tensor:
    """One step of cross pseudo supervision: both networks' supervised losses, then (once the
    ramped ``weight`` is above 0) each network's predictions on the strong view trained on the
    other's pseudo-labels of the weak view. With ``bn_statistics: labeled`` the pseudo-labels are
    predicted as at test time and the strong views never reach the running statistics; with
    ``mixed`` the pseudo-labels come from a training-mode forward over the weak batch and each
    network runs once over its labeled and strong images together."""
    from medssl.eval.semi_supervised import frozen_running_statistics, predicting_as_at_test_time

    peer_network = peer.train()
    networks = (network, peer_network)
    n = image.shape[0]
    if weight <= 0.0:
        forward_items[0] += 2 * n
        return sum(criterion(f(image).float(), target) for f in networks)
    item = next(unlabeled_batches)
    weak = _to_spatial_dims(item["image"].float(), spatial_dims).to(device)
    views, boxes = objective.strong_inputs(weak, generator)
    mixed = objective.cfg.bn_statistics == "mixed"
    supervised, strong_logits, probabilities = [], [], []
    for f in networks:
        if mixed:
            with torch.no_grad():
                probabilities.append(torch.softmax(f(weak).float(), dim=1))
            logits = f(torch.cat([image, views[0]])).float()
            supervised.append(criterion(logits[:n], target))
            strong_logits.append(logits[n:])
        else:
            with predicting_as_at_test_time(f), torch.no_grad():
                probabilities.append(torch.softmax(f(weak).float(), dim=1))
            supervised.append(criterion(f(image).float(), target))
            with frozen_running_statistics(f):
                strong_logits.append(f(views[0]).float())
    unsupervised, _logs = objective.cross_loss(probabilities, strong_logits, boxes, truth_of(item))
    forward_items[0] += 2 * (n + 2 * weak.shape[0])
    return sum(supervised) + weight * unsupervised


# ---- classification ----------------------------------------------------------------------------


def finetune_classification(
    model: FinetuneModel,
    dataset: Dataset,
    cfg: FinetuneConfig,
    *,
    seed: int,
    device: torch.device | str | None = None,
    validation: Sequence[LabeledCase] | None = None,
    num_workers: int = 0,
    unlabeled: Dataset | None = None,
    strong: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
) -> FinetuneHistory:
    """Train encoder + head with cross-entropy on items ``{"image": (C, *S), "label": int}``.

    With ``cfg.semi.method`` other than ``none``, ``unlabeled`` items ``{"image"}`` (optionally
    ``"truth"``) add the per-case consistency loss (pseudo-labels of whole cases; no CutMix)."""
    if model.task != "classification":
        raise ValueError(f"finetune_classification needs a classification model, got {model.task}")
    device = torch.device(device) if device is not None else resolve_device(cfg.device, "finetune.device")
    criterion = nn.CrossEntropyLoss()

    def labeled_inputs(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = _split_batch(batch, ["image", "label|target"])
        image = _to_spatial_dims(image.float(), model.spatial_dims).to(device)
        label = torch.as_tensor(label).long().reshape(-1).to(device)
        if int(label.max()) >= cfg.num_classes or int(label.min()) < 0:
            raise DataError(f"a case label lies outside [0, {cfg.num_classes - 1}] (finetune.num_classes)")
        return image, label

    forward_items = [0]
    history_extra: dict[str, Any] = {}

    def loss_of_batch(network: nn.Module, batch: Any) -> torch.Tensor:
        image, label = labeled_inputs(batch)
        forward_items[0] += image.shape[0]
        return criterion(network(image).float(), label)

    validate = None
    if validation:
        from medssl.eval.evaluate import predict_classification
        from medssl.eval.metrics import classification_metrics_from_table

        def validate() -> float:
            table = predict_classification(model, validation, cfg, device=device)
            scores = classification_metrics_from_table(table)
            return scores["auc"] if np.isfinite(scores["auc"]) else scores["balanced_accuracy"]

    batches = iterate_batches(dataset, cfg.batch_size, seed=seed, num_workers=num_workers)
    after_step = None
    if cfg.semi.method != "none":
        def truth_of(item: Any) -> torch.Tensor | None:
            truth = item.get("truth")
            return None if truth is None else torch.as_tensor(truth).long().reshape(-1)

        loss_of_batch, after_step, batches = _semi_supervised_step(
            model, cfg, criterion, labeled_inputs, truth_of, batches, unlabeled, strong, seed=seed, device=device,
            num_workers=num_workers, forward_items=forward_items, extra=history_extra)
    return _train_counted(model, batches, cfg, loss_of_batch, device=device, validate=validate, desc="finetune cls",
                          after_step=after_step, forward_items=forward_items, extra=history_extra)
