"""DINO self-distillation loss with teacher centring, sharpening and a temperature warm-up
(Caron et al. 2021, "Emerging Properties in Self-Supervised Vision Transformers", Algorithm 1 and
the reference ``DINOLoss``).

The teacher sees the ``G`` global crops, the student all ``V`` crops (global first, then local).
For teacher crop ``a`` and student crop ``b != a``::

    P_t(a) = softmax((t_a - c) / tau_t)          # centred by c, sharpened by a low tau_t
    P_s(b) = softmax(s_b / tau_s)
    L      = mean over the pairs (a, b), a != b, of  mean_i sum_k -P_t(a)_ik log P_s(b)_ik

after which the centre follows the teacher's batch mean with momentum ``m`` (0.9)::

    c <- m c + (1 - m) mean_{all ranks, all global crops, batch}(t)

``tau_t`` rises linearly from ``warmup_teacher_temp`` to ``teacher_temp`` over
``warmup_teacher_temp_steps`` steps, then stays (the reference counts epochs; a step count is what
an engine with a fixed number of steps knows). Defaults are the reference's: ``tau_s = 0.1``,
``tau_t = 0.04`` (the paper's recipe warms ``0.04 -> 0.07`` over 30 epochs for ViT-S), ``m = 0.9``.

The centre and the current step live in buffers (``center``, ``step``), so checkpoints carry them.
Distributed: the centre update all-reduces the teacher mean over ranks; the loss itself is a mean
over samples and needs no gather.

Example:
    >>> import torch
    >>> loss = DINOLoss(out_dim=16, warmup_teacher_temp=0.04, teacher_temp=0.07, warmup_teacher_temp_steps=10)
    >>> student = [torch.randn(4, 16) for _ in range(4)]   # 2 global + 2 local crops
    >>> teacher = [torch.randn(4, 16) for _ in range(2)]
    >>> value = loss(student, teacher)
    >>> loss.set_step(5); round(loss.teacher_temperature(), 3)
    0.055
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medssl.errors import ConfigError
from medssl.losses.checks import check_positive, float32, no_autocast
from medssl.utils.distributed import all_reduce_mean


def _as_views(outputs: Sequence[torch.Tensor] | torch.Tensor, num_views: int | None, name: str) -> list[torch.Tensor]:
    if isinstance(outputs, torch.Tensor):
        if num_views is None:
            raise ValueError(f"DINOLoss: pass {name} as a list of per-crop tensors")
        return list(outputs.chunk(num_views))
    return list(outputs)


class DINOLoss(nn.Module):
    """Cross-entropy between the centred, sharpened teacher and the student over crop pairs.

    Args:
        out_dim: width ``K`` of the head outputs (the centre's size).
        teacher_temp: teacher temperature after the warm-up.
        warmup_teacher_temp: teacher temperature at step 0.
        warmup_teacher_temp_steps: length of the linear warm-up (0: none).
        student_temp: ``tau_s``.
        center_momentum: ``m`` of the centre's moving average.

    Call as ``loss(student_outputs, teacher_outputs)`` with lists of ``(B, K)`` tensors (one per
    crop; teacher: the global crops, in the same order as the student's first crops), or as
    concatenated tensors with ``num_student_views`` / ``num_teacher_views``. Updates the centre
    when the module is in training mode.
    """

    def __init__(
        self,
        out_dim: int,
        teacher_temp: float = 0.04,
        warmup_teacher_temp: float = 0.04,
        warmup_teacher_temp_steps: int = 0,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
    ):
        super().__init__()
        self.teacher_temp = check_positive("teacher_temp", teacher_temp, "DINOLoss")
        self.warmup_teacher_temp = check_positive("warmup_teacher_temp", warmup_teacher_temp, "DINOLoss")
        self.student_temp = check_positive("student_temp", student_temp, "DINOLoss")
        if warmup_teacher_temp_steps < 0:
            raise ConfigError(f"DINOLoss: warmup_teacher_temp_steps must be >= 0, got {warmup_teacher_temp_steps}")
        if not 0.0 <= center_momentum < 1.0:
            raise ConfigError(f"DINOLoss: center_momentum must be in [0, 1), got {center_momentum}")
        self.warmup_teacher_temp_steps = int(warmup_teacher_temp_steps)
        self.center_momentum = float(center_momentum)
        self.register_buffer("center", torch.zeros(1, out_dim))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def set_step(self, step: int) -> None:
        """Tell the loss which training step comes next (drives the temperature warm-up)."""
        self.step.fill_(int(step))

    def teacher_temperature(self, step: int | None = None) -> float:
        """``tau_t`` at ``step`` (default: the stored step)."""
        step = int(self.step) if step is None else int(step)
        if step >= self.warmup_teacher_temp_steps:
            return self.teacher_temp
        fraction = step / self.warmup_teacher_temp_steps
        return self.warmup_teacher_temp + fraction * (self.teacher_temp - self.warmup_teacher_temp)

    def forward(
        self,
        student_outputs: Sequence[torch.Tensor] | torch.Tensor,
        teacher_outputs: Sequence[torch.Tensor] | torch.Tensor,
        num_student_views: int | None = None,
        num_teacher_views: int | None = None,
    ) -> torch.Tensor:
        student = _as_views(student_outputs, num_student_views, "student_outputs")
        teacher = _as_views(teacher_outputs, num_teacher_views, "teacher_outputs")
        if len(student) < 2 or not teacher or len(teacher) > len(student):
            raise ValueError(f"DINOLoss needs >= 2 student crops and 1..{len(student)} teacher crops, "
                             f"got {len(student)} and {len(teacher)}")
        with no_autocast(student[0]):
            temperature = self.teacher_temperature()
            teacher_all = float32(torch.cat(teacher).detach())
            targets = F.softmax((teacher_all - self.center) / temperature, dim=-1).chunk(len(teacher))
            log_probs = [F.log_softmax(float32(s) / self.student_temp, dim=-1) for s in student]
            total = student[0].new_zeros((), dtype=torch.float32)
            terms = 0
            for a, target in enumerate(targets):
                for b, log_prob in enumerate(log_probs):
                    if a == b:
                        continue
                    total = total + torch.sum(-target * log_prob, dim=-1).mean()
                    terms += 1
            loss = total / terms
        if self.training:
            self.update_center(teacher_all)
        return loss

    @torch.no_grad()
    def update_center(self, teacher_output: torch.Tensor) -> None:
        """``c <- m c + (1 - m) * batch mean of the teacher outputs`` (mean over all ranks)."""
        batch_center = all_reduce_mean(teacher_output.float().mean(dim=0, keepdim=True))
        self.center.mul_(self.center_momentum).add_(batch_center * (1 - self.center_momentum))

    def extra_repr(self) -> str:
        return (f"teacher_temp={self.teacher_temp}, warmup_teacher_temp={self.warmup_teacher_temp}, "
                f"warmup_teacher_temp_steps={self.warmup_teacher_temp_steps}, student_temp={self.student_temp}, "
                f"center_momentum={self.center_momentum}")
