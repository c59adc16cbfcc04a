"""Rank helpers and gradient-carrying collectives for losses whose statistics span all ranks.

Self-supervised losses differ from supervised ones in that a sample's loss depends on the rest of
the batch: NT-Xent draws its negatives from it, Barlow Twins and VICReg standardise over it, DINO
centres over it, SwAV balances its assignments over it. Under DDP each rank holds only its share of
the batch, so these losses gather the embeddings of every rank first. The gather must carry
gradients back to the rank that produced each embedding, or a rank would only learn from its own
samples through half of the terms.

Gap filled: ``torch.distributed.nn.functional.all_gather`` does this but is deprecated (a
``FutureWarning`` on every call) and its replacement in ``torch.distributed._functional_collectives``
is private and relies on ``reduce_scatter``, which the gloo backend (CPU) lacks. :class:`_GatherWithGrad`
is the few lines the VICReg reference code uses (``FullGatherLayer``): ``all_gather`` forward,
``all_reduce(SUM)`` of the incoming gradients backward, keep this rank's slice.

Gradient bookkeeping: every rank computes the *global-batch* loss from the gathered tensor, so the
loss value is identical on all ranks. The backward sums ``dL/dz_r`` over the ``W`` ranks (``W``
identical copies), and DDP divides the parameter gradients by ``W`` again, so the update equals the
one of a single process holding the whole global batch.

Example:
    >>> import torch
    >>> z = torch.randn(4, 8, requires_grad=True)
    >>> gather_with_grad(z).shape  # identity when torch.distributed is not initialised
    torch.Size([4, 8])
    >>> get_world_size(), get_rank(), is_main_process()
    (1, 0, True)
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True when ``torch.distributed`` is available and a process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    """Number of processes in the default group (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def get_rank() -> int:
    """This process's rank in the default group (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def is_main_process() -> bool:
    """True on rank 0 (and in a single-process run): the process that writes files and logs."""
    return get_rank() == 0


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward sends each rank the summed gradient of its slice."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        tensor = tensor.contiguous()
        world_size = dist.get_world_size()
        ctx.batch = tensor.shape[0]
        ctx.rank = dist.get_rank()
        parts = [torch.empty_like(tensor) for _ in range(world_size)]
        dist.all_gather(parts, tensor)
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad_output.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = ctx.rank * ctx.batch
        return grad[start : start + ctx.batch]


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` (``(n, ...)``, same ``n`` on every rank) from all ranks along dim 0.

    Rank ``r``'s rows sit at ``[r * n, (r + 1) * n)``. Gradients flow back to the rank that produced
    each slice. Without an initialised process group (or with one process) this is the identity.
    """
    if get_world_size() == 1:
        return tensor
    return _GatherWithGrad.apply(tensor)


@torch.no_grad()
def gather_no_grad(tensor: torch.Tensor) -> torch.Tensor:
    """All-gather along dim 0 without gradient (for queue updates); identity on one process."""
    if get_world_size() == 1:
        return tensor
    tensor = tensor.contiguous()
    parts = [torch.empty_like(tensor) for _ in range(get_world_size())]
    dist.all_gather(parts, tensor)
    return torch.cat(parts, dim=0)


@torch.no_grad()
def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum of ``tensor`` over ranks (a new tensor; the input is left untouched)."""
    result = tensor.detach().clone()
    if get_world_size() > 1:
        dist.all_reduce(result, op=dist.ReduceOp.SUM)
    return result


@torch.no_grad()
def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean of ``tensor`` over ranks (a new tensor; the input is left untouched)."""
    return all_reduce_sum(tensor) / get_world_size()
