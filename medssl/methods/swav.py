"""SwAV (Caron et al. 2020, "Unsupervised Learning of Visual Features by Contrasting Cluster
Assignments").

Online clustering: each crop's normalised embedding is scored against learnable prototypes; the
Sinkhorn-Knopp assignment of one global crop is predicted from every other crop::

    z = normalize(g(f(x))),  scores = z C^T  (C: unit-norm prototypes)
    L = mean_a mean_{b != a} -sum_k Q_a log softmax(scores_b / tau)

Defaults (paper): projector ``Linear(d, 2048)-BN-ReLU-Linear(2048, 128)``, 3000 prototypes,
``tau = 0.1``, 3 Sinkhorn iterations, ``eps = 0.05``, prototypes frozen for the first 313 steps
(``freeze_prototypes_steps``), prototypes re-normalised before every step. ``queue_size > 0`` keeps
that many past embeddings per global crop and adds their scores to the Sinkhorn step from
``queue_start_step`` on (the reference's remedy for small batches; needed when the batch is far
smaller than the number of prototypes). Queue and step are buffers (checkpointed).

When to use: multi-crop clustering; with the small batches of 3D work, set ``queue_size`` (e.g.
3840 as in the reference's small-batch setting) and fewer prototypes.

Example:
    >>> import torch
    >>> from medssl.models import build_encoder
    >>> method = SwAV(build_encoder("resnet10_tiny", spatial_dims=2), projection_hidden_dim=32, projection_dim=16,
    ...               num_prototypes=10, queue_size=16)
    >>> loss, logs = method({"views": [torch.randn(4, 1, 32, 32), torch.randn(4, 1, 32, 32)]})
    >>> int(method.queues[0].num_filled)
    4
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from medssl.errors import ConfigError
from medssl.losses import EmbeddingQueue, SwAVLoss
from medssl.methods.base import SSLMethod, detached_logs
from medssl.methods.registry import register_method
from medssl.models.base import Encoder
from medssl.models.heads import ProjectionHead, Prototypes
from medssl.utils.distributed import gather_no_grad


@register_method("swav")
class SwAV(SSLMethod):
    """SwAV: projector, prototypes, swapped prediction of Sinkhorn assignments.

    Args:
        encoder: a registry encoder.
        projection_hidden_dim, projection_dim: 2048, 128.
        num_prototypes: 3000.
        temperature, sinkhorn_iterations, epsilon: 0.1, 3, 0.05.
        freeze_prototypes_steps: 313.
        queue_size: past embeddings per global crop used in Sinkhorn (0: none).
        queue_start_step: first step that uses the queue (0).
        num_local_views: local crops the data are expected to supply (informational).
    """

    name = "swav"

    def __init__(self, encoder: Encoder, projection_hidden_dim: int = 2048, projection_dim: int = 128,
                 num_prototypes: int = 3000, temperature: float = 0.1, sinkhorn_iterations: int = 3,
                 epsilon: float = 0.05, freeze_prototypes_steps: int = 313, queue_size: int = 0,
                 queue_start_step: int = 0, num_local_views: int = 0):
        super().__init__(encoder, num_views=2, num_local_views=num_local_views)
        if queue_size < 0 or freeze_prototypes_steps < 0 or queue_start_step < 0:
            raise ConfigError("swav: queue_size, freeze_prototypes_steps and queue_start_step must be >= 0")
        self.projector = ProjectionHead(encoder.feature_dim, projection_hidden_dim, projection_dim, num_layers=2)
        self.prototypes = Prototypes(projection_dim, num_prototypes)
        self.loss = SwAVLoss(temperature, sinkhorn_iterations, epsilon, num_assign_views=2)
        self.freeze_prototypes_steps = int(freeze_prototypes_steps)
        self.queue_start_step = int(queue_start_step)
        self.queues = nn.ModuleList([EmbeddingQueue(queue_size, projection_dim) for _ in range(2)]) \
            if queue_size > 0 else nn.ModuleList()
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def forward(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        views = self.views(batch)
        self.prototypes.normalize_()
        step = int(self.step)
        features = self.encode_views(views, concatenate=True)
        embeddings = [F.normalize(self.projector(h), dim=1) for h in features]
        scores = [self.prototypes(z, frozen=step < self.freeze_prototypes_steps) for z in embeddings]
        extra = None
        if len(self.queues) and step >= self.queue_start_step:
            with torch.no_grad():
                extra = [self.prototypes(queue.filled()) for queue in self.queues]
        loss = self.loss(scores, extra_scores=extra)
        if len(self.queues) and self.training:
            for queue, z in zip(self.queues, embeddings[:2]):
                queue.enqueue(gather_no_grad(z.detach()))
        return loss, detached_logs(loss, embeddings=embeddings[0])

    def on_train_step_end(self, step: int, max_steps: int) -> None:
        self.step.fill_(int(step))
