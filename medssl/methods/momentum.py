"""Momentum (exponential moving average) encoders and their schedule.

BYOL (Grill et al. 2020, section 3.2) and DINO update a target/teacher network as an EMA of the
online/student network after every optimiser step::

    xi <- tau * xi + (1 - tau) * theta
    tau_k = 1 - (1 - tau_base) * (cos(pi * k / K) + 1) / 2      # from tau_base at k = 0 to 1 at k = K

MoCo (He et al. 2020) uses a constant ``tau = 0.999`` (``schedule="constant"``).

Gap filled: neither MONAI nor PyTorch ships these; ``torch._foreach`` ops keep the update one
kernel per parameter list.

Example:
    >>> round(cosine_momentum(0, 100, 0.996), 6), round(cosine_momentum(100, 100, 0.996), 6)
    (0.996, 1.0)
    >>> import torch
    >>> online = torch.nn.Linear(2, 2); target = momentum_copy(online)
    >>> with torch.no_grad(): _ = online.weight.add_(1.0)
    >>> ema_update_(target, online, momentum=0.5)
    >>> bool(torch.allclose(target.weight, online.weight - 0.5))
    True
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from medssl.errors import ConfigError


def cosine_momentum(step: int, max_steps: int, base_momentum: float) -> float:
    """BYOL's cosine increase of ``tau`` from ``base_momentum`` (step 0) to 1 (``max_steps``)."""
    if max_steps <= 0:
        return 1.0
    progress = min(max(step / max_steps, 0.0), 1.0)
    return 1.0 - (1.0 - base_momentum) * (math.cos(math.pi * progress) + 1.0) / 2.0


def momentum_value(step: int, max_steps: int, base_momentum: float, schedule: str) -> float:
    """``tau`` at ``step`` for ``schedule`` ``"cosine"`` or ``"constant"``."""
    if schedule == "cosine":
        return cosine_momentum(step, max_steps, base_momentum)
    if schedule == "constant":
        return float(base_momentum)
    raise ConfigError(f"momentum schedule must be 'cosine' or 'constant', got {schedule!r}")


def check_momentum(value: float, name: str = "base_momentum") -> float:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must be in [0, 1], got {value}")
    return float(value)


def momentum_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` whose parameters take no gradient (the EMA target/teacher)."""
    target = copy.deepcopy(module)
    for parameter in target.parameters():
        parameter.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update_(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """``target <- momentum * target + (1 - momentum) * online`` for every parameter (in place).

    Buffers (batch-norm running statistics) are not averaged: the target keeps its own, as in the
    BYOL, MoCo and DINO reference code.
    """
    target_params = list(target.parameters())
    online_params = list(online.parameters())
    if len(target_params) != len(online_params):
        raise ValueError("EMA target and online network have different parameter lists")
    if momentum >= 1.0:
        return
    torch._foreach_mul_(target_params, momentum)
    torch._foreach_add_(target_params, [p.detach() for p in online_params], alpha=1.0 - momentum)
