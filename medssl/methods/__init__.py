"""Self-supervised methods by name: ``build_method(name, encoder, **method_args) -> SSLMethod``.

| name | family | batch |
| --- | --- | --- |
| ``simclr`` | contrastive, in-batch negatives | 2 views |
| ``moco`` | contrastive, momentum queue (MoCo v2) | 2 views |
| ``byol`` | predictor + momentum target | 2 views |
| ``simsiam`` | predictor + stop-gradient | 2 views |
| ``barlow_twins`` | redundancy reduction | 2 views |
| ``vicreg`` | variance-invariance-covariance | 2 views |
| ``dino`` | self-distillation, multi-crop | 2 global (+ local) views |
| ``nnclr`` | nearest-neighbour contrastive | 2 views |
| ``swav`` | online clustering, multi-crop | 2 global (+ local) views |
| ``local_contrastive`` | region-level contrastive, whole segmentation network | 2 views of one crop |
| ``spark`` | sparse masked modelling, whole segmentation network (CNN) | 1 view |
| ``mae`` | masked autoencoder, visible tokens only (ViT) | 1 view |
| ``simmim`` | masked modelling with a mask token and a linear head (ViT, Swin) | 1 view |
| ``voco`` | volume contrast: a random crop's similarity to base crops = their overlap | base + random crops, overlaps |
| ``pretext`` and ``rotation``, ``jigsaw``, ``relative_position``, ``slice_order``, ``genesis``, ``inpainting``, ``intensity_restoration``, ``corrupted_region`` | pretext task heads | ``{"input", "target"}`` |

See :mod:`medssl.methods.base` for the interface the engine uses and docs/methods.md for the papers,
defaults and when to use which.

Example:
    >>> from medssl.models import build_encoder
    >>> method = build_method("vicreg", build_encoder("resnet10_tiny"), projection_hidden_dim=64, projection_dim=64)
    >>> method.batch_kind, method.num_views
    ('views', 2)
"""

from medssl.methods.barlow_twins import BarlowTwins
from medssl.methods.base import SSLMethod
from medssl.methods.byol import BYOL
from medssl.methods.dino import DINO
from medssl.methods.local_contrastive import LocalContrastive
from medssl.methods.mae import MAE
from medssl.methods.moco import MoCo
from medssl.methods.momentum import cosine_momentum, ema_update_, momentum_copy
from medssl.methods.nnclr import NNCLR
from medssl.methods.pretext import PRETEXT_TASKS, PretextMethod
from medssl.methods.registry import build_method, list_methods, method_arguments, register_method
from medssl.methods.simclr import SimCLR
from medssl.methods.simmim import SimMIM
from medssl.methods.simsiam import SimSiam
from medssl.methods.spark import SparK
from medssl.methods.swav import SwAV
from medssl.methods.vicreg import VICReg
from medssl.methods.voco import VoCo

__all__ = [
    "BYOL",
    "BarlowTwins",
    "DINO",
    "LocalContrastive",
    "MAE",
    "MoCo",
    "NNCLR",
    "PRETEXT_TASKS",
    "PretextMethod",
    "SSLMethod",
    "SimCLR",
    "SimMIM",
    "SimSiam",
    "SparK",
    "SwAV",
    "VICReg",
    "VoCo",
    "build_method",
    "cosine_momentum",
    "ema_update_",
    "list_methods",
    "method_arguments",
    "momentum_copy",
    "register_method",
]
