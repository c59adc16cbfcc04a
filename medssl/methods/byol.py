"""BYOL (Grill et al. 2020, "Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning").

An online network (encoder, projector, predictor) predicts the projection that a target network,
its momentum average, gives for the other view; the loss is symmetrised::

    p_k = q(g(f(x_k))),  z'_k = g'(f'(x_k)) (no gradient)
    L = mean(2 - 2cos(p1, z'2)) + mean(2 - 2cos(p2, z'1))
    xi <- tau xi + (1 - tau) theta,  tau from 0.996 to 1 by a cosine over training

Defaults (paper): projector and predictor ``Linear-BN-ReLU-Linear`` with 4096 hidden and 256
outputs, ``tau_base = 0.996``.

When to use: no negatives, so it works with small batches; a strong default for 3D pretraining
on one GPU. Needs the momentum schedule to span the run (``max_steps`` from the engine).

Example:
    >>> import torch
    >>> from medssl.models import build_encoder
    >>> method = BYOL(build_encoder("resnet10_tiny", spatial_dims=2), projection_hidden_dim=32,
    ...               projection_dim=16, prediction_hidden_dim=32)
    >>> loss, logs = method({"views": [torch.randn(4, 1, 32, 32), torch.randn(4, 1, 32, 32)]})
    >>> method.on_train_step_end(step=1, max_steps=10)
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from medssl.losses import BYOLLoss
from medssl.methods.base import SSLMethod, detached_logs
from medssl.methods.momentum import check_momentum, cosine_momentum, ema_update_, momentum_copy
from medssl.methods.registry import register_method
from medssl.models.base import Encoder
from medssl.models.heads import PredictionHead, ProjectionHead


@register_method("byol")
class BYOL(SSLMethod):
    """BYOL: online encoder/projector/predictor, momentum target encoder/projector.

    Args:
        encoder: a registry encoder.
        projection_hidden_dim, projection_dim: projector widths (4096, 256).
        prediction_hidden_dim: predictor hidden width (4096).
        base_momentum: ``tau_base`` (0.996), raised to 1 by a cosine over ``max_steps``.
    """

    name = "byol"

    def __init__(self, encoder: Encoder, projection_hidden_dim: int = 4096, projection_dim: int = 256,
                 prediction_hidden_dim: int = 4096, base_momentum: float = 0.996):
        super().__init__(encoder)
        self.projector = ProjectionHead(encoder.feature_dim, projection_hidden_dim, projection_dim, num_layers=2)
        self.predictor = PredictionHead(projection_dim, prediction_hidden_dim, projection_dim)
        self.target = momentum_copy(nn.ModuleDict({"encoder": encoder, "projector": self.projector}))
        self.loss = BYOLLoss()
        self.base_momentum = check_momentum(base_momentum)
        self.register_buffer("current_momentum", torch.tensor(self.base_momentum))

    def _target(self, view: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.target["projector"](self.target["encoder"](view))

    def forward(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        view1, view2 = self.views(batch)[:2]
        z1, z2 = self.projector(self.encoder(view1)), self.projector(self.encoder(view2))
        p1, p2 = self.predictor(z1), self.predictor(z2)
        loss = self.loss(p1, p2, self._target(view1), self._target(view2))
        return loss, detached_logs(loss, embeddings=z1, momentum=self.current_momentum)

    def on_train_step_end(self, step: int, max_steps: int) -> None:
        tau = cosine_momentum(step, max_steps, self.base_momentum)
        self.current_momentum.fill_(tau)
        ema_update_(self.target["encoder"], self.encoder, tau)
        ema_update_(self.target["projector"], self.projector, tau)
