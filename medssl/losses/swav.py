"""SwAV: swapped prediction of Sinkhorn-Knopp cluster assignments (Caron et al. 2020, "Unsupervised
Learning of Visual Features by Contrasting Cluster Assignments", Algorithm 1 and the reference
``distributed_sinkhorn``).

Each crop's normalised embedding is scored against ``K`` normalised prototypes (``scores = z C^T``).
For every crop ``a`` used for assignment (the global crops), an equipartitioned soft assignment
``Q_a`` is computed from its (detached) scores by ``sinkhorn_iterations`` Sinkhorn-Knopp steps with
entropy ``eps``; every other crop ``b`` predicts it::

    Q      = sinkhorn(exp(scores_a / eps))             # rows: samples, columns: prototypes
    L_ab   = -mean_i sum_k Q_ik log softmax(scores_b / tau)_ik
    L      = mean_a [ mean_{b != a} L_ab ]

Sinkhorn (reference order): ``Q /= sum(Q)``; repeat ``n``: rows (prototypes) to ``1/K``, then
columns (samples) to ``1/B``; finally ``Q *= B`` so that each sample's row sums to 1. Defaults from
the paper: 3 iterations, ``eps = 0.05``, ``tau = 0.1``.

Small batches (8 patches of CT, say) cannot be spread over thousands of prototypes; the reference
adds a queue of past embeddings whose scores join the Sinkhorn step (``extra_scores`` here) and are
dropped afterwards. Distributed: the sums inside Sinkhorn are all-reduced, so the assignment is
equipartitioned over the global batch.

Example:
    >>> import torch
    >>> scores = [torch.randn(8, 5), torch.randn(8, 5)]
    >>> q = sinkhorn_knopp(scores[0], iterations=3, epsilon=0.05)
    >>> q.shape, bool(torch.allclose(q.sum(dim=1), torch.ones(8), atol=1e-4))
    (torch.Size([8, 5]), True)
    >>> SwAVLoss()(scores).shape
    torch.Size([])
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medssl.errors import ConfigError
from medssl.losses.checks import check_positive, float32, no_autocast
from medssl.utils.distributed import all_reduce_sum, get_world_size


@torch.no_grad()
def sinkhorn_knopp(scores: torch.Tensor, iterations: int = 3, epsilon: float = 0.05) -> torch.Tensor:
    """Soft assignments ``(B, K)`` of ``scores`` ``(B, K)`` to prototypes, equipartitioned over the
    (global) batch; each row sums to 1. Computed in float32 without gradient."""
    q = torch.exp(scores.float() / epsilon).T  # (K, B)
    total_batch = q.shape[1] * get_world_size()
    num_prototypes = q.shape[0]
    q /= all_reduce_sum(q.sum())
    for _ in range(iterations):
        q /= all_reduce_sum(q.sum(dim=1, keepdim=True))
        q /= num_prototypes
        q /= q.sum(dim=0, keepdim=True)
        q /= total_batch
    q *= total_batch
    return q.T


class SwAVLoss(nn.Module):
    """Swapped prediction between crops (see the module docstring).

    Args:
        temperature: ``tau`` of the predicted distribution (0.1).
        sinkhorn_iterations: Sinkhorn-Knopp iterations (3).
        epsilon: entropy regularisation of the assignment (0.05).
        num_assign_views: how many leading crops get an assignment (2: the global crops).

    Call as ``loss(scores)`` with a list of ``(B, K)`` prototype scores, one per crop (global crops
    first), and optionally ``extra_scores``: per assigned crop, ``(M, K)`` scores of queued past
    embeddings that take part in Sinkhorn only.
    """

    def __init__(self, temperature: float = 0.1, sinkhorn_iterations: int = 3, epsilon: float = 0.05,
                 num_assign_views: int = 2):
        super().__init__()
        self.temperature = check_positive("temperature", temperature, "SwAVLoss")
        self.epsilon = check_positive("epsilon", epsilon, "SwAVLoss")
        if sinkhorn_iterations < 1 or num_assign_views < 1:
            raise ConfigError("SwAVLoss: sinkhorn_iterations and num_assign_views must be >= 1, got "
                              f"{sinkhorn_iterations} and {num_assign_views}")
        self.sinkhorn_iterations = int(sinkhorn_iterations)
        self.num_assign_views = int(num_assign_views)

    def forward(self, scores: Sequence[torch.Tensor],
                extra_scores: Sequence[torch.Tensor | None] | None = None) -> torch.Tensor:
        scores = list(scores)
        if len(scores) < 2:
            raise ValueError(f"SwAVLoss needs at least two crops, got {len(scores)}")
        assign_views = min(self.num_assign_views, len(scores))
        with no_autocast(scores[0]):
            log_probs = [F.log_softmax(float32(s) / self.temperature, dim=1) for s in scores]
            total = scores[0].new_zeros((), dtype=torch.float32)
            for a in range(assign_views):
                assigned = scores[a].detach()
                extra = extra_scores[a] if extra_scores is not None and a < len(extra_scores) else None
                if extra is not None and extra.shape[0] > 0:
                    q = sinkhorn_knopp(torch.cat([extra.detach(), assigned]), self.sinkhorn_iterations,
                                       self.epsilon)[-assigned.shape[0]:]
                else:
                    q = sinkhorn_knopp(assigned, self.sinkhorn_iterations, self.epsilon)
                sub_loss = scores[0].new_zeros((), dtype=torch.float32)
                for b, log_prob in enumerate(log_probs):
                    if b != a:
                        sub_loss = sub_loss - torch.sum(q * log_prob, dim=1).mean()
                total = total + sub_loss / (len(scores) - 1)
            return total / assign_views

    def extra_repr(self) -> str:
        return (f"temperature={self.temperature}, sinkhorn_iterations={self.sinkhorn_iterations}, "
                f"epsilon={self.epsilon}")
