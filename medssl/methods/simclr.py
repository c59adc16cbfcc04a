"""SimCLR (Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual Representations").

Two augmented views through the encoder and a projection MLP, NT-Xent between the projections::

    h = encoder(x),  z = g(h),  L = NT-Xent(z1, z2; tau)

Defaults: projection ``Linear(d, d)-BN-ReLU-Linear(d, 128)`` with ``d`` the encoder width (the
paper's 2-layer head with hidden size equal to the ResNet-50 output), ``tau = 0.1``. The two views
share one encoder forward (concatenated along the batch, as the reference code does), which also
keeps the method's overhead over the bare encoder small.

When to use: the baseline contrastive method; needs large batches (many negatives) to shine, so on
one GPU with 3D patches prefer MoCo (queue of negatives) or a non-contrastive method.

Example:
    >>> import torch
    >>> from medssl.models import build_encoder
    >>> method = SimCLR(build_encoder("resnet10_tiny", spatial_dims=2), projection_dim=16)
    >>> loss, logs = method({"views": [torch.randn(4, 1, 32, 32), torch.randn(4, 1, 32, 32)]})
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from medssl.losses import NTXentLoss
from medssl.methods.base import SSLMethod, detached_logs
from medssl.methods.registry import register_method
from medssl.models.base import Encoder
from medssl.models.heads import ProjectionHead


@register_method("simclr")
class SimCLR(SSLMethod):
    """SimCLR: encoder + projection head + NT-Xent.

    Args:
        encoder: a registry encoder.
        projection_hidden_dim: hidden width (default: the encoder's ``feature_dim``).
        projection_dim: output width (128).
        projection_layers: linear layers in the head (2; SimCLR v2 uses 3).
        temperature: NT-Xent ``tau`` (0.1).
    """

    name = "simclr"

    def __init__(self, encoder: Encoder, projection_hidden_dim: int | None = None, projection_dim: int = 128,
                 projection_layers: int = 2, temperature: float = 0.1):
        super().__init__(encoder)
        self.projector = ProjectionHead(encoder.feature_dim, projection_hidden_dim or encoder.feature_dim,
                                        projection_dim, num_layers=projection_layers)
        self.loss = NTXentLoss(temperature=temperature)

    def forward(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        view1, view2 = self.views(batch)[:2]
        h1, h2 = self.encode_views([view1, view2], concatenate=True)
        z = self.projector(torch.cat([h1, h2]))
        z1, z2 = z.chunk(2)
        loss = self.loss(z1, z2)
        return loss, detached_logs(loss, embeddings=z1)
