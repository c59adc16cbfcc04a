"""Learning-rate schedules per optimiser step: linear warm-up, then cosine decay (or constant).

The cosine schedule is SGDR without restarts (Loshchilov & Hutter, ICLR 2017) with the linear
warm-up of Goyal et al. (2017), as SimCLR, BYOL, Barlow Twins and DINO use it. For optimiser step
``s`` (0-based) of ``T`` steps with ``W`` warm-up steps the factor applied to the peak rate is::

    f(s) = (s + 1) / W                                                  if s < W
    f(s) = r + (1 - r) * 0.5 * (1 + cos(pi * (s - W) / max(1, T - W - 1)))   otherwise (cosine)
    f(s) = 1                                                            otherwise (constant)

so the warm-up ends at the peak, the first step after it runs at the peak and the last step runs
at ``r * peak`` (``r = min_lr_ratio``). The factor is a pure function of the step, which makes
the schedule exactly resumable; torch's ``LambdaLR`` applies it (reused, not rewritten), and what
is hand-written here is only the factor, because torch's ``CosineAnnealingLR`` has no warm-up and
chaining ``SequentialLR`` is not a pure function of the step.

Example:
    >>> f = WarmupCosineFactor(total_steps=10, warmup_steps=2, min_lr_ratio=0.0)
    >>> [round(f(s), 3) for s in (0, 1, 2, 9)]
    [0.5, 1.0, 1.0, 0.0]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from medssl.errors import ConfigError


@dataclass(frozen=True)
class WarmupCosineFactor:
    """The multiplier of the peak learning rate at optimiser step ``step`` (see module docstring)."""

    total_steps: int
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    schedule: str = "cosine"

    def __post_init__(self) -> None:
        if self.total_steps <= 0:
            raise ConfigError(f"the schedule needs total_steps > 0 (got {self.total_steps})")
        if self.warmup_steps < 0:
            raise ConfigError(f"optimizer.warmup_steps must be >= 0 (got {self.warmup_steps})")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"optimizer.min_lr_ratio must lie in [0, 1] (got {self.min_lr_ratio})")
        if self.schedule not in ("cosine", "constant"):
            raise ConfigError(f"optimizer.schedule must be 'cosine' or 'constant' (got {self.schedule!r})")

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.schedule == "constant":
            return 1.0
        span = max(1, self.total_steps - self.warmup_steps - 1)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_steps: int = 0,
    min_lr_ratio: float = 0.0,
    schedule: str = "cosine",
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` applying :class:`WarmupCosineFactor`; call ``.step()`` after each optimiser step.

    The peak rate of each parameter group is the group's ``lr`` when the scheduler is built.
    """
    factor = WarmupCosineFactor(total_steps, warmup_steps, min_lr_ratio, schedule)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=factor)
