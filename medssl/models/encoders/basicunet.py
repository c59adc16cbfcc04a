"""The encoder half of MONAI's ``BasicUNet`` (Falk et al. 2019, "U-Net: deep learning for cell
counting, detection, and morphometry"), transferable into ``monai.networks.nets.BasicUNet``.

Modules ``conv_0`` (two 3x3 convs at full resolution) and ``down_1..down_4`` (max pool then two
convs), adopted from a ``BasicUNet`` built with the same arguments, so parameter names match.
MONAI's other ``UNet`` class nests its encoder and decoder in one recursive ``Sequential``, so it has
no separable encoder half; ``basicunet`` is the UNet of this registry.

Feature maps: strides ``1, 2, 4, 8, 16`` with channels ``features[0..4]``.

Example:
    >>> import torch
    >>> encoder = BasicUNetEncoder(spatial_dims=2, features=(8, 8, 16, 32, 64, 8))
    >>> encoder(torch.randn(2, 1, 32, 32)).shape
    torch.Size([2, 64])
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from monai.networks.nets import BasicUNet
from torch import nn

from medssl.errors import ConfigError
from medssl.models.base import Encoder


class BasicUNetEncoder(Encoder):
    """``conv_0`` and ``down_1..4`` of a ``BasicUNet`` as an :class:`Encoder`.

    Args:
        spatial_dims, in_channels: 2 or 3; input channels.
        features: the six ``BasicUNet`` widths (five encoder levels + the last decoder level);
            MONAI's default ``(32, 32, 64, 128, 256, 32)``.
        act, norm, bias, dropout: as in ``BasicUNet``.
    """

    network_modules = ("conv_0", "down_1", "down_2", "down_3", "down_4")
    segmentation_network = "BasicUNet"

    def __init__(self, spatial_dims: int = 3, in_channels: int = 1,
                 features: Sequence[int] = (32, 32, 64, 128, 256, 32),
                 act: Any = ("LeakyReLU", {"negative_slope": 0.1, "inplace": True}),
                 norm: Any = ("instance", {"affine": True}), bias: bool = True, dropout: float = 0.0,
                 name: str = "basicunet"):
        features = tuple(int(f) for f in features)
        if len(features) != 6 or min(features) < 1:
            raise ConfigError(f"encoder {name!r}: features must be six positive integers, got {features}")
        args = {"features": features, "act": act, "norm": norm, "bias": bias, "dropout": dropout}
        super().__init__(name, spatial_dims, in_channels, args)
        self._network_args = dict(args)
        network = BasicUNet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=1, **args)
        self.conv_0 = network.conv_0
        self.down_1, self.down_2 = network.down_1, network.down_2
        self.down_3, self.down_4 = network.down_3, network.down_4
        self.feature_channels = list(features[:5])

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.check_input(x)
        x0 = self.conv_0(x)
        x1 = self.down_1(x0)
        x2 = self.down_2(x1)
        x3 = self.down_3(x2)
        x4 = self.down_4(x3)
        return [x0, x1, x2, x3, x4]

    def segmentation_network_definition(self, out_channels: int, **args: Any) -> dict[str, Any]:
        """``BasicUNet`` with this encoder's arguments (``upsample`` may be passed)."""
        return {"_target_": "monai.networks.nets.BasicUNet", "spatial_dims": self.spatial_dims,
                "in_channels": self.in_channels, "out_channels": out_channels, **self._network_args, **args}
