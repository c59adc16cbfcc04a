"""SimSiam (Chen & He 2021, "Exploring Simple Siamese Representation Learning").

BYOL without the momentum network: one encoder and projector for both views, a predictor, and an
explicit stop-gradient on the target branch::

    z_k = g(f(x_k)),  p_k = q(z_k)
    L = -cos(p1, stopgrad(z2)) / 2 - cos(p2, stopgrad(z1)) / 2

Defaults (paper, ImageNet): projector of 3 layers at 2048 with BN after each, the last BN without
affine parameters; predictor ``Linear(2048, 512, no bias)-BN-ReLU-Linear(512, 2048)``. The paper
trains with SGD and a *fixed* predictor learning rate; the engine's optimiser applies to all.

When to use: the simplest non-contrastive method (no queue, no momentum copy: least memory);
sensitive to the predictor and to collapse, watch the embedding std monitor.

Example:
    >>> import torch
    >>> from medssl.models import build_encoder
    >>> method = SimSiam(build_encoder("resnet10_tiny", spatial_dims=2), projection_dim=32, prediction_hidden_dim=8)
    >>> loss, logs = method({"views": [torch.randn(4, 1, 32, 32), torch.randn(4, 1, 32, 32)]})
    >>> -1.0 <= float(loss.detach()) <= 1.0
    True
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from medssl.losses import SimSiamLoss
from medssl.methods.base import SSLMethod, detached_logs
from medssl.methods.registry import register_method
from medssl.models.base import Encoder
from medssl.models.heads import PredictionHead, ProjectionHead


@register_method("simsiam")
class SimSiam(SSLMethod):
    """SimSiam: shared encoder/projector, predictor, stop-gradient.

    Args:
        encoder: a registry encoder.
        projection_dim: projector hidden and output width (2048).
        projection_layers: projector depth (3).
        prediction_hidden_dim: predictor bottleneck (512).
    """

    name = "simsiam"

    def __init__(self, encoder: Encoder, projection_dim: int = 2048, projection_layers: int = 3,
                 prediction_hidden_dim: int = 512):
        super().__init__(encoder)
        self.projector = ProjectionHead(encoder.feature_dim, projection_dim, projection_dim,
                                        num_layers=projection_layers, last_batch_norm=True,
                                        last_batch_norm_affine=False)
        self.predictor = PredictionHead(projection_dim, prediction_hidden_dim, projection_dim)
        self.loss = SimSiamLoss()

    def forward(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        view1, view2 = self.views(batch)[:2]
        z1, z2 = self.projector(self.encoder(view1)), self.projector(self.encoder(view2))
        p1, p2 = self.predictor(z1), self.predictor(z2)
        loss = self.loss(p1, p2, z1, z2)
        return loss, detached_logs(loss, embeddings=z1)
