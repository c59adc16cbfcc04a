"""Data-parallel training under ``torchrun``: process-group set-up, DDP wrapping, synchronised BN.

``torchrun --nproc_per_node N -m medssl.cli pretrain ...`` starts N processes with ``RANK``,
``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` in the environment;
:func:`init_distributed` reads them and joins the process group with NCCL when the processes train
on GPUs and gloo on CPUs (one process per GPU, ``cuda:LOCAL_RANK``). Without those variables (or
with ``WORLD_SIZE=1``) it returns a single-process context and nothing is initialised.

What is synchronised (see ``docs/distributed.md``): gradients (DDP all-reduce average after each
backward), batch-norm statistics of the heads (:mod:`medssl.engine.sync_batchnorm`), embeddings for
contrastive negatives and Barlow/VICReg statistics (the losses gather them with
``medssl.utils.distributed.gather_with_grad``), the divergence flag and the logged loss. DDP's
per-forward buffer broadcast is off (``forward_sync_buffers=False``): queues and centres are kept equal by the
methods themselves (they enqueue gathered keys), and broadcasting a 65k-entry MoCo queue at every
forward would cost more than the step. Only rank 0 writes files.

torch provides the mechanisms (``torch.distributed``, DDP); this module wires them to the config.

Example:
    >>> ctx = init_distributed("cpu")      # no torchrun variables: one process
    >>> ctx.rank, ctx.world_size, ctx.is_main, str(ctx.device)
    (0, 1, True, 'cpu')
"""

from __future__ import annotations

import datetime
import inspect
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from medssl.engine.sync_batchnorm import convert_batchnorm
from medssl.errors import ConfigError
from medssl.models.base import Encoder
from medssl.utils.devices import resolve_device

logger = logging.getLogger(__name__)


@dataclass
class DistributedContext:
    """Where this process stands in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_process_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} is not an integer (set by torchrun)") from None


def init_distributed(device_preference: str = "auto", timeout_minutes: float = 30.0) -> DistributedContext:
    """Join the torchrun process group when the environment describes one (see module docstring).

    A process group initialised by the caller is reused (and not destroyed by :func:`cleanup`).
    """
    world_size = _env_int("WORLD_SIZE", 1)
    if dist.is_available() and dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
        local_rank = _env_int("LOCAL_RANK", rank)
        device = resolve_device(device_preference, "pretrain.device", local_rank)
        return DistributedContext(rank, world_size, local_rank, device, owns_process_group=False)
    if world_size <= 1:
        return DistributedContext(device=resolve_device(device_preference, "pretrain.device", 0))
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    device = resolve_device(device_preference, "pretrain.device", local_rank)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this torch build has no torch.distributed support")
    kwargs: dict[str, Any] = {"timeout": datetime.timedelta(minutes=timeout_minutes)}
    if backend == "nccl":
        kwargs["device_id"] = device
    dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world_size, **kwargs)
    logger.info("joined process group: rank %d of %d (%s, %s)", rank, world_size, backend, device)
    return DistributedContext(rank, world_size, local_rank, device, owns_process_group=True)


def cleanup(ctx: DistributedContext) -> None:
    """Leave the process group if this module created it.

    On the success path call :func:`barrier` first (as ``run_pretraining`` does): a gloo rank
    that destroys its group and exits while a peer is still working can make that peer abort at
    exit ("terminate called without an active exception", about 1 run in 8 on two CPU processes).
    """
    if ctx.owns_process_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistributedContext) -> None:
    if ctx.is_distributed:
        if ctx.device.type == "cuda":
            dist.barrier(device_ids=[ctx.device.index])
        else:
            dist.barrier()


def all_reduce_sum(tensor: torch.Tensor, ctx: DistributedContext) -> torch.Tensor:
    """In-place sum over processes (no gradient); returns the tensor."""
    if ctx.is_distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_object(obj: Any, ctx: DistributedContext, src: int = 0) -> Any:
    """``obj`` from rank ``src`` on every process (a picklable object)."""
    if not ctx.is_distributed:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src, device=ctx.device if ctx.device.type == "cuda" else None)
    return holder[0]


def all_gather_object(obj: Any, ctx: DistributedContext) -> list[Any]:
    """The list of every process's ``obj`` (rank order)."""
    if not ctx.is_distributed:
        return [obj]
    gathered: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def _encoder_like_modules(method: nn.Module) -> tuple[nn.Module, ...]:
    """The method's encoder and every submodule of the same class (a momentum teacher's copy)."""
    encoder = getattr(method, "encoder", None)
    if not isinstance(encoder, nn.Module):
        return ()
    kinds: tuple[type, ...] = (type(encoder), Encoder)
    return tuple(m for m in method.modules() if isinstance(m, kinds))


def synchronise_batchnorm(method: nn.Module, scope: str, ctx: DistributedContext) -> nn.Module:
    """Make batch norm global over the job: ``heads`` (every BN outside the encoder and its
    momentum copies), ``all`` or ``none``. Single-process runs are left untouched."""
    if scope not in ("heads", "all", "none"):
        raise ConfigError(f"pretrain.sync_batchnorm must be heads, all or none (got {scope!r})")
    if scope == "none" or not ctx.is_distributed:
        return method
    skip = _encoder_like_modules(method) if scope == "heads" else ()
    method, count = convert_batchnorm(method, ctx.device.type, skip=skip)
    logger.info("synchronised %d batch-norm layers (%s) across %d processes", count, scope, ctx.world_size)
    return method


def wrap_ddp(method: nn.Module, ctx: DistributedContext, find_unused_parameters: bool = False) -> nn.Module:
    """``DistributedDataParallel(method)`` when distributed (see module docstring), else ``method``."""
    if not ctx.is_distributed:
        return method
    options: dict[str, Any] = {"find_unused_parameters": find_unused_parameters}
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
        options["forward_sync_buffers"] = False  # torch >= 2.13 (buffers still equalised once at wrap)
    else:
        options["broadcast_buffers"] = False
    return DistributedDataParallel(
        method, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None, **options
    )


def unwrap(model: nn.Module) -> nn.Module:
    """The method inside a DDP wrapper (or the module itself)."""
    return model.module if isinstance(model, DistributedDataParallel) else model
