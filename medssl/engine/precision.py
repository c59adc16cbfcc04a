"""Mixed precision: bf16 autocast (CPU and GPU) and fp16 autocast with dynamic loss scaling (GPU).

* ``fp32``: no autocast.
* ``bf16``: ``torch.autocast(device_type, dtype=torch.bfloat16)``; bf16 has float32's exponent
  range, so no loss scaling is needed (Kalamkar et al., 2019). Runs on CPU and on GPUs.
* ``fp16``: ``torch.autocast("cuda", dtype=torch.float16)`` with ``torch.amp.GradScaler``
  (Micikevicius et al., ICLR 2018): the loss is multiplied by a scale before backward, gradients
  are unscaled before clipping and the step is skipped (and the scale halved) when they overflow.
  fp16 autocast on CPU is refused: it is slow there and unscaled fp16 underflows.

torch provides the mechanisms; this module only picks them from the config in one place.

Example:
    >>> import torch
    >>> policy = PrecisionPolicy("bf16", torch.device("cpu"))
    >>> with policy.autocast():
    ...     y = torch.nn.Linear(4, 4)(torch.randn(2, 4))
    >>> y.dtype
    torch.bfloat16
"""

from __future__ import annotations

import contextlib
from typing import Any, ContextManager, Iterable

import torch

from medssl.errors import ConfigError

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class PrecisionPolicy:
    """Autocast context and gradient scaler for ``precision`` in ``{"fp32", "bf16", "fp16"}``.

    ``section`` is the config section the value came from (``"pretrain"``, ``"finetune"``): error
    messages name ``<section>.precision`` so the user fixes the right key.
    """

    def __init__(self, precision: str, device: torch.device, section: str = "pretrain") -> None:
        key = f"{section}.precision"
        if precision not in ("fp32", "bf16", "fp16"):
            raise ConfigError(f"{key} must be fp32, bf16 or fp16 (got {precision!r})")
        device = torch.device(device)
        if precision == "fp16" and device.type != "cuda":
            raise ConfigError(
                f"{key}=fp16 needs a CUDA GPU (loss-scaled fp16); on CPU set {key}=bf16 or fp32"
            )
        self.section = section
        self.precision = precision
        self.device = device
        self.scaler: torch.amp.GradScaler | None = (
            torch.amp.GradScaler("cuda") if precision == "fp16" else None
        )

    def autocast(self) -> ContextManager[Any]:
        """The autocast context for the forward pass (a null context for fp32)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=_DTYPES[self.precision])

    def backward(self, loss: torch.Tensor) -> None:
        """``loss.backward()``, scaled under fp16."""
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        """Bring the gradients back to their true scale (before clipping); a no-op without scaler."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """Take the optimiser step (under fp16 the scaler skips it when gradients overflowed, then
        adapts the scale; no host synchronisation is added here)."""
        if self.scaler is None:
            optimizer.step()
            return
        self.scaler.step(optimizer)
        self.scaler.update()

    def clip_and_step(self, optimizer: torch.optim.Optimizer, parameters: Iterable[torch.nn.Parameter],
                      max_grad_norm: float | None) -> None:
        """[unscale, clip the gradient norm of ``parameters`` to ``max_grad_norm``] then :meth:`step`:
        the end of an optimiser step in both training loops (pretraining and fine-tuning)."""
        if max_grad_norm is not None:
            self.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_([p for p in parameters if p.grad is not None], max_grad_norm)
        self.step(optimizer)

    def state_dict(self) -> dict[str, Any]:
        return {"precision": self.precision, "scaler": self.scaler.state_dict() if self.scaler else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("precision") != self.precision:
            raise ConfigError(
                f"checkpoint was written with precision {state.get('precision')!r}, the config asks for "
                f"{self.section}.precision={self.precision!r}"
            )
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
