"""Optimisers from the config: SGD, AdamW (torch) and LARS (:mod:`medssl.engine.lars`).

Parameter groups come from the SSL method's ``parameter_groups(weight_decay)`` when it has one
(the method knows which tensors are biases and norm parameters, and marks them with
``weight_decay=0`` and ``lars_exclude=True``); otherwise :func:`default_parameter_groups` applies
the usual rule (tensors with one dimension or fewer are excluded). A group may carry ``lr_scale``
(layer-wise decay in fine-tuning): its peak rate is ``lr * lr_scale``. Frozen tensors
(``requires_grad=False``, e.g. a momentum teacher) are left out.

AdamW uses torch's fused kernel when the parameters allow it (see :func:`_adamw`); build the
optimiser after moving the model to its device.

The peak rate follows ``OptimizerConfig.lr_scaling``: ``lr * B / B_ref`` (linear, Goyal et al.
2017), ``lr * sqrt(B / B_ref)`` (sqrt) or ``lr`` (none), with ``B`` the global batch.

Example:
    >>> import torch
    >>> from medssl.config import OptimizerConfig
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
    >>> opt = build_optimizer(model, OptimizerConfig(name="lars", lr=0.3, weight_decay=1e-6))
    >>> [(len(g["params"]), g["weight_decay"], g["lars_exclude"]) for g in opt.param_groups]
    [(1, 1e-06, False), (3, 0.0, True)]
"""

from __future__ import annotations

import logging
import math
from typing import Any, Iterable

import torch
from torch import nn

from medssl.config import OptimizerConfig
from medssl.engine.lars import LARS
from medssl.errors import ConfigError

logger = logging.getLogger(__name__)


def default_parameter_groups(module: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two groups: weights with decay, and biases / norm parameters (ndim <= 1) without decay and
    excluded from LARS adaptation."""
    decay, no_decay = [], []
    for _name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 else decay).append(param)
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay, "lars_exclude": False})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "lars_exclude": True})
    return groups


def peak_learning_rate(cfg: OptimizerConfig, batch_size: int | None) -> float:
    """The peak learning rate after ``cfg.lr_scaling`` for a global batch of ``batch_size``."""
    if cfg.lr_scaling == "none" or batch_size is None:
        return cfg.lr
    ratio = batch_size / cfg.reference_batch_size
    return cfg.lr * (ratio if cfg.lr_scaling == "linear" else math.sqrt(ratio))


def _normalise_groups(groups: Iterable[dict[str, Any]], weight_decay: float) -> list[dict[str, Any]]:
    result = []
    for index, group in enumerate(groups):
        if not isinstance(group, dict) or "params" not in group:
            raise ConfigError(f"parameter group {index} must be a dict with a 'params' entry (got {type(group)})")
        params = [p for p in group["params"] if p.requires_grad]
        if not params:
            continue
        clean = dict(group)
        clean["params"] = params
        clean.setdefault("weight_decay", weight_decay)
        clean.setdefault("lars_exclude", False)
        clean.setdefault("lr_scale", 1.0)
        result.append(clean)
    if not result:
        raise ConfigError("the model has no trainable parameters to optimise")
    return result


def _adamw(groups: list[dict[str, Any]], lr: float, betas: tuple[float, float]) -> torch.optim.Optimizer:
    """torch's fused AdamW when every tensor allows it (CPU or CUDA, float32/16/bf16), else the
    default implementation. Fused is the same update in one kernel per step: measured 4.7x faster
    than the per-tensor loop on CPU for a small 3D ResNet with a projection head (3.7 vs 17.6 ms per
    step, 43 tensors), which is 20% of such a step on one core."""
    fusable = all(
        p.device.type in ("cpu", "cuda") and p.dtype in (torch.float32, torch.float16, torch.bfloat16)
        for g in groups for p in g["params"]
    )
    if fusable:
        try:
            return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=True)
        except (RuntimeError, ValueError, TypeError) as exc:  # an older torch without fused CPU kernels
            logger.debug("fused AdamW unavailable (%s); using the default implementation", exc)
    return torch.optim.AdamW(groups, lr=lr, betas=betas)


def build_optimizer(
    model_or_groups: nn.Module | Iterable[dict[str, Any]],
    cfg: OptimizerConfig,
    batch_size: int | None = None,
) -> torch.optim.Optimizer:
    """The optimiser named by ``cfg.name`` over the model's parameter groups.

    Args:
        model_or_groups: an ``nn.Module`` (its ``parameter_groups(weight_decay)`` is used when it
            has one, else :func:`default_parameter_groups`) or an iterable of parameter groups.
        cfg: the optimiser section of the config.
        batch_size: the global batch per optimiser step, for ``cfg.lr_scaling``.
    """
    if isinstance(model_or_groups, nn.Module):
        module = model_or_groups
        if callable(getattr(module, "parameter_groups", None)):
            groups = module.parameter_groups(cfg.weight_decay)
        else:
            groups = default_parameter_groups(module, cfg.weight_decay)
    else:
        groups = model_or_groups
    groups = _normalise_groups(groups, cfg.weight_decay)
    peak = peak_learning_rate(cfg, batch_size)
    for group in groups:
        group["lr"] = peak * group["lr_scale"]
    if cfg.name == "sgd":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(
            groups, lr=peak, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0
        )
    elif cfg.name == "adamw":
        optimizer = _adamw(groups, peak, tuple(cfg.betas))
    elif cfg.name == "lars":
        optimizer = LARS(groups, lr=peak, momentum=cfg.momentum, eta=cfg.lars_eta)
    else:  # the config schema forbids this; kept for direct callers
        raise ConfigError(f"unknown optimizer {cfg.name!r}: choose sgd, adamw or lars")
    logger.debug(
        "optimizer %s peak lr %.4g over %d groups (%d tensors)",
        cfg.name, peak, len(groups), sum(len(g["params"]) for g in groups),
    )
    return optimizer
