"""Self-supervised losses, each an ``nn.Module`` called on embeddings of two (or more) views.

One family per file, each following its paper's reference pseudo-code (normalisation, averaging,
which terms are halved):

| loss | paper | call |
| --- | --- | --- |
| :class:`NTXentLoss` | SimCLR (Chen et al. 2020) | ``loss(z1, z2)`` |
| :class:`InfoNCEQueueLoss` | MoCo v2 (Chen et al. 2020) | ``loss(q, k)``, queue in a buffer |
| :class:`BYOLLoss` / :class:`SimSiamLoss` | BYOL (Grill et al. 2020) / SimSiam (Chen & He 2021) | ``loss(p1, p2, z1, z2)`` |
| :class:`BarlowTwinsLoss` | Barlow Twins (Zbontar et al. 2021) | ``loss(z1, z2)`` |
| :class:`VICRegLoss` | VICReg (Bardes et al. 2022) | ``loss(z1, z2)`` |
| :class:`DINOLoss` | DINO (Caron et al. 2021) | ``loss(student_crops, teacher_crops)``, centre in a buffer |
| :class:`NNCLRLoss` | NNCLR (Dwibedi et al. 2021) | ``loss(z1, z2, p1, p2)``, support set in a buffer |
| :class:`SwAVLoss` | SwAV (Caron et al. 2020) | ``loss(prototype_scores_per_crop)`` |

Losses that couple the samples of a batch gather them over ranks with
:func:`medssl.utils.distributed.gather_with_grad`, so a multi-process run computes the loss of the
global batch.

Example:
    >>> import torch
    >>> from medssl.losses import BarlowTwinsLoss
    >>> BarlowTwinsLoss()(torch.randn(16, 32), torch.randn(16, 32)).ndim
    0
"""

from medssl.losses.barlow import BarlowTwinsLoss
from medssl.losses.contrastive import InfoNCEQueueLoss, NTXentLoss
from medssl.losses.dino import DINOLoss
from medssl.losses.negative_cosine import BYOLLoss, SimSiamLoss, cosine_to_target
from medssl.losses.nnclr import NNCLRLoss
from medssl.losses.queue import EmbeddingQueue
from medssl.losses.swav import SwAVLoss, sinkhorn_knopp
from medssl.losses.vicreg import VICRegLoss

__all__ = [
    "BYOLLoss",
    "BarlowTwinsLoss",
    "DINOLoss",
    "EmbeddingQueue",
    "InfoNCEQueueLoss",
    "NNCLRLoss",
    "NTXentLoss",
    "SimSiamLoss",
    "SwAVLoss",
    "VICRegLoss",
    "cosine_to_target",
    "sinkhorn_knopp",
]
