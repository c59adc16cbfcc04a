"""The pretraining loop: one SSL method, one dataset, exact resumption, torchrun data parallelism.

One optimiser step consumes ``accumulate_grad_batches`` micro-batches on each of the ``R``
processes; a micro-batch holds ``batch_size / (R * accumulate_grad_batches)`` items, so the global
batch of a step is ``pretrain.batch_size`` whatever the hardware. Each micro-batch goes through:

    batch -> device -> [dataset.batch_augment (device-side intensity augmentation)]
          -> autocast forward of the method (via DDP) -> backward of loss / accumulation
          (DDP synchronises gradients on the last micro-batch only, ``no_sync`` before)
    then: [unscale + clip gradient norm] -> optimiser step -> scheduler step
          -> method.on_train_step_end(step, max_steps) (momentum teachers, DINO schedules)

Every ``log_every`` steps (and at checkpoints and the end) the processes agree on the loss and on
whether it stayed finite; a NaN/inf loss raises :class:`medssl.errors.TrainingDivergedError`
naming the first bad step and the last good checkpoint, which is never overwritten afterwards
(the check runs before every save). Checkpoints (:mod:`medssl.engine.checkpoint`) are written by
rank 0 every ``checkpoint_every`` steps and at the end.

Exactness: an item's randomness depends only on ``(seed, epoch, index)`` (the data pipeline's
contract); the sampler's order only on ``(seed, epoch)``; device-side augmentation draws from a
generator derived from ``(seed, step, micro-batch, rank)``; the DataLoader
(:func:`medssl.data.loaders.make_dataloader`) tags each index with the sampler's epoch, so the dataset
copy in a worker process calls its ``set_epoch`` itself, and gets its own generator (so it does not
consume the global one); the global generators are checkpointed. A run stopped
after a checkpoint and resumed therefore repeats the uninterrupted run bit for bit on CPU.

Example (a toy method; ``run_pretraining`` builds the real ones from the config):
    >>> import tempfile, torch
    >>> from medssl.config import PretrainConfig
    >>> class Toy(torch.nn.Module):
    ...     batch_kind = "views"
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.encoder = torch.nn.Linear(4, 2)
    ...     def forward(self, batch):
    ...         return ((self.encoder(batch["views"][0]) - 1) ** 2).mean(), {}
    >>> class Data(torch.utils.data.Dataset):
    ...     def __len__(self): return 8
    ...     def __getitem__(self, i): return {"views": [torch.full((4,), float(i))]}
    >>> cfg = PretrainConfig(steps=3, batch_size=4, log_every=1, checkpoint_every=3, tensorboard=False)
    >>> outcome = Trainer(Toy(), Data(), cfg, tempfile.mkdtemp(), seed=0).fit()
    >>> outcome.steps
    3
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.utils.data import Dataset

from medssl.config import PretrainConfig
from medssl.data.loaders import make_dataloader
from medssl.engine import checkpoint as ckpt
from medssl.engine.distributed import (
    DistributedContext,
    all_gather_object,
    init_distributed,
    synchronise_batchnorm,
    unwrap,
    wrap_ddp,
)
from medssl.engine.metrics_log import MetricsLog
from medssl.engine.monitors import collapse_metrics
from medssl.engine.optim import build_optimizer
from medssl.engine.precision import PrecisionPolicy
from medssl.engine.sampler import EpochSampler
from medssl.engine.schedules import build_scheduler
from medssl.errors import CheckpointError, ConfigError, TrainingDivergedError
from medssl.utils.logging import progress_bar, show_loss
from medssl.utils.memory_format import use_channels_last, wants_channels_last
from medssl.utils.seeding import derive_seed, make_torch_generator

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.pt"


@dataclass
class TrainOutcome:
    """What :meth:`Trainer.fit` returns.

    ``final_loss`` is the mean loss over the last logging window (all processes);
    ``samples_per_second`` the global throughput over the steps run in this call.
    """

    final_loss: float
    steps: int
    checkpoint_path: Path
    samples_per_second: float
    resumed_from_step: int


def move_to_device(batch: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """``batch`` (tensors nested in dicts, lists, tuples) on ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, dict):
        return {k: move_to_device(v, device, non_blocking) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(v, device, non_blocking) for v in batch)
    return batch


def batch_size_of(batch: Any) -> int:
    """The leading dimension of the first tensor found in ``batch``."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    values = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, (list, tuple)) else ()
    for value in values:
        size = batch_size_of(value)
        if size:
            return size
    return 0


def micro_batch_size(cfg: PretrainConfig, world_size: int) -> int:
    """Items per micro-batch on one process; the global batch must split evenly."""
    parts = world_size * cfg.accumulate_grad_batches
    if cfg.batch_size % parts:
        raise ConfigError(
            f"pretrain.batch_size={cfg.batch_size} does not split over {world_size} process(es) x "
            f"{cfg.accumulate_grad_batches} accumulation step(s); choose a multiple of {parts}"
        )
    return cfg.batch_size // parts


def _last_logged_loss(run_dir: Path) -> float:
    from medssl.engine.metrics_log import METRICS_FILE

    path = run_dir / METRICS_FILE
    try:
        import pandas as pd

        losses = pd.read_csv(path)["loss"].dropna()
        return float(losses.iloc[-1]) if len(losses) else float("nan")
    except (OSError, KeyError, ValueError):
        return float("nan")


def _scalar(value: Any) -> float | None:
    if isinstance(value, torch.Tensor):
        return float(value.detach().float()) if value.numel() == 1 else None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


class Trainer:
    """Trains ``method`` on ``dataset`` following ``cfg`` (see the module docstring).

    Args:
        method: an SSL method (``forward(batch) -> (loss, logs)``, optional
            ``on_train_step_end(step, max_steps)`` and ``parameter_groups(weight_decay)``).
        dataset: map-style dataset of items the method takes (collated by ``collate_fn``); its
            optional ``set_epoch(epoch)`` is called before the items of each epoch and its optional
            ``batch_augment(batch, generator)`` on each batch once on the device (when
            ``batch_augment`` is not given explicitly).
        cfg: the pretraining section of the config.
        run_dir: where ``metrics.csv``, ``tensorboard/`` and ``checkpoints/last.pt`` go.
        seed: the run seed.
        config_hash: identifies the computation; a resume from a checkpoint with another hash is
            refused. Defaults to a hash of ``cfg`` and ``seed``.
        num_workers: DataLoader worker processes.
        ctx: the distributed context (default: :func:`init_distributed` for ``cfg.device``).
        data_fingerprint: stored in checkpoints; a resume on different data logs a warning.
        collate_fn: DataLoader collation (default torch's).
        worker_init_fn: DataLoader worker initialiser (e.g. the data pipeline's thread limiter).
        on_checkpoint: called with the step after each checkpoint is saved, on every process (the
            engine exports intermediate encoders with it, ``pretrain.export_every``).
    """

    def __init__(
        self,
        method: nn.Module,
        dataset: Dataset,
        cfg: PretrainConfig,
        run_dir: str | os.PathLike,
        *,
        seed: int,
        config_hash: str | None = None,
        num_workers: int = 0,
        ctx: DistributedContext | None = None,
        data_fingerprint: str | None = None,
        batch_augment: Callable[[Any, torch.Generator], Any] | None = None,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        worker_init_fn: Callable[[int], None] | None = None,
        config_text: str | None = None,
        on_checkpoint: Callable[[int], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.on_checkpoint = on_checkpoint
        self.run_dir = Path(run_dir)
        self.seed = int(seed)
        self.ctx = ctx or init_distributed(cfg.device)
        self.device = self.ctx.device
        self.config_hash = config_hash or ckpt.config_hash({"seed": self.seed, "pretrain": cfg.model_dump(mode="json")})
        self.config_text = config_text
        self.data_fingerprint = data_fingerprint
        self.micro_batch = micro_batch_size(cfg, self.ctx.world_size)
        self.accumulation = cfg.accumulate_grad_batches

        self.method = synchronise_batchnorm(method, cfg.sync_batchnorm, self.ctx).to(self.device)
        spatial_dims = int(getattr(getattr(self.method, "encoder", None), "spatial_dims", 0) or 0)
        if wants_channels_last(cfg.channels_last, self.device, spatial_dims):
            use_channels_last(self.method)
        self.optimizer = build_optimizer(self.method, cfg.optimizer, batch_size=cfg.batch_size)
        self.scheduler = build_scheduler(
            self.optimizer, cfg.steps, cfg.optimizer.warmup_steps, cfg.optimizer.min_lr_ratio, cfg.optimizer.schedule
        )
        self.precision = PrecisionPolicy(cfg.precision, self.device)
        self.model = wrap_ddp(self.method, self.ctx, cfg.find_unused_parameters)

        self.dataset = dataset
        if batch_augment is None and callable(getattr(dataset, "batch_augment", None)):
            batch_augment = dataset.batch_augment  # type: ignore[attr-defined]
        self.batch_augment = batch_augment
        self.sampler = EpochSampler(
            len(dataset), self.micro_batch, self.seed, self.ctx.world_size, self.ctx.rank,  # type: ignore[arg-type]
            accumulation=self.accumulation,
        )
        loader_generator = torch.Generator()
        loader_generator.manual_seed(derive_seed(self.seed, "dataloader", self.ctx.rank))
        pin = self.device.type == "cuda"
        self.loader = make_dataloader(
            dataset,
            self.micro_batch,
            num_workers,
            self.sampler,
            drop_last=True,
            worker_threads=None,
            worker_init=worker_init_fn,
            pin_memory=pin,
            collate_fn=collate_fn,
            generator=loader_generator,
            epoch_of=lambda: self.sampler.epoch,
        )
        self._non_blocking = pin
        self.checkpoint_path = self.run_dir / CHECKPOINT_DIR / LAST_CHECKPOINT
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self._last_good_step: int | None = None
        self.last_lr = float("nan")

    # ----------------------------------------------------------------- checkpoints
    def _checkpoint_state(self) -> dict[str, Any] | None:
        """Collective (every rank must call it); the state on rank 0, None elsewhere."""
        rng_states = all_gather_object(ckpt.capture_rng_state(), self.ctx)
        if not self.ctx.is_main:
            return None
        return {
            "model": unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "precision": self.precision.state_dict(),
            "rng": rng_states,
            "position": {"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch},
            "config_hash": self.config_hash,
            "config": self.config_text,
            "data_fingerprint": self.data_fingerprint,
            "world_size": self.ctx.world_size,
            "micro_batch": self.micro_batch,
        }

    def save_checkpoint(self) -> None:
        state = self._checkpoint_state()
        if state is not None:
            ckpt.save_checkpoint(self.checkpoint_path, state)
            logger.info("checkpoint at step %d: %s", self.step, self.checkpoint_path)
        self._last_good_step = self.step

    def load_checkpoint(self) -> None:
        """Restore everything from ``run_dir/checkpoints/last.pt`` (raises CheckpointError)."""
        state = ckpt.load_checkpoint(self.checkpoint_path, expected_config_hash=self.config_hash)
        try:
            unwrap(self.model).load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.precision.load_state_dict(state["precision"])
            position = state["position"]
            self.step, self.epoch, self.batch_in_epoch = (
                int(position["step"]), int(position["epoch"]), int(position["batch_in_epoch"])
            )
            rng_states = state["rng"]
        except (KeyError, RuntimeError, ValueError) as exc:
            raise CheckpointError(
                f"cannot resume from {self.checkpoint_path}: it does not match this model/optimiser ({exc})"
            ) from exc
        if self.batch_in_epoch > self.sampler.batches_per_epoch:
            raise CheckpointError(
                f"cannot resume from {self.checkpoint_path}: its data position (batch {self.batch_in_epoch}) "
                f"is beyond an epoch of {self.sampler.batches_per_epoch} batches; the dataset changed"
            )
        if len(rng_states) == self.ctx.world_size:
            ckpt.restore_rng_state(rng_states[self.ctx.rank])
        else:
            logger.warning(
                "checkpoint written by %d process(es), resumed on %d: random states of rank 0 used everywhere",
                len(rng_states), self.ctx.world_size,
            )
            ckpt.restore_rng_state(rng_states[0])
        if self.data_fingerprint and state.get("data_fingerprint") not in (None, self.data_fingerprint):
            logger.warning(
                "resuming on data whose fingerprint differs from the checkpoint's (%s vs %s)",
                state.get("data_fingerprint"), self.data_fingerprint,
            )
        self._last_good_step = self.step
        logger.info("resumed from %s at step %d (epoch %d, batch %d)", self.checkpoint_path, self.step,
                    self.epoch, self.batch_in_epoch)

    # ----------------------------------------------------------------- data
    def _micro_batches(self) -> Iterator[Any]:
        """Micro-batches from the current data position onwards, across epochs; advances the
        position as each batch is handed out."""
        while True:
            if self.batch_in_epoch >= self.sampler.batches_per_epoch:
                self.epoch, self.batch_in_epoch = self.epoch + 1, 0
            self.sampler.set_position(self.epoch, self.batch_in_epoch)
            for batch in self.loader:
                self.batch_in_epoch += 1
                yield batch
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0

    # ----------------------------------------------------------------- one step
    def _train_step(self, batches: Iterator[Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        """One optimiser step; returns the step's loss (device tensor) and the last micro-batch's logs."""
        step_loss = torch.zeros((), device=self.device)
        logs: dict[str, Any] = {}
        for micro in range(self.accumulation):
            batch = move_to_device(next(batches), self.device, self._non_blocking)
            if self.batch_augment is not None:
                generator = make_torch_generator(
                    self.seed, "batch-augment", self.step, micro, self.ctx.rank,
                    device=str(self.device) if self.device.type == "cuda" else None,
                )
                batch = self.batch_augment(batch, generator)
            last = micro == self.accumulation - 1
            sync = contextlib.nullcontext() if (last or not self.ctx.is_distributed) else self.model.no_sync()
            with sync:
                with self.precision.autocast():
                    loss, logs = self.model(batch)
                loss = loss.float()
                self.precision.backward(loss / self.accumulation)
            step_loss += loss.detach() / self.accumulation
        self.last_lr = float(self.optimizer.param_groups[0]["lr"])  # the rate this step used
        self.precision.clip_and_step(self.optimizer, self.method.parameters(), self.cfg.max_grad_norm)
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step += 1
        hook = getattr(self.method, "on_train_step_end", None)
        if callable(hook):
            hook(self.step, self.cfg.steps)
        return step_loss, logs

    # ----------------------------------------------------------------- the loop
    def fit(self, resume: bool = False, until_step: int | None = None) -> TrainOutcome:
        """Train until ``cfg.steps`` optimiser steps are done (from the checkpoint with ``resume``).

        ``until_step`` stops earlier, after that step (a checkpoint is written only if one is due
        then); a later ``fit()`` on the same trainer continues in memory (staged runs, benchmarks).
        """
        if resume:
            self.load_checkpoint()
        start_step = self.step
        target = self.cfg.steps if until_step is None else min(int(until_step), self.cfg.steps)
        self.method.train()
        continuing = resume or start_step > 0
        log = MetricsLog.open(self.run_dir, self.cfg.tensorboard, resume_step=start_step if continuing else None) \
            if self.ctx.is_main else None
        bar = progress_bar(total=self.cfg.steps, initial=start_step, desc="pretrain", unit="step",
                           enabled=self.ctx.is_main, dynamic_ncols=True)
        window_loss = torch.zeros((), device=self.device)
        window_steps = 0
        first_bad = torch.full((), -1, dtype=torch.long, device=self.device)
        final_loss = float("nan")
        started = window_started = time.perf_counter()
        batches = self._micro_batches()
        try:
            while self.step < target:
                step_loss, logs = self._train_step(batches)
                finite = torch.isfinite(step_loss)
                first_bad = torch.where((first_bad < 0) & ~finite, torch.full_like(first_bad, self.step), first_bad)
                window_loss += torch.where(finite, step_loss, torch.zeros_like(step_loss))
                window_steps += 1
                bar.update(1)
                at_log = self.step % self.cfg.log_every == 0
                at_checkpoint = self.step % self.cfg.checkpoint_every == 0 or self.step == self.cfg.steps
                if not (at_log or at_checkpoint):
                    continue
                mean_loss = self._agree_on_loss(window_loss, window_steps, first_bad)
                now = time.perf_counter()
                row = {
                    "step": self.step,
                    "epoch": self.epoch,
                    "loss": mean_loss,
                    "lr": self.last_lr,
                    "samples_per_s": window_steps * self.cfg.batch_size / max(now - window_started, 1e-9),
                }
                for key, value in self._method_logs(logs).items():
                    if key != "loss":  # the engine's loss (all processes, whole window) is the one logged
                        row[key if key not in row else f"method_{key}"] = value
                final_loss = mean_loss
                if log is not None:
                    log.write(row)
                show_loss(bar, mean_loss)
                window_loss.zero_()
                window_steps = 0
                window_started = time.perf_counter()
                if at_checkpoint:
                    self.save_checkpoint()
                    if self.on_checkpoint is not None:
                        self.on_checkpoint(self.step)
            if window_steps:  # stopped early (until_step) between log steps: still refuse a NaN
                self._agree_on_loss(window_loss, window_steps, first_bad)
        finally:
            bar.close()
            if log is not None:
                log.close()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # queued kernels belong to the timed steps
        elapsed = time.perf_counter() - started
        if math.isnan(final_loss) and self.ctx.is_main:
            final_loss = _last_logged_loss(self.run_dir)  # resumed a run that had already finished
        done = self.step - start_step
        return TrainOutcome(
            final_loss=final_loss,
            steps=self.step,
            checkpoint_path=self.checkpoint_path,
            samples_per_second=done * self.cfg.batch_size / max(elapsed, 1e-9),
            resumed_from_step=start_step,
        )

    def _agree_on_loss(self, window_loss: torch.Tensor, window_steps: int, first_bad: torch.Tensor) -> float:
        """All processes: the mean loss of the window; raise if any process saw a non-finite loss.

        A collective (every process calls it at the same steps), and the only host synchronisation
        of the loop besides checkpoints.
        """
        never = self.cfg.steps + 1
        earliest = torch.where(first_bad < 0, torch.full_like(first_bad, never), first_bad).view(1)
        total = window_loss.double().view(1).clone()
        if self.ctx.is_distributed:
            import torch.distributed as dist

            dist.all_reduce(earliest, op=dist.ReduceOp.MIN)
            dist.all_reduce(total, op=dist.ReduceOp.SUM)
        if int(earliest[0]) != never:
            raise self._diverged(int(earliest[0]))
        return float(total[0]) / (window_steps * self.ctx.world_size)

    def _diverged(self, step: int) -> TrainingDivergedError:
        if self._last_good_step is not None and self.checkpoint_path.exists():
            where = f"the last good checkpoint is {self.checkpoint_path} (step {self._last_good_step}), kept intact"
        else:
            where = "no checkpoint had been written yet"
        return TrainingDivergedError(
            f"training diverged: the loss became NaN or infinite at step {step} of {self.cfg.steps}; {where}. "
            "Lower pretrain.optimizer.lr, add warm-up steps or gradient clipping (pretrain.max_grad_norm), "
            "or train in fp32/bf16 instead of fp16"
        )

    def _method_logs(self, logs: dict[str, Any]) -> dict[str, float]:
        """The method's scalar logs, averaged over the processes, and the collapse monitors of the
        embeddings of all processes together (a collective: every process calls it at log steps),
        so the logged row does not depend on how the batch was split over processes."""
        row: dict[str, float] = {}
        for key, value in logs.items():
            if key == "embeddings":
                continue
            scalar = _scalar(value)
            if scalar is not None:
                row[key] = scalar
        keys = sorted(row)
        if self.ctx.is_distributed and all(k == keys for k in all_gather_object(keys, self.ctx)) and keys:
            import torch.distributed as dist

            values = torch.tensor([row[k] for k in keys], dtype=torch.float64, device=self.device)
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
            row = {k: float(v) / self.ctx.world_size for k, v in zip(keys, values.tolist())}
        embeddings = logs.get("embeddings")
        if isinstance(embeddings, torch.Tensor) and embeddings.ndim == 2:
            if self.ctx.is_distributed:
                from medssl.utils.distributed import gather_no_grad

                embeddings = gather_no_grad(embeddings.detach().contiguous())
            if embeddings.shape[0] > 1:
                row.update(collapse_metrics(embeddings))
        return row
