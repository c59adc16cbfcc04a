"""The ``Encoder`` interface every registry entry implements.

An encoder is the part of a MONAI segmentation network that self-supervised pretraining trains and
fine-tuning reuses. Its parameters carry *the same names* as inside that network (for example
``encoder.layer1.0.conv1.weight`` in FlexibleUNet, ``swinViT.layers1.0...`` in SwinUNETR), so the
encoder's ``state_dict`` is a subset of the network's and transfer is a plain
``network.load_state_dict(encoder_state, strict=False)``.

Contract (docs/architecture.md):

- ``forward(x) -> (B, feature_dim)``: global average pooled deepest features (the SSL embedding).
- ``forward_features(x) -> list[Tensor]``: feature maps shallow to deep, as the segmentation
  decoder consumes them; ``feature_channels`` gives their channel counts.
- ``feature_dim``, ``spatial_dims``, ``in_channels``, ``config`` (a dict that rebuilds the encoder
  with :func:`medssl.models.encoder_from_config`).
- ``network_modules``: the top-level names of the encoder's modules inside the segmentation network
  (what a transfer report checks for missing weights).

Example:
    >>> import torch
    >>> from medssl.models import build_encoder
    >>> encoder = build_encoder("resnet10", spatial_dims=2, widths=(8, 16, 32, 64))
    >>> encoder(torch.randn(2, 1, 32, 32)).shape
    torch.Size([2, 64])
    >>> [f.shape[1] for f in encoder.forward_features(torch.randn(2, 1, 32, 32))] == encoder.feature_channels
    True
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from medssl.errors import ConfigError


class Encoder(nn.Module):
    """Base class: subclasses build their MONAI modules and implement :meth:`forward_features`.

    Subclasses set ``feature_channels`` (list, shallow to deep) and ``config`` in ``__init__`` and
    declare ``network_modules`` and ``segmentation_network`` (the MONAI class name).
    """

    network_modules: ClassVar[tuple[str, ...]] = ()
    segmentation_network: ClassVar[str] = ""

    def __init__(self, name: str, spatial_dims: int, in_channels: int, args: dict[str, Any]):
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ConfigError(f"encoder {name!r}: spatial_dims must be 2 or 3, got {spatial_dims}")
        if in_channels < 1:
            raise ConfigError(f"encoder {name!r}: in_channels must be >= 1, got {in_channels}")
        self.name = name
        self.spatial_dims = int(spatial_dims)
        self.in_channels = int(in_channels)
        self.config: dict[str, Any] = {
            "name": name,
            "spatial_dims": self.spatial_dims,
            "in_channels": self.in_channels,
            "args": _plain(args),
        }
        self.feature_channels: list[int] = []

    @property
    def input_multiple(self) -> int:
        """Every spatial size of a patch given to this encoder's segmentation network must be a
        multiple of this (the network's total down-sampling stride, where its decoder needs the
        skips to line up); 1 when any size works."""
        return 1

    @property
    def feature_dim(self) -> int:
        """Width of the pooled embedding (the deepest feature map's channels)."""
        return self.feature_channels[-1]

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Global average pooled deepest feature map, ``(B, feature_dim)``."""
        deepest = self.forward_features(x)[-1]
        return deepest.flatten(2).mean(dim=2)

    def check_input(self, x: torch.Tensor) -> None:
        """A clear error for a batch of the wrong rank or channel count."""
        if x.ndim != self.spatial_dims + 2:
            raise ValueError(f"encoder {self.name!r} ({self.spatial_dims}D) expects (B, C, *spatial) with "
                             f"{self.spatial_dims} spatial dims, got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"encoder {self.name!r} expects {self.in_channels} input channel(s), got {x.shape[1]}")

    def share_into(self, network: nn.Module) -> None:
        """Make ``network``'s encoder modules this encoder's own (shared, not copied): training the
        network then trains the encoder. Subclasses whose network refers to its encoder twice
        (nnU-Net's decoder keeps a reference) extend it."""
        for name in type(self).network_modules:
            setattr(network, name, getattr(self, name))

    def to_network_order(self, x: torch.Tensor) -> torch.Tensor:
        """A ``(B, C, *spatial)`` tensor in medssl's axis order as the encoder's modules see it
        (the same here; nnU-Net's networks permute to the plans' axis order)."""
        return x

    def segmentation_network_definition(self, out_channels: int, **args: Any) -> dict[str, Any]:  # pragma: no cover
        """The segmentation network whose encoder part matches this encoder's weights, as a MONAI
        bundle config component: ``{"_target_": "monai.networks.nets.X", **constructor_args}``."""
        raise NotImplementedError

    def build_segmentation_network(self, out_channels: int, **args: Any) -> nn.Module:
        """The segmentation network whose encoder part matches this encoder's weights (fresh weights),
        built from :meth:`segmentation_network_definition`."""
        return instantiate_definition(self.segmentation_network_definition(out_channels, **args))


def instantiate_definition(definition: dict[str, Any]) -> nn.Module:
    """``{"_target_": "dotted.Class", **kwargs}`` -> ``Class(**kwargs)`` (the bundle config
    component, built without a ``$`` expression)."""
    import pydoc

    kwargs = dict(definition)
    target = kwargs.pop("_target_")
    network_class = pydoc.locate(target)
    if network_class is None:
        raise ConfigError(f"segmentation network {target!r} cannot be imported")
    return network_class(**kwargs)


def _plain(value: Any) -> Any:
    """Tuples to lists, recursively, so the config survives JSON and YAML round trips unchanged."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value
