"""NNCLR: contrastive loss with nearest-neighbour positives from a support set (Dwibedi et al.
2021, "With a Little Help from My Friends: Nearest-Neighbor Contrastive Learning of Visual
Representations", eq. 2 with the prediction head of section 3).

The positive of view 1's sample ``i`` is not its own embedding but its nearest neighbour in a
support set ``Q`` of past embeddings (cosine similarity), contrasted with the predictions of view 2
of every sample in the batch::

    nn_i = argmax_{q in Q} cos(z1_i, q)                     # a stored row: no gradient
    l_i  = -log( exp(nn_i . p2_i / tau) / sum_k exp(nn_i . p2_k / tau) )   (all unit vectors)
    L    = (1/2) [ mean_i l_i(nn(z1), p2) + mean_i l_i(nn(z2), p1) ]

then the normalised view-1 embeddings of the batch are enqueued into ``Q``. Defaults from the paper:
``tau = 0.1``, support set of 98304 rows. While the support set is still empty (first step), a
sample's own embedding stands in for its neighbour, which makes the first step plain InfoNCE.

Distributed: predictions are gathered with gradient and neighbours without, so the ``N x N`` logits
are those of the global batch; the support set receives the global batch.

Example:
    >>> import torch
    >>> loss = NNCLRLoss(dim=8, support_set_size=32)
    >>> z1, z2, p1, p2 = (torch.randn(4, 8) for _ in range(4))
    >>> value = loss(z1, z2, p1, p2)
    >>> int(loss.support_set.num_filled)
    4
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medssl.losses.checks import check_pair, check_positive, float32, no_autocast
from medssl.losses.queue import EmbeddingQueue
from medssl.utils.distributed import gather_no_grad, gather_with_grad


class NNCLRLoss(nn.Module):
    """Symmetric InfoNCE between support-set neighbours of one view and predictions of the other.

    Args:
        dim: embedding width.
        support_set_size: rows of the support set (98304 in the paper; use at most a few times
            the number of training images on small data sets).
        temperature: ``tau`` (0.1).
        gather_distributed: use the global batch of all ranks.

    Call as ``loss(z1, z2, p1, p2)`` (projections and predictions of the two views; ``p`` defaults
    to ``z`` for the variant without a predictor).
    """

    def __init__(self, dim: int = 256, support_set_size: int = 98304, temperature: float = 0.1,
                 gather_distributed: bool = True):
        super().__init__()
        self.temperature = check_positive("temperature", temperature, "NNCLRLoss")
        self.support_set = EmbeddingQueue(support_set_size, dim)
        self.gather_distributed = gather_distributed

    @torch.no_grad()
    def nearest_neighbours(self, z: torch.Tensor) -> torch.Tensor:
        """The support-set row closest (cosine) to each normalised row of ``z``; ``z`` itself while
        the support set is empty."""
        z = F.normalize(z.detach().float(), dim=1)
        support = self.support_set.filled()
        if support.shape[0] == 0:
            return z
        index = (z @ support.T).argmax(dim=1)
        return support[index]

    def _contrast(self, neighbours: torch.Tensor, predictions: torch.Tensor) -> torch.Tensor:
        logits = neighbours @ F.normalize(predictions, dim=1).T / self.temperature
        targets = torch.arange(logits.shape[0], device=logits.device)
        return F.cross_entropy(logits, targets)

    def forward(self, z1: torch.Tensor, z2: torch.Tensor, p1: torch.Tensor | None = None,
                p2: torch.Tensor | None = None) -> torch.Tensor:
        p1 = z1 if p1 is None else p1
        p2 = z2 if p2 is None else p2
        check_pair(z1, z2, "NNCLRLoss")
        check_pair(p1, p2, "NNCLRLoss")
        with no_autocast(z1):
            if self.gather_distributed:
                z1, z2 = gather_no_grad(z1.detach()), gather_no_grad(z2.detach())
                p1, p2 = gather_with_grad(p1), gather_with_grad(p2)
            nn1, nn2 = self.nearest_neighbours(z1), self.nearest_neighbours(z2)
            loss = 0.5 * (self._contrast(nn1, float32(p2)) + self._contrast(nn2, float32(p1)))
        if self.training:
            self.support_set.enqueue(F.normalize(z1.detach().float(), dim=1))
        return loss

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, support_set_size={self.support_set.size}"
