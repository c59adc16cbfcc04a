"""Encoder families over MONAI networks, one file each; built through :mod:`medssl.models.registry`."""

from medssl.models.encoders.basicunet import BasicUNetEncoder
from medssl.models.encoders.nnunet import NnUNetEncoder
from medssl.models.encoders.resnet import ResNetEncoder
from medssl.models.encoders.segresnet import SegResNetEncoder
from medssl.models.encoders.swin import SwinEncoder
from medssl.models.encoders.vit import ViTEncoder

__all__ = ["BasicUNetEncoder", "NnUNetEncoder", "ResNetEncoder", "SegResNetEncoder", "SwinEncoder", "ViTEncoder"]
