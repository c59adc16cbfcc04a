"""Encoders over MONAI networks (2D and 3D), SSL heads, weight transfer and export.

- :func:`build_encoder` / :func:`list_encoders` / :func:`encoder_from_config`: the registry
  (:mod:`medssl.models.registry`).
- :mod:`medssl.models.heads`: :class:`ProjectionHead`, :class:`PredictionHead`, :class:`DINOHead`,
  :class:`Prototypes`.
- :mod:`medssl.models.transfer`: :func:`build_segmentation_network`, :func:`load_encoder_weights`
  (-> :class:`TransferReport`), :func:`build_classifier`.
- :mod:`medssl.models.export`: :func:`export_encoder`, :func:`load_pretrained`, :func:`load_pretrained_decoder`.
- :mod:`medssl.models.nnunet_plans` and the ``nnunet`` encoder: the network nnU-Net v2 planned;
  :mod:`medssl.models.export_nnunet` (a checkpoint for ``nnUNetv2_train -pretrained_weights``) and
  :mod:`medssl.models.export_bundle` (a MONAI bundle): ``medssl export --to nnunet|monai-bundle``.

Example:
    >>> import torch
    >>> from medssl.models import build_encoder
    >>> encoder = build_encoder("resnet10_tiny", spatial_dims=3)
    >>> encoder(torch.randn(2, 1, 32, 32, 32)).shape
    torch.Size([2, 128])
"""

from medssl.models.base import Encoder
from medssl.models.decoders import LightDecoder
from medssl.models.export import export_encoder, load_pretrained, load_pretrained_decoder, read_card
from medssl.models.heads import DINOHead, PredictionHead, ProjectionHead, Prototypes
from medssl.models.registry import (
    build_encoder,
    describe_encoders,
    encoder_class,
    encoder_from_config,
    list_encoders,
    register_encoder,
)
from medssl.models.transfer import (
    EncoderClassifier,
    TransferReport,
    build_classifier,
    build_segmentation_network,
    load_decoder_weights,
    load_encoder_weights,
)

__all__ = [
    "DINOHead",
    "Encoder",
    "EncoderClassifier",
    "LightDecoder",
    "PredictionHead",
    "ProjectionHead",
    "Prototypes",
    "TransferReport",
    "build_classifier",
    "build_encoder",
    "build_segmentation_network",
    "describe_encoders",
    "encoder_class",
    "encoder_from_config",
    "export_encoder",
    "list_encoders",
    "load_decoder_weights",
    "load_encoder_weights",
    "load_pretrained",
    "load_pretrained_decoder",
    "read_card",
    "register_encoder",
]
