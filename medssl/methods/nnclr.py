"""NNCLR (Dwibedi et al. 2021, "With a Little Help from My Friends: Nearest-Neighbor Contrastive
Learning of Visual Representations").

SimCLR-like, but the positive for a sample is the nearest neighbour of its embedding in a support
set of past embeddings, which brings semantic variation no augmentation gives::

    z_k = g(f(x_k)),  p_k = q(z_k)
    L = 1/2 [ InfoNCE(NN(z1), p2) + InfoNCE(NN(z2), p1) ],  then enqueue z1

Defaults (paper): projector 3 layers ``[2048, 2048, 256]`` with BN after each, predictor
``[4096, 256]``, ``tau = 0.1``, support set 98304. The support set is a buffer (checkpointed).

When to use: larger unlabeled cohorts where neighbours are meaningful; shrink the support set to a
few times the number of training volumes on small data.

Example:
    >>> import torch
    >>> from medssl.models import build_encoder
    >>> method = NNCLR(build_encoder("resnet10_tiny", spatial_dims=2), projection_hidden_dim=32,
    ...                projection_dim=16, prediction_hidden_dim=32, support_set_size=64)
    >>> loss, logs = method({"views": [torch.randn(4, 1, 32, 32), torch.randn(4, 1, 32, 32)]})
    >>> int(method.loss.support_set.num_filled)
    4
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from medssl.losses import NNCLRLoss
from medssl.methods.base import SSLMethod, detached_logs
from medssl.methods.registry import register_method
from medssl.models.base import Encoder
from medssl.models.heads import PredictionHead, ProjectionHead


@register_method("nnclr")
class NNCLR(SSLMethod):
    """NNCLR: projector, predictor, nearest-neighbour InfoNCE with a support set.

    Args:
        encoder: a registry encoder.
        projection_hidden_dim, projection_dim: 2048, 256 (3 layers, BN after each).
        prediction_hidden_dim: 4096.
        support_set_size: 98304.
        temperature: 0.1.
    """

    name = "nnclr"

    def __init__(self, encoder: Encoder, projection_hidden_dim: int = 2048, projection_dim: int = 256,
                 prediction_hidden_dim: int = 4096, support_set_size: int = 98304, temperature: float = 0.1):
        super().__init__(encoder)
        self.projector = ProjectionHead(encoder.feature_dim, projection_hidden_dim, projection_dim, num_layers=3,
                                        last_batch_norm=True)
        self.predictor = PredictionHead(projection_dim, prediction_hidden_dim, projection_dim)
        self.loss = NNCLRLoss(projection_dim, support_set_size, temperature)

    def forward(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        view1, view2 = self.views(batch)[:2]
        z1, z2 = self.projector(self.encoder(view1)), self.projector(self.encoder(view2))
        p1, p2 = self.predictor(z1), self.predictor(z2)
        loss = self.loss(z1, z2, p1, p2)
        return loss, detached_logs(loss, embeddings=z1)
