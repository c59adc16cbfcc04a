"""Contrastive losses: NT-Xent (SimCLR) and InfoNCE against a momentum queue (MoCo v2).

Both treat the other view of the same image as the positive and every other embedding as a
negative, with cosine similarities divided by a temperature.

Distributed: every rank gathers the embeddings of all ranks (gradient-carrying, see
:mod:`medssl.utils.distributed`) and computes the loss of the *global* batch, so the loss value is
identical on every rank and equals the one of a single process holding the same global batch.

Example:
    >>> import torch
    >>> z1, z2 = torch.randn(8, 16), torch.randn(8, 16)
    >>> NTXentLoss(temperature=0.1)(z1, z2).shape
    torch.Size([])
    >>> moco = InfoNCEQueueLoss(dim=16, queue_size=32, temperature=0.2)
    >>> loss = moco(z1, z2)          # q from view 1, keys from the momentum encoder on view 2
    >>> int(moco.queue.pointer)      # the keys were enqueued
    8
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medssl.losses.checks import check_pair, check_positive, float32, no_autocast
from medssl.losses.queue import EmbeddingQueue
from medssl.utils.distributed import gather_no_grad, gather_with_grad
from medssl.utils.seeding import make_torch_generator


class NTXentLoss(nn.Module):
    """Normalised temperature-scaled cross entropy (Chen et al. 2020, "A Simple Framework for
    Contrastive Learning of Visual Representations", SimCLR, eq. 1).

    With ``u = normalize([z1; z2])`` (``2N`` rows) and ``s_ij = u_i . u_j / tau``, anchor ``i``'s
    positive is its other view ``p(i) = i +/- N`` and its negatives are the other ``2N - 2`` rows::

        l_i = -log( exp(s_{i,p(i)}) / sum_{k != i} exp(s_ik) )
        L   = (1 / 2N) * sum_i l_i          # both directions, averaged over all 2N anchors

    Args:
        temperature: ``tau``. Default 0.1: the value of SimCLR's ImageNet setting (the paper's
            Table 5 finds 0.1 best with l2-normalised embeddings, and the reference code uses it
            for ImageNet); 0.5 is the CIFAR-10 setting of the same paper and suits very small
            batches less well.
        gather_distributed: draw negatives from all ranks (the global batch).

    The minimum is reached when the two views coincide and all other embeddings are far apart;
    the value never goes below 0.
    """

    def __init__(self, temperature: float = 0.1, gather_distributed: bool = True):
        super().__init__()
        self.temperature = check_positive("temperature", temperature, "NTXentLoss")
        self.gather_distributed = gather_distributed

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        check_pair(z1, z2, "NTXentLoss")
        with no_autocast(z1):
            if self.gather_distributed:
                z1, z2 = gather_with_grad(z1), gather_with_grad(z2)
            n = z1.shape[0]
            u = F.normalize(float32(torch.cat([z1, z2], dim=0)), dim=1)
            logits = u @ u.T / self.temperature
            self_mask = torch.eye(2 * n, dtype=torch.bool, device=u.device)
            logits = logits.masked_fill(self_mask, float("-inf"))
            index = torch.arange(n, device=u.device)
            targets = torch.cat([index + n, index])
            return F.cross_entropy(logits, targets)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


class InfoNCEQueueLoss(nn.Module):
    """InfoNCE of queries against their key and a queue of past keys (MoCo v2: Chen et al. 2020,
    "Improved Baselines with Momentum Contrastive Learning"; He et al. 2020, Algorithm 1).

    ``q = normalize(query)``, ``k = normalize(key)`` (no gradient: keys come from the momentum
    encoder), ``Q`` the queue (``K`` unit rows)::

        logits_i = [ q_i . k_i,  q_i . Q_1, ..., q_i . Q_K ] / tau
        L        = (1 / N) * sum_i  -log softmax(logits_i)[0]

    then the keys of the batch are enqueued, replacing the oldest ones. As in the reference, the
    queue starts as random unit vectors (drawn from ``seed``) and the loss is one-directional; a
    method that symmetrises calls :meth:`forward` with ``update_queue=False`` twice and
    :meth:`enqueue` once.

    Args:
        dim: embedding width.
        queue_size: ``K`` (65536 in MoCo; use fewer for small data sets, where old keys of the
            same images become false negatives).
        temperature: ``tau`` (0.2 in MoCo v2).
        seed: seed of the initial random queue.
        gather_distributed: use the queries and keys of all ranks (the global batch).

    The queue lives in ``self.queue`` (an :class:`EmbeddingQueue`), so ``state_dict`` carries it.
    """

    def __init__(
        self,
        dim: int = 128,
        queue_size: int = 65536,
        temperature: float = 0.2,
        seed: int = 0,
        gather_distributed: bool = True,
    ):
        super().__init__()
        self.temperature = check_positive("temperature", temperature, "InfoNCEQueueLoss")
        generator = make_torch_generator(seed, "moco-queue")
        initial = F.normalize(torch.randn(queue_size, dim, generator=generator), dim=1)
        self.queue = EmbeddingQueue(queue_size, dim, initial=initial)
        self.gather_distributed = gather_distributed

    def forward(self, query: torch.Tensor, key: torch.Tensor, update_queue: bool = True) -> torch.Tensor:
        check_pair(query, key, "InfoNCEQueueLoss")
        with no_autocast(query):
            key = key.detach()
            if self.gather_distributed:
                query, key = gather_with_grad(query), gather_no_grad(key)
            q = F.normalize(float32(query), dim=1)
            k = F.normalize(float32(key), dim=1)
            positive = (q * k).sum(dim=1, keepdim=True)
            negatives = q @ self.queue.filled().detach().clone().T  # clone: enqueue edits it in place
            logits = torch.cat([positive, negatives], dim=1) / self.temperature
            targets = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
            loss = F.cross_entropy(logits, targets)
        if update_queue and self.training:
            self.queue.enqueue(k)
        return loss

    @torch.no_grad()
    def enqueue(self, key: torch.Tensor) -> None:
        """Normalise ``key`` (gathered over ranks when distributed) and push it into the queue."""
        if self.gather_distributed:
            key = gather_no_grad(key.detach())
        self.queue.enqueue(F.normalize(key.detach().float(), dim=1))

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, queue_size={self.queue.size}"
