"""MoCo v2 (He et al. 2020, "Momentum Contrast for Unsupervised Visual Representation Learning";
Chen et al. 2020, "Improved Baselines with Momentum Contrastive Learning").

A query encoder (encoder + MLP head) and a key encoder that is its momentum copy; InfoNCE of each
query against its key and a queue of past keys, then the keys are enqueued::

    q = normalize(f_q(x1)),  k = normalize(f_k(x2)) (no gradient)
    L = InfoNCE(q, k, queue; tau)
    theta_k <- m theta_k + (1 - m) theta_q          (after every step)

Defaults (MoCo v2): head ``Linear(d, d)-ReLU-Linear(d, 128)`` (no batch norm), queue of 65536
keys, ``tau = 0.2``, constant ``m = 0.999``; the loss is one-directional as in the reference
(``symmetric=True`` swaps the views too and averages). The reference's shuffling BN across GPUs is
not done; with SyncBN off in the key encoder the effect it guards against (a batch "cheating"
through BN statistics) is weak for the small batches of 3D work.

When to use: contrastive learning with small batches (one GPU, 3D patches): the queue supplies
the negatives a large batch would. Shrink ``queue_size`` to a few times the number of training
volumes on small cohorts.

Example:
    >>> import torch
    >>> from medssl.models import build_encoder
    >>> method = MoCo(build_encoder("resnet10_tiny", spatial_dims=2), projection_dim=16, queue_size=32)
    >>> loss, logs = method({"views": [torch.randn(4, 1, 32, 32), torch.randn(4, 1, 32, 32)]})
    >>> int(method.loss.queue.pointer)
    4
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from medssl.losses import InfoNCEQueueLoss
from medssl.methods.base import SSLMethod, detached_logs
from medssl.methods.momentum import check_momentum, ema_update_, momentum_copy, momentum_value
from medssl.methods.registry import register_method
from medssl.models.base import Encoder
from medssl.models.heads import ProjectionHead


@register_method("moco")
class MoCo(SSLMethod):
    """MoCo v2: query encoder, momentum key encoder, InfoNCE against a queue.

    Args:
        encoder: a registry encoder.
        projection_hidden_dim: MLP hidden width (default: ``feature_dim``).
        projection_dim: key/query width (128).
        queue_size: number of queued keys (65536).
        temperature: ``tau`` (0.2).
        momentum: key-encoder momentum ``m`` (0.999).
        momentum_schedule: ``"constant"`` (MoCo) or ``"cosine"`` (BYOL-style increase to 1).
        symmetric: also use view 2 as query and view 1 as key, averaging the two losses.
        seed: seed of the initial random queue.
    """

    name = "moco"

    def __init__(self, encoder: Encoder, projection_hidden_dim: int | None = None, projection_dim: int = 128,
                 queue_size: int = 65536, temperature: float = 0.2, momentum: float = 0.999,
                 momentum_schedule: str = "constant", symmetric: bool = False, seed: int = 0):
        super().__init__(encoder)
        self.projector = ProjectionHead(encoder.feature_dim, projection_hidden_dim or encoder.feature_dim,
                                        projection_dim, num_layers=2, batch_norm=False)
        self.key_encoder = momentum_copy(nn.ModuleDict({"encoder": encoder, "projector": self.projector}))
        self.loss = InfoNCEQueueLoss(dim=projection_dim, queue_size=queue_size, temperature=temperature, seed=seed)
        self.base_momentum = check_momentum(momentum, "momentum")
        momentum_value(0, 1, self.base_momentum, momentum_schedule)  # validates the schedule name
        self.momentum_schedule = momentum_schedule
        self.symmetric = bool(symmetric)
        self.register_buffer("current_momentum", torch.tensor(self.base_momentum))

    def _keys(self, view: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.key_encoder["projector"](self.key_encoder["encoder"](view))

    def forward(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        view1, view2 = self.views(batch)[:2]
        q1 = self.projector(self.encoder(view1))
        k2 = self._keys(view2)
        if not self.symmetric:
            loss = self.loss(q1, k2)
        else:
            q2 = self.projector(self.encoder(view2))
            k1 = self._keys(view1)
            loss = 0.5 * (self.loss(q1, k2, update_queue=False) + self.loss(q2, k1, update_queue=False))
            if self.training:
                self.loss.enqueue(torch.cat([k2, k1]))
        return loss, detached_logs(loss, embeddings=q1, momentum=self.current_momentum)

    def on_train_step_end(self, step: int, max_steps: int) -> None:
        tau = momentum_value(step, max_steps, self.base_momentum, self.momentum_schedule)
        self.current_momentum.fill_(tau)
        ema_update_(self.key_encoder["encoder"], self.encoder, tau)
        ema_update_(self.key_encoder["projector"], self.projector, tau)
