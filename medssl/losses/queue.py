"""A first-in-first-out queue of embeddings kept in registered buffers (so checkpoints carry it).

Used by MoCo (negatives from past batches, He et al. 2020, "Momentum Contrast for Unsupervised
Visual Representation Learning", Algorithm 1: ``enqueue(queue, k); dequeue(queue)``) and NNCLR (the
support set of Dwibedi et al. 2021). The reference code keeps a ``(dim, K)`` tensor and a pointer and
asserts that ``K`` is a multiple of the batch size; this queue keeps ``(K, dim)`` rows, wraps around
at the end, so any batch size works, and counts how many rows hold real embeddings (``num_filled``).

Gap filled: neither MONAI nor PyTorch has one; lightly's ``MemoryBankModule`` is the same idea.

Example:
    >>> import torch
    >>> queue = EmbeddingQueue(size=4, dim=2)
    >>> queue.enqueue(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    >>> int(queue.num_filled), int(queue.pointer)
    (3, 3)
    >>> queue.enqueue(torch.tensor([[2.0, 2.0], [3.0, 3.0]]))  # wraps: the oldest row is replaced
    >>> queue.embeddings[0].tolist(), int(queue.pointer)
    ([3.0, 3.0], 1)
"""

from __future__ import annotations

import torch
from torch import nn

from medssl.errors import ConfigError


class EmbeddingQueue(nn.Module):
    """``size`` rows of ``dim`` features; ``enqueue`` overwrites the oldest rows.

    Args:
        size: number of rows ``K``.
        dim: embedding width.
        initial: ``None`` starts empty (zeros, ``num_filled == 0``); a ``(size, dim)`` tensor starts
            full with those rows (MoCo starts from random unit vectors).

    Buffers (in ``state_dict``): ``embeddings (K, dim)``, ``pointer`` (next row to write),
    ``num_filled`` (rows holding real embeddings, at most ``K``).
    """

    def __init__(self, size: int, dim: int, initial: torch.Tensor | None = None):
        super().__init__()
        if size < 1 or dim < 1:
            raise ConfigError(f"queue size and dim must be positive, got size={size}, dim={dim}")
        if initial is None:
            embeddings = torch.zeros(size, dim)
            filled = 0
        else:
            if tuple(initial.shape) != (size, dim):
                raise ConfigError(f"initial queue must be ({size}, {dim}), got {tuple(initial.shape)}")
            embeddings = initial.detach().clone().float()
            filled = size
        self.register_buffer("embeddings", embeddings)
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))
        self.register_buffer("num_filled", torch.tensor(filled, dtype=torch.long))

    @property
    def size(self) -> int:
        return self.embeddings.shape[0]

    def filled(self) -> torch.Tensor:
        """The rows holding real embeddings (all rows once the queue has wrapped once)."""
        count = int(self.num_filled)
        return self.embeddings if count >= self.size else self.embeddings[:count]

    @torch.no_grad()
    def enqueue(self, batch: torch.Tensor) -> None:
        """Write ``batch`` (``(n, dim)``, detached) over the oldest rows, wrapping at the end."""
        batch = batch.detach().to(self.embeddings.dtype)
        if batch.ndim != 2 or batch.shape[1] != self.embeddings.shape[1]:
            raise ValueError(f"enqueue expects (n, {self.embeddings.shape[1]}) embeddings, got {tuple(batch.shape)}")
        if batch.shape[0] >= self.size:  # only the newest K rows survive
            batch = batch[-self.size :]
            self.embeddings.copy_(batch)
            self.pointer.zero_()
            self.num_filled.fill_(self.size)
            return
        start = int(self.pointer)
        rows = (torch.arange(batch.shape[0], device=batch.device) + start) % self.size
        self.embeddings[rows] = batch
        self.pointer.fill_((start + batch.shape[0]) % self.size)
        self.num_filled.fill_(min(self.size, int(self.num_filled) + batch.shape[0]))
