"""Barlow Twins redundancy-reduction loss (Zbontar et al. 2021, "Barlow Twins: Self-Supervised
Learning via Redundancy Reduction", Algorithm 1).

Each view is standardised over the batch on its own (``BatchNorm1d(affine=False)`` in the reference:
mean 0, biased standard deviation 1, ``eps`` inside the square root), then their cross-correlation
matrix ``C`` (``D x D``) is pushed towards the identity::

    zk_n = (zk - mean_batch(zk)) / sqrt(var_batch(zk) + eps)          for k = 1, 2
    C    = z1_n^T z2_n / N
    L    = sum_i (1 - C_ii)^2  +  lambda * sum_{i != j} C_ij^2

Invariance lives on the diagonal (the two views agree per feature), redundancy reduction off it
(features decorrelated). ``lambda = 5e-3`` is the paper's default. Distributed: the embeddings of
all ranks are gathered first, so the batch statistics and ``C`` are those of the global batch (the
reference all-reduces ``C``, which is the same).

The loss does not change when the batch is permuted (the same permutation for both views) or when
a view is scaled by a positive constant (the standardisation removes it, up to ``eps``).

Example:
    >>> import torch
    >>> z = torch.randn(64, 8)
    >>> loss = BarlowTwinsLoss()
    >>> float(loss(z, z)) < float(loss(z, torch.randn(64, 8)))  # identical views: diagonal is 1
    True
"""

from __future__ import annotations

import torch
from torch import nn

from medssl.losses.checks import check_pair, check_positive, float32, no_autocast
from medssl.utils.distributed import gather_with_grad


def standardize_over_batch(z: torch.Tensor, eps: float) -> torch.Tensor:
    """``(z - mean) / sqrt(biased var + eps)`` per feature, over the batch (dim 0)."""
    centred = z - z.mean(dim=0, keepdim=True)
    return centred / torch.sqrt(centred.pow(2).mean(dim=0, keepdim=True) + eps)


def off_diagonal(matrix: torch.Tensor) -> torch.Tensor:
    """The off-diagonal entries of a square matrix as a flat vector (``D * (D - 1)`` values)."""
    n = matrix.shape[0]
    return matrix.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


class BarlowTwinsLoss(nn.Module):
    """``sum_i (1 - C_ii)^2 + lambda_offdiag * sum_{i != j} C_ij^2`` (see the module docstring).

    Args:
        lambda_offdiag: weight of the redundancy-reduction term (5e-3 in the paper).
        eps: added to the batch variance (1e-5, PyTorch's batch norm default the reference uses).
        gather_distributed: compute statistics over the global batch of all ranks.
    """

    def __init__(self, lambda_offdiag: float = 5e-3, eps: float = 1e-5, gather_distributed: bool = True):
        super().__init__()
        self.lambda_offdiag = check_positive("lambda_offdiag", lambda_offdiag, "BarlowTwinsLoss")
        self.eps = check_positive("eps", eps, "BarlowTwinsLoss")
        self.gather_distributed = gather_distributed

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        check_pair(z1, z2, "BarlowTwinsLoss", min_batch=2)
        with no_autocast(z1):
            if self.gather_distributed:
                z1, z2 = gather_with_grad(z1), gather_with_grad(z2)
            n = z1.shape[0]
            c = standardize_over_batch(float32(z1), self.eps).T @ standardize_over_batch(float32(z2), self.eps) / n
            on_diagonal = (torch.diagonal(c) - 1).pow(2).sum()
            return on_diagonal + self.lambda_offdiag * off_diagonal(c).pow(2).sum()

    def extra_repr(self) -> str:
        return f"lambda_offdiag={self.lambda_offdiag}"
