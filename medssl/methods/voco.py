"""VoCo: volume contrast, predicting where a random crop lies among base crops of the same volume.

Paper: Wu et al., "VoCo: A Simple-yet-Effective Volume Contrastive Learning Framework for 3D Medical
Image Analysis", CVPR 2024 (github.com/Luffy03/VoCo). Organs keep consistent positions in a body, so
a crop's embedding should tell where it lies. From one volume (:mod:`medssl.transforms.voco_crops`,
``pretrain.augmentation.view_mode: voco``): ``n`` base crops side by side covering a region and
``R`` random crops inside it, with ``y_{r,b}`` the fraction of random crop ``r`` inside base crop
``b``. Every crop is embedded (encoder, pooled, projector: ``z``) and

    s_{r,b} = relu( cos(z_r, stopgrad(z_b)) )

is trained to equal the overlap (the position-prediction loss of the reference code, which scores
the overlapping and the disjoint pairs apart; the paper's equation 3 writes one term for both)::

    L_pred = - sum_{r,b} y_{r,b} log(1 - |y_{r,b} - s_{r,b}|) / sum_{r,b} y_{r,b}
             + mean_{(r,b): y_{r,b} = 0} s_{r,b}^2

plus the regulariser that keeps the base crops of one volume apart (they are the "classes" a
random crop is assigned to; gradients flow into them here)::

    L_reg = 2 / (n (n - 1)) sum_{b < b'} relu( cos(z_b, z_b') )

    L = L_pred + reg_weight * L_reg          (averaged over the volumes of the batch)

Batches: ``{"views": [base_1..base_n, random_1..random_R], "overlaps": (B, R, n)}``. Logged:
``pred_loss``, ``reg_loss`` and ``position_accuracy`` (the base crop of largest similarity is the one
of largest overlap). The encoder is exported as for any joint-embedding method.

Example:
    >>> import torch
    >>> from medssl.models import build_encoder
    >>> method = VoCo(build_encoder("resnet10_tiny", spatial_dims=2), projection_hidden_dim=32, projection_dim=16)
    >>> views = [torch.rand(2, 1, 32, 32) for _ in range(4 + 2)]
    >>> overlaps = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]).expand(2, -1, -1)
    >>> loss, logs = method({"views": views, "overlaps": overlaps})
    >>> bool(loss > 0), sorted(k for k in logs if k != "embeddings")
    (True, ['loss', 'position_accuracy', 'pred_loss', 'reg_loss'])
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F

from medssl.errors import ConfigError, DataError
from medssl.methods.base import SSLMethod, detached_logs
from medssl.methods.registry import register_method
from medssl.models.base import Encoder
from medssl.models.heads import ProjectionHead

EPS = 1e-6


def position_prediction_loss(similarity: torch.Tensor, overlaps: torch.Tensor) -> torch.Tensor:
    """``L_pred`` of the module docstring for ``(B, R, n)`` similarities and overlaps."""
    overlaps = overlaps.float()
    distance = (overlaps - similarity).abs()
    positive = -(overlaps * torch.log((1.0 - distance).clamp_min(EPS))).sum() / overlaps.sum().clamp_min(EPS)
    disjoint = (overlaps == 0).float()
    negative = (disjoint * similarity.square()).sum() / disjoint.sum().clamp_min(1.0)
    return positive + negative


def base_separation_loss(bases: torch.Tensor) -> torch.Tensor:
    """``L_reg`` of the module docstring for ``(B, n, D)`` base-crop embeddings."""
    unit = F.normalize(bases, dim=-1)
    similarity = F.relu(unit @ unit.transpose(1, 2))
    n = bases.shape[1]
    upper = torch.ones(n, n, device=bases.device, dtype=torch.bool).triu(diagonal=1)
    return similarity[:, upper].mean()


@register_method("voco")
class VoCo(SSLMethod):
    """Volume contrast (see the module docstring).

    Args:
        encoder: a registry encoder.
        projection_hidden_dim, projection_dim: the projector MLP (2048, 2048, as the reference code's
            two-layer head on the pooled features).
        reg_weight: weight of the base-separation regulariser (1.0).
    """

    name = "voco"
    requires_view_mode = "voco"

    def __init__(self, encoder: Encoder, projection_hidden_dim: int = 2048, projection_dim: int = 2048,
                 reg_weight: float = 1.0):
        super().__init__(encoder, num_views=1)
        if reg_weight < 0:
            raise ConfigError(f"method 'voco': reg_weight must be >= 0, got {reg_weight}")
        self.reg_weight = float(reg_weight)
        self.projector = ProjectionHead(encoder.feature_dim, projection_hidden_dim, projection_dim, num_layers=2)

    def crops(self, batch: Mapping[str, Any]) -> tuple[list[torch.Tensor], torch.Tensor, int]:
        """``(views, overlaps (B, R, n), n)`` checked against each other."""
        if "overlaps" not in batch:
            raise DataError("method 'voco' needs base crops, random crops and their overlaps: set "
                            "pretrain.augmentation.view_mode: voco")
        overlaps = batch["overlaps"]
        views = self.views(batch, minimum=2)
        if overlaps.ndim != 3 or overlaps.shape[0] != views[0].shape[0] or sum(overlaps.shape[1:]) != len(views):
            raise DataError(f"voco: overlaps {tuple(overlaps.shape)} do not fit {len(views)} crops of batch "
                            f"{views[0].shape[0]} (expected (B, random crops, base crops))")
        return views, overlaps, int(overlaps.shape[2])

    def forward(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        views, overlaps, n = self.crops(batch)
        batch_size, count = views[0].shape[0], len(views)
        features = self.encoder(torch.cat(views, dim=0))  # (count * B, F), crop-major
        z = self.projector(features).float().reshape(count, batch_size, -1).transpose(0, 1)  # (B, count, D)
        bases, randoms = z[:, :n], z[:, n:]
        unit_bases = F.normalize(bases.detach(), dim=-1)
        similarity = F.relu(F.normalize(randoms, dim=-1) @ unit_bases.transpose(1, 2))  # (B, R, n)
        pred_loss = position_prediction_loss(similarity, overlaps)
        reg_loss = base_separation_loss(bases)
        loss = pred_loss + self.reg_weight * reg_loss
        accuracy = (similarity.argmax(dim=2) == overlaps.argmax(dim=2)).float().mean()
        embeddings = features.reshape(count, batch_size, -1)[:n].flatten(0, 1)
        return loss, detached_logs(loss, embeddings=embeddings, pred_loss=pred_loss, reg_loss=reg_loss,
                                   position_accuracy=accuracy)
