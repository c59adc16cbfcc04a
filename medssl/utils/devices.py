"""Which device a run or a call computes on: one resolver for the ``device`` settings.

``pretrain.device`` and ``finetune.device`` take ``auto`` (the GPU when torch sees one, else the
CPU), ``cpu`` or ``cuda``; asking for ``cuda`` without a GPU is a :class:`~medssl.errors.ConfigError`
naming the setting. Under torchrun each process takes the GPU of its local rank.

Example:
    >>> resolve_device("cpu")
    device(type='cpu')
    >>> import torch
    >>> device_of(torch.nn.Linear(2, 2)), device_of(torch.nn.Linear(2, 2), "cpu")
    (device(type='cpu'), device(type='cpu'))
"""

from __future__ import annotations

import torch
from torch import nn

from medssl.errors import ConfigError

__all__ = ["device_of", "resolve_device"]


def resolve_device(preference: str, setting: str = "device", local_rank: int | None = None) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error naming ``setting``.

    With ``local_rank`` (a torchrun process) CUDA means ``cuda:local_rank`` (modulo the GPUs seen),
    made the process's current device; without it, plain ``cuda``.
    """
    if preference not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"{setting} must be auto, cpu or cuda (got {preference!r})")
    if preference == "cpu" or (preference == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"{setting}=cuda but torch sees no CUDA GPU; use {setting}=cpu or auto")
    if local_rank is None:
        return torch.device("cuda")
    index = local_rank % max(1, torch.cuda.device_count())
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def device_of(module: nn.Module, device: torch.device | str | None = None) -> torch.device:
    """``device`` when given, else the device of ``module``'s parameters."""
    return torch.device(device) if device is not None else next(module.parameters()).device
