"""DINO (Caron et al. 2021, "Emerging Properties in Self-Supervised Vision Transformers").

Self-distillation without labels: a student (encoder + DINO head) matches the output distribution
of a teacher, its momentum average, across crops. The teacher sees the global crops, the student
all crops (global and local, multi-crop)::

    L = mean_{a in global, b != a} H( softmax((t_a - c)/tau_t), softmax(s_b / tau_s) )
    c <- 0.9 c + 0.1 mean(t);   teacher <- tau teacher + (1 - tau) student, tau: 0.996 -> 1 (cosine)

Defaults (reference): head 3-layer MLP 2048 -> bottleneck 256 -> weight-normalised 65536
prototypes (``norm_last_layer``), ``tau_s = 0.1``, ``tau_t = 0.04`` (warm-up optional), centre
momentum 0.9, teacher momentum 0.996. ``freeze_last_layer_steps`` (reference: one epoch) gives the
last layer zero gradients for that many steps. Crops of the same size share one forward, as in the
reference's multi-crop wrapper. The teacher's temperature and centre are in buffers (checkpointed).

Batches: ``{"views": [global_1, global_2, local_1, ...]}``; views beyond the first two are local
crops (``pretrain.augmentation.local_crops``). ViT encoders have a fixed input size, so local crops
of another size need a CNN encoder.

When to use: strong with ViTs and multi-crop; with 65536 outputs the head is large, so reduce
``out_dim`` (4096-16384) for small 3D runs.

Example:
    >>> import torch
    >>> from medssl.models import build_encoder
    >>> method = DINO(build_encoder("resnet10_tiny", spatial_dims=2), out_dim=64, hidden_dim=32, bottleneck_dim=16)
    >>> views = [torch.randn(4, 1, 32, 32), torch.randn(4, 1, 32, 32), torch.randn(4, 1, 16, 16)]
    >>> loss, logs = method({"views": views})
    >>> method.on_train_step_end(step=1, max_steps=10)
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from medssl.losses import DINOLoss
from medssl.methods.base import SSLMethod, detached_logs
from medssl.methods.momentum import check_momentum, cosine_momentum, ema_update_, momentum_copy
from medssl.methods.registry import register_method
from medssl.models.base import Encoder
from medssl.models.heads import DINOHead


@register_method("dino")
class DINO(SSLMethod):
    """DINO: student and momentum teacher with DINO heads, multi-crop distillation.

    Args:
        encoder: a registry encoder.
        out_dim, hidden_dim, bottleneck_dim, head_layers, use_bn_in_head, norm_last_layer: the head
            (65536, 2048, 256, 3, False, True).
        teacher_temp, warmup_teacher_temp, warmup_teacher_temp_steps, student_temp, center_momentum:
            the loss (0.04, 0.04, 0, 0.1, 0.9).
        base_momentum: teacher momentum at step 0 (0.996), cosine to 1.
        freeze_last_layer_steps: steps with a frozen head output layer (0).
        num_local_views: local crops the data are expected to supply (informational; the
            forward uses whatever arrives).

    The exported encoder is the teacher's (``export_key``), as in the paper, which evaluates the
    teacher: the momentum average is the better network through most of training.
    """

    name = "dino"
    export_key = "teacher.encoder"

    def __init__(self, encoder: Encoder, out_dim: int = 65536, hidden_dim: int = 2048, bottleneck_dim: int = 256,
                 head_layers: int = 3, use_bn_in_head: bool = False, norm_last_layer: bool = True,
                 teacher_temp: float = 0.04, warmup_teacher_temp: float = 0.04, warmup_teacher_temp_steps: int = 0,
                 student_temp: float = 0.1, center_momentum: float = 0.9, base_momentum: float = 0.996,
                 freeze_last_layer_steps: int = 0, num_local_views: int = 0):
        super().__init__(encoder, num_views=2, num_local_views=num_local_views)
        self.head = DINOHead(encoder.feature_dim, out_dim, hidden_dim, bottleneck_dim, head_layers,
                             use_bn_in_head, norm_last_layer)
        self.teacher = momentum_copy(nn.ModuleDict({"encoder": encoder, "head": self.head}))
        self.loss = DINOLoss(out_dim, teacher_temp, warmup_teacher_temp, warmup_teacher_temp_steps,
                             student_temp, center_momentum)
        self.base_momentum = check_momentum(base_momentum)
        self.freeze_last_layer_steps = int(freeze_last_layer_steps)
        self.register_buffer("current_momentum", torch.tensor(self.base_momentum))

    def forward(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        views = self.views(batch)
        frozen = int(self.loss.step) < self.freeze_last_layer_steps
        student_features = self.encode_views(views, concatenate=True)
        student = [self.head(h, freeze_last_layer=frozen) for h in student_features]
        with torch.no_grad():
            teacher_features = self.encode_views(views[:2], encoder=self.teacher["encoder"], concatenate=True)
            teacher = [self.teacher["head"](h) for h in teacher_features]
        loss = self.loss(student, teacher)
        return loss, detached_logs(loss, embeddings=student_features[0], momentum=self.current_momentum,
                                   teacher_temp=self.loss.teacher_temperature())

    def on_train_step_end(self, step: int, max_steps: int) -> None:
        tau = cosine_momentum(step, max_steps, self.base_momentum)
        self.current_momentum.fill_(tau)
        ema_update_(self.teacher["encoder"], self.encoder, tau)
        ema_update_(self.teacher["head"], self.head, tau)
        self.loss.set_step(step)
