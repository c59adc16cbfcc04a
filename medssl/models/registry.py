"""The encoder registry: ``build_encoder(name, spatial_dims, in_channels, **args)`` by name.

| name | MONAI network it transfers to | pooled width (defaults) |
| --- | --- | --- |
| ``resnet10``, ``resnet18``, ``resnet34``, ``resnet50`` | ``FlexibleUNet`` (that backbone) | 512 (2048 for resnet50) |
| ``resnet10_tiny`` | ``FlexibleUNet`` (resnet10 at widths 16-128) | 128 |
| ``segresnet`` | ``SegResNet`` | 64 |
| ``basicunet`` | ``BasicUNet`` | 256 |
| ``swin`` | ``SwinUNETR`` | 384 |
| ``vit`` | ``UNETR`` | 768 |
| ``nnunet`` | the network nnU-Net v2 planned (``PlainConvUNet``, ``ResidualEncoderUNet``) | the plans' deepest width |

``resnet10_tiny`` is the CPU demo/test encoder: ``resnet10`` with ``widths=(16, 32, 64, 128)``
(0.9 M parameters; a forward+backward of 8 patches of 32^3 takes about 0.03 s on one core). Its
``config`` records ``name: resnet10`` and the widths, so it rebuilds without the alias.

Example:
    >>> enc = build_encoder("resnet10_tiny", spatial_dims=2)
    >>> enc.config
    {'name': 'resnet10', 'spatial_dims': 2, 'in_channels': 1, 'args': {'widths': [16, 32, 64, 128]}}
    >>> encoder_from_config(enc.config).feature_dim
    128
    >>> "swin" in list_encoders()
    True
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from medssl.errors import ConfigError
from medssl.models.base import Encoder
from medssl.models.encoders import (
    BasicUNetEncoder,
    NnUNetEncoder,
    ResNetEncoder,
    SegResNetEncoder,
    SwinEncoder,
    ViTEncoder,
)

TINY_RESNET_WIDTHS = (16, 32, 64, 128)


@dataclass(frozen=True)
class EncoderEntry:
    """A registry entry: ``builder(spatial_dims=..., in_channels=..., **args) -> Encoder``."""

    name: str
    builder: Callable[..., Encoder]
    description: str
    encoder_class: type[Encoder]


_REGISTRY: dict[str, EncoderEntry] = {}


def register_encoder(name: str, builder: Callable[..., Encoder], description: str,
                     encoder_class: type[Encoder] | None = None) -> None:
    """Add an encoder to the registry (a later registration under the same name replaces it).

    ``encoder_class`` is the :class:`Encoder` subclass the builder returns (the builder itself when
    it is a class).
    """
    if encoder_class is None:
        if not (isinstance(builder, type) and issubclass(builder, Encoder)):
            raise TypeError(f"register_encoder({name!r}): pass encoder_class for a builder function")
        encoder_class = builder
    _REGISTRY[name] = EncoderEntry(name, builder, description, encoder_class)


def encoder_class(name: str) -> type[Encoder]:
    """The :class:`Encoder` subclass registered as ``name`` (without building it)."""
    if name not in _REGISTRY:
        raise ConfigError(f"unknown encoder {name!r}; available: {', '.join(list_encoders())}")
    return _REGISTRY[name].encoder_class


def list_encoders() -> list[str]:
    """Registered encoder names, sorted."""
    return sorted(_REGISTRY)


def describe_encoders() -> dict[str, str]:
    """``{name: one-line description}`` for documentation and ``--help`` texts."""
    return {name: _REGISTRY[name].description for name in list_encoders()}


def build_encoder(name: str, spatial_dims: int = 3, in_channels: int = 1, **args: Any) -> Encoder:
    """Build a registered encoder; unknown names or arguments raise :class:`ConfigError`."""
    if name not in _REGISTRY:
        raise ConfigError(f"unknown encoder {name!r} (pretrain.encoder.name); available: {', '.join(list_encoders())}")
    builder = _REGISTRY[name].builder
    accepted = inspect.signature(builder).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values()):
        unknown = sorted(set(args) - set(accepted))
        if unknown:
            allowed = sorted(set(accepted) - {"spatial_dims", "in_channels", "name"})
            raise ConfigError(f"encoder {name!r} does not take argument(s) {unknown} "
                              f"(pretrain.encoder.args); it accepts {allowed}")
    encoder = builder(spatial_dims=spatial_dims, in_channels=in_channels, **args)
    encoder.registered_name = name  # the name asked for (resnet10_tiny), where config["name"] may be the base
    return encoder


def encoder_from_config(config: Mapping[str, Any] | Any) -> Encoder:
    """Rebuild an encoder from its ``config`` dict or an ``EncoderConfig`` section
    (``name``, ``spatial_dims``, ``in_channels``, ``args``)."""
    if not isinstance(config, Mapping):
        config = config.model_dump() if hasattr(config, "model_dump") else vars(config)
    missing = {"name"} - set(config)
    if missing:
        raise ConfigError(f"encoder config {dict(config)} lacks {sorted(missing)}")
    return build_encoder(config["name"], spatial_dims=int(config.get("spatial_dims", 3)),
                         in_channels=int(config.get("in_channels", 1)), **dict(config.get("args") or {}))


def _resnet(depth: str) -> Callable[..., Encoder]:
    def build(spatial_dims: int = 3, in_channels: int = 1, widths=(64, 128, 256, 512)) -> Encoder:
        return ResNetEncoder(depth=depth, spatial_dims=spatial_dims, in_channels=in_channels, widths=widths)

    return build


def _tiny_resnet(spatial_dims: int = 3, in_channels: int = 1) -> Encoder:
    return ResNetEncoder(depth="resnet10", spatial_dims=spatial_dims, in_channels=in_channels,
                         widths=TINY_RESNET_WIDTHS)


for _depth in ("resnet10", "resnet18", "resnet34", "resnet50"):
    register_encoder(_depth, _resnet(_depth), f"MONAI {_depth} backbone (FlexibleUNet encoder); arg: widths",
                     ResNetEncoder)
register_encoder("resnet10_tiny", _tiny_resnet, "resnet10 at widths (16, 32, 64, 128): fast CPU demos and tests",
                 ResNetEncoder)
register_encoder("segresnet", SegResNetEncoder, "SegResNet encoder; args: init_filters, blocks_down, norm, act")
register_encoder("basicunet", BasicUNetEncoder, "BasicUNet encoder half; args: features, act, norm, bias, dropout")
register_encoder("swin", SwinEncoder, "SwinUNETR's swinViT; args: feature_size, depths, num_heads, window_size, ...")
register_encoder("nnunet", NnUNetEncoder, "the network nnU-Net v2 planned (PlainConvUNet, ResidualEncoderUNet); "
                  "args: plans (nnUNetPlans.json), configuration (3d_fullres); needs medssl[nnunet]")
register_encoder("vit", ViTEncoder, "UNETR's ViT; args: img_size, patch_size, hidden_size, mlp_dim, num_layers, ...")
