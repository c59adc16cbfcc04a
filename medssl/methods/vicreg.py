"""VICReg (Bardes, Ponce & LeCun 2022, "VICReg: Variance-Invariance-Covariance Regularization for
Self-Supervised Learning").

Both views through the same encoder and expander; three terms on the expansions: invariance (MSE
between views), variance (hinge on each feature's std, per view) and covariance (off-diagonal
covariance, per view)::

    L = 25 * mse(z1, z2) + 25 * [v(z1) + v(z2)] + 1 * [c(z1) + c(z2)]

Defaults (paper): expander of 3 linear layers of 8192 (``Linear-BN-ReLU`` twice, then ``Linear``).
The three unweighted terms are logged (``invariance``, ``variance``, ``covariance``): a variance
term that stays high means the embedding is collapsing.

When to use: like Barlow Twins (no negatives, small batches fine); its explicit variance term
makes collapse visible and tunable.

Example:
    >>> import torch
    >>> from medssl.models import build_encoder
    >>> method = VICReg(build_encoder("resnet10_tiny", spatial_dims=2), projection_hidden_dim=32, projection_dim=32)
    >>> loss, logs = method({"views": [torch.randn(4, 1, 32, 32), torch.randn(4, 1, 32, 32)]})
    >>> sorted(k for k in logs if k != "embeddings")
    ['covariance', 'invariance', 'loss', 'variance']
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from medssl.losses import VICRegLoss
from medssl.methods.base import SSLMethod, detached_logs
from medssl.methods.registry import register_method
from medssl.models.base import Encoder
from medssl.models.heads import ProjectionHead


@register_method("vicreg")
class VICReg(SSLMethod):
    """VICReg: encoder + expander + variance/invariance/covariance loss.

    Args:
        encoder: a registry encoder.
        projection_hidden_dim, projection_dim, projection_layers: 8192, 8192, 3.
        invariance_weight, variance_weight, covariance_weight: 25, 25, 1.
        concatenate_views: share one encoder forward for both views (off, as in the reference).
    """

    name = "vicreg"

    def __init__(self, encoder: Encoder, projection_hidden_dim: int = 8192, projection_dim: int = 8192,
                 projection_layers: int = 3, invariance_weight: float = 25.0, variance_weight: float = 25.0,
                 covariance_weight: float = 1.0, concatenate_views: bool = False):
        super().__init__(encoder)
        self.projector = ProjectionHead(encoder.feature_dim, projection_hidden_dim, projection_dim,
                                        num_layers=projection_layers, last_bias=False)
        self.loss = VICRegLoss(invariance_weight, variance_weight, covariance_weight)
        self.concatenate_views = bool(concatenate_views)

    def forward(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        view1, view2 = self.views(batch)[:2]
        h1, h2 = self.encode_views([view1, view2], concatenate=self.concatenate_views)
        z1, z2 = self.projector(h1), self.projector(h2)
        terms = self.loss.terms(z1, z2)
        loss = self.loss.combine(terms)
        return loss, detached_logs(loss, embeddings=z1, **terms)
