"""LARS: layer-wise adaptive rate scaling (You, Gitman & Ginsburg, 2017, arXiv:1708.03888).

Large-batch SSL (SimCLR, BYOL, Barlow Twins) trains with SGD whose step for each parameter tensor
is rescaled by a trust ratio, so that no layer moves by more than a fixed fraction of its norm.
For a parameter tensor ``w`` with gradient ``g``, weight decay ``lambda``, trust coefficient
``eta``, momentum ``m`` and learning rate ``lr``::

    d   = g + lambda * w
    q   = eta * ||w|| / ||d||     if ||w|| > 0 and ||d|| > 0, else 1
    d   = q * d                   (skipped for groups marked ``lars_exclude``)
    v   = m * v + d
    w   = w - lr * v

This is the form of the Barlow Twins and solo-learn reference code (the learning rate outside the
momentum buffer). Biases and normalisation parameters are excluded from both the trust ratio and
weight decay by the method's ``parameter_groups`` (groups with ``lars_exclude=True`` and
``weight_decay=0``), as in those papers. torch has no LARS optimiser; this class fills that gap.

Example:
    >>> import torch
    >>> w = torch.nn.Parameter(torch.ones(3))
    >>> opt = LARS([{"params": [w], "weight_decay": 0.0}], lr=1.0, momentum=0.0, eta=0.1)
    >>> w.grad = torch.full((3,), 2.0)
    >>> opt.step()
    >>> [round(v, 4) for v in w.tolist()]  # moves by eta * ||w|| in total: 0.1 * sqrt(3)
    [0.9, 0.9, 0.9]
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch


class LARS(torch.optim.Optimizer):
    """SGD with momentum and LARS trust ratios (see the module docstring for the update).

    Args:
        params: parameters or parameter groups; a group may set ``lars_exclude=True`` (no trust
            ratio) and its own ``weight_decay``.
        lr: learning rate.
        momentum: heavy-ball momentum ``m``.
        weight_decay: default ``lambda`` for groups that do not set theirs.
        eta: trust coefficient (1e-3 in the LARS, SimCLR and Barlow Twins papers).
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        eta: float = 1e-3,
    ) -> None:
        if lr <= 0:
            raise ValueError(f"LARS learning rate must be positive (got {lr})")
        if not 0 <= momentum < 1:
            raise ValueError(f"LARS momentum must lie in [0, 1) (got {momentum})")
        if weight_decay < 0:
            raise ValueError(f"LARS weight decay must be >= 0 (got {weight_decay})")
        if eta <= 0:
            raise ValueError(f"LARS trust coefficient eta must be positive (got {eta})")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, lars_exclude=False)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                update = param.grad
                if group["weight_decay"] != 0:
                    update = update.add(param, alpha=group["weight_decay"])
                if not group["lars_exclude"]:
                    param_norm = torch.linalg.vector_norm(param)
                    update_norm = torch.linalg.vector_norm(update)
                    one = torch.ones_like(param_norm)
                    trust = torch.where(
                        (param_norm > 0) & (update_norm > 0),
                        group["eta"] * param_norm / update_norm.clamp_min(torch.finfo(update_norm.dtype).tiny),
                        one,
                    )
                    update = update.mul(trust)
                state = self.state[param]
                if group["momentum"] != 0:
                    buffer = state.get("momentum_buffer")
                    if buffer is None:
                        buffer = state["momentum_buffer"] = torch.clone(update).detach()
                    else:
                        buffer.mul_(group["momentum"]).add_(update)
                    update = buffer
                param.add_(update, alpha=-group["lr"])
        return loss
