"""Batch normalisation with statistics over every process of a job, on CPU (gloo) as on GPU.

SimCLR (Chen et al., ICML 2020, "global BN") and BYOL/Barlow Twins/VICReg synchronise the batch
statistics of the projection head over all devices: otherwise each device normalises with its own
small batch, which changes the objective (and lets contrastive models cheat through BN statistics).
``torch.nn.SyncBatchNorm`` does this only for CUDA/XPU tensors; this module fills the CPU gap so a
gloo job on CPUs trains the same model as one process with the whole batch. On CUDA the engine
uses ``torch.nn.SyncBatchNorm`` (faster fused kernels); :func:`convert_batchnorm` picks.

Forward (training, ``R`` processes, channel ``c``, ``n_r`` values per channel on process ``r``)::

    mean_c = sum_r sum(x_r[:, c]) / sum_r n_r
    var_c  = sum_r sum((x_r[:, c] - mean_c)^2) / sum_r n_r        (biased, as BatchNorm normalises)
    y      = (x - mean_c) / sqrt(var_c + eps) * weight_c + bias_c

The two sums are differentiable all-reduces (backward: the all-reduce of the gradients), so
gradients equal those of one process holding the whole batch, given DDP's gradient averaging
and per-process losses that are averages over the local part of the batch. Running statistics
are updated with the global mean and the unbiased global variance, as torch does.

Example (one process: it behaves exactly like BatchNorm):
    >>> import torch
    >>> bn, ref = DistributedBatchNorm(3), torch.nn.BatchNorm1d(3)
    >>> x = torch.randn(8, 3)
    >>> torch.allclose(bn(x), ref(x), atol=1e-6)
    True
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes; the gradient of each input is the sum over processes of the output
    gradients (every process's loss depends on every process's input)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        result = tensor.contiguous().clone()
        dist.all_reduce(result, op=dist.ReduceOp.SUM)
        return result

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad_output.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


def differentiable_all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum of ``tensor`` over all processes, carrying gradients (identity when torch.distributed
    is not initialised). Written here because ``torch.distributed.nn.functional.all_reduce`` is
    deprecated and its replacement is private."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    return _AllReduceSum.apply(tensor)


class DistributedBatchNorm(_BatchNorm):
    """Batch norm over any number of spatial dimensions whose training statistics span all
    processes (see the module docstring). Same parameters and buffers as ``nn.BatchNorm*d``, so
    state dicts are interchangeable."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (B, C, ...), got {input.dim()}D")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(input)
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if not (self.training and distributed):
            return super().forward(input)
        return self._global_forward(input)

    def _global_forward(self, input: torch.Tensor) -> torch.Tensor:
        x = input if input.dtype in (torch.float32, torch.float64) else input.float()
        channels = x.shape[1]
        dims = [0] + list(range(2, x.dim()))
        shape = [1, channels] + [1] * (x.dim() - 2)
        local_count = torch.tensor([x.numel() / channels], dtype=x.dtype, device=x.device)
        first = differentiable_all_reduce_sum(torch.cat([x.sum(dims), local_count]))
        count = first[channels]
        mean = first[:channels] / count
        centred = x - mean.view(shape)
        var = differentiable_all_reduce_sum((centred * centred).sum(dims)) / count
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = (
                    1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                )
                unbiased = var.detach() * count / torch.clamp(count - 1, min=1)
                self.running_mean.mul_(1 - momentum).add_(mean.detach().to(self.running_mean.dtype), alpha=momentum)
                self.running_var.mul_(1 - momentum).add_(unbiased.to(self.running_var.dtype), alpha=momentum)
        return y.to(input.dtype)


def _swap(module: _BatchNorm, cls: type[_BatchNorm], **extra) -> _BatchNorm:
    new = cls(
        module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats, **extra
    )
    if module.affine:
        with torch.no_grad():
            new.weight = module.weight
            new.bias = module.bias
    new.running_mean = module.running_mean
    new.running_var = module.running_var
    new.num_batches_tracked = module.num_batches_tracked
    new.train(module.training)
    return new


def convert_batchnorm(module: nn.Module, device_type: str, skip: tuple[nn.Module, ...] = ()) -> tuple[nn.Module, int]:
    """Replace every batch-norm layer of ``module`` (outside the submodules in ``skip``) by a
    synchronised one: ``torch.nn.SyncBatchNorm`` on CUDA, :class:`DistributedBatchNorm` otherwise.
    Parameters and buffers are kept (same objects), so optimisers built later see them.

    Returns the (possibly new) module and the number of layers converted.
    """
    skip_ids = {id(m) for m in skip}
    count = 0

    def convert(node: nn.Module) -> nn.Module:
        nonlocal count
        if id(node) in skip_ids:
            return node
        if isinstance(node, _BatchNorm) and not isinstance(node, (nn.SyncBatchNorm, DistributedBatchNorm)):
            count += 1
            return _swap(node, nn.SyncBatchNorm if device_type == "cuda" else DistributedBatchNorm)
        for name, child in list(node.named_children()):
            replacement = convert(child)
            if replacement is not child:
                setattr(node, name, replacement)
        return node

    return convert(module), count
