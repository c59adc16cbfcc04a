"""Barlow Twins (Zbontar et al. 2021, "Barlow Twins: Self-Supervised Learning via Redundancy
Reduction").

Both views through the same encoder and projector; the cross-correlation of the batch-standardised
projections is pushed to the identity::

    L = sum_i (1 - C_ii)^2 + lambda sum_{i != j} C_ij^2,   C = z1_n^T z2_n / N

Defaults (paper): projector of 3 linear layers of 8192 (``Linear-BN-ReLU`` twice, then a
bias-free ``Linear``), ``lambda = 5e-3``. The loss benefits from a wide projector; 2048 is a
reasonable reduction on memory-bound 3D runs.

When to use: no negatives, no momentum network, no predictor: robust with small batches (the
paper reports stable results down to batch 256, and it is commonly used with far fewer in 3D).

Example:
    >>> import torch
    >>> from medssl.models import build_encoder
    >>> method = BarlowTwins(build_encoder("resnet10_tiny", spatial_dims=2), projection_hidden_dim=32,
    ...                      projection_dim=32)
    >>> loss, logs = method({"views": [torch.randn(4, 1, 32, 32), torch.randn(4, 1, 32, 32)]})
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from medssl.losses import BarlowTwinsLoss
from medssl.methods.base import SSLMethod, detached_logs
from medssl.methods.registry import register_method
from medssl.models.base import Encoder
from medssl.models.heads import ProjectionHead


@register_method("barlow_twins")
class BarlowTwins(SSLMethod):
    """Barlow Twins: encoder + wide projector + cross-correlation loss.

    Args:
        encoder: a registry encoder.
        projection_hidden_dim, projection_dim, projection_layers: 8192, 8192, 3.
        lambda_offdiag: off-diagonal weight (5e-3).
        concatenate_views: share one encoder forward for both views (faster; BN then sees both
            views together; the reference runs them separately, the default here).
    """

    name = "barlow_twins"

    def __init__(self, encoder: Encoder, projection_hidden_dim: int = 8192, projection_dim: int = 8192,
                 projection_layers: int = 3, lambda_offdiag: float = 5e-3, concatenate_views: bool = False):
        super().__init__(encoder)
        self.projector = ProjectionHead(encoder.feature_dim, projection_hidden_dim, projection_dim,
                                        num_layers=projection_layers, last_bias=False)
        self.loss = BarlowTwinsLoss(lambda_offdiag=lambda_offdiag)
        self.concatenate_views = bool(concatenate_views)

    def forward(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        view1, view2 = self.views(batch)[:2]
        h1, h2 = self.encode_views([view1, view2], concatenate=self.concatenate_views)
        z1, z2 = self.projector(h1), self.projector(h2)
        loss = self.loss(z1, z2)
        return loss, detached_logs(loss, embeddings=z1)
