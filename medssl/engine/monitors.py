"""Collapse monitors for joint-embedding SSL, computed on a batch of embeddings ``z`` of shape (B, D).

* Embedding standard deviation (Chen & He, SimSiam, CVPR 2021, section 4.1): each row of ``z`` is
  L2-normalised, then the per-dimension standard deviation over the batch is averaged over the
  ``D`` dimensions. A complete collapse gives 0; embeddings spread uniformly on the sphere give
  about ``1 / sqrt(D)``, so ``embedding_std * sqrt(D)`` (logged as ``embed_std_ratio``) is near 1
  when healthy, whatever the width.
* Effective rank (Roy & Vetterli, EUSIPCO 2007; used as RankMe by Garrido et al., ICML 2023): with
  the singular values ``s_k`` of ``z``, ``p_k = s_k / sum(s) + eps`` and the rank is
  ``exp(-sum_k p_k log p_k)``; it lies in ``[1, min(B, D)]``, 1 for a collapse to one direction
  (dimensional collapse shows as a rank much lower than ``D``).

Both run in float32 without gradients; torch has the SVD, this module only holds the formulas.

Example:
    >>> import torch
    >>> z = torch.randn(256, 8, generator=torch.Generator().manual_seed(0))
    >>> 0.9 < embedding_std(z) * 8 ** 0.5 < 1.1
    True
    >>> round(effective_rank(torch.ones(16, 8)), 3)
    1.0
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


@torch.no_grad()
def embedding_std(z: torch.Tensor) -> float:
    """Mean over dimensions of the batch standard deviation of L2-normalised embeddings."""
    z = _as_matrix(z)
    if z.shape[0] < 2:
        return float("nan")
    return float(F.normalize(z, dim=1).std(dim=0).mean())


@torch.no_grad()
def effective_rank(z: torch.Tensor, eps: float = 1e-7) -> float:
    """``exp`` of the entropy of the normalised singular values of ``z`` (RankMe)."""
    z = _as_matrix(z)
    singular = torch.linalg.svdvals(z)
    total = singular.sum()
    if not torch.isfinite(total) or total <= 0:
        return float("nan") if not torch.isfinite(total) else 1.0
    p = singular / total + eps
    return float(torch.exp(-(p * torch.log(p)).sum()))


def collapse_metrics(z: torch.Tensor) -> dict[str, float]:
    """The monitors as a dict of floats for the metrics log (``embed_std``, ``embed_std_ratio``,
    ``effective_rank``)."""
    z = _as_matrix(z)
    std = embedding_std(z)
    return {
        "embed_std": std,
        "embed_std_ratio": std * math.sqrt(z.shape[1]),
        "effective_rank": effective_rank(z),
    }


def _as_matrix(z: torch.Tensor) -> torch.Tensor:
    if not isinstance(z, torch.Tensor) or z.ndim != 2:
        shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
        raise ValueError(f"collapse monitors need embeddings shaped (B, D), got {shape}")
    return z.detach().float()
