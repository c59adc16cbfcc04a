"""Shared argument checks and precision guard for the SSL losses.

Losses are computed in float32 even inside a bf16/fp16 autocast region: similarity logits divided
by a temperature of 0.1 (or 0.04 for DINO's teacher) and cross-correlation matrices summed over
thousands of entries lose too much in half precision. :func:`float32` turns autocast off and casts.

Example:
    >>> import torch
    >>> z = torch.randn(4, 8, dtype=torch.bfloat16)
    >>> with no_autocast(z):
    ...     float32(z).dtype
    torch.float32
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from medssl.errors import ConfigError


def check_positive(name: str, value: float, loss: str) -> float:
    """``value`` as a float, or a :class:`ConfigError` naming the loss and the argument."""
    if not value > 0:
        raise ConfigError(f"{loss}: {name} must be > 0, got {value}")
    return float(value)


def check_pair(z1: torch.Tensor, z2: torch.Tensor, loss: str, min_batch: int = 1) -> None:
    """Two embedding batches of the same ``(N, D)`` shape with ``N >= min_batch``."""
    if z1.ndim != 2 or z2.ndim != 2:
        raise ValueError(f"{loss} expects (N, D) embeddings, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if z1.shape != z2.shape:
        raise ValueError(f"{loss}: the two views must have the same shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if z1.shape[0] < min_batch:
        raise ValueError(f"{loss} needs a batch of at least {min_batch} samples, got {z1.shape[0]}")


@contextlib.contextmanager
def no_autocast(tensor: torch.Tensor) -> Iterator[None]:
    """Disable autocast on ``tensor``'s device type for the enclosed block."""
    with torch.autocast(device_type=tensor.device.type, enabled=False):
        yield


def float32(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` in float32 (no copy when it already is)."""
    return tensor.float()
