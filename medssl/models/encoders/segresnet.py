"""SegResNet's encoder (Myronenko 2018, "3D MRI brain tumor segmentation using autoencoder
regularization"), transferable into ``monai.networks.nets.SegResNet``.

The encoder is SegResNet's ``convInit`` (3x3 conv to ``init_filters``) and ``down_layers`` (stage
``i``: a stride-2 conv for ``i > 0`` then ``blocks_down[i]`` residual blocks with group norm at
``init_filters * 2**i`` channels), the modules of a ``SegResNet`` built with the same arguments and
adopted under the same names; the rest of that network (its decoder) is dropped.

Feature maps: one per stage, strides ``1, 2, 4, 8`` for the default four stages. The first stage
runs at full resolution, which makes SegResNet accurate but slower than a ResNet stem on CPU.

Example:
    >>> import torch
    >>> encoder = SegResNetEncoder(spatial_dims=2, init_filters=8, blocks_down=(1, 1, 1))
    >>> encoder(torch.randn(2, 1, 32, 32)).shape
    torch.Size([2, 32])
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from monai.networks.nets import SegResNet
from torch import nn

from medssl.errors import ConfigError
from medssl.models.base import Encoder, instantiate_definition


class SegResNetEncoder(Encoder):
    """SegResNet's ``convInit`` + ``down_layers`` as an :class:`Encoder`.

    Args:
        spatial_dims, in_channels: 2 or 3; input channels.
        init_filters: channels of the first stage (8 in MONAI; must be divisible by ``num_groups``).
        blocks_down: residual blocks per stage (MONAI's ``(1, 2, 2, 4)``).
        norm, act: as in ``SegResNet`` (group norm with 8 groups, ReLU).
    """

    network_modules = ("convInit", "down_layers")
    segmentation_network = "SegResNet"

    def __init__(self, spatial_dims: int = 3, in_channels: int = 1, init_filters: int = 8,
                 blocks_down: Sequence[int] = (1, 2, 2, 4), norm: Any = ("GROUP", {"num_groups": 8}),
                 act: Any = ("RELU", {"inplace": True}), name: str = "segresnet"):
        blocks_down = tuple(int(b) for b in blocks_down)
        if init_filters < 1 or not blocks_down or min(blocks_down) < 1:
            raise ConfigError(f"encoder {name!r}: init_filters and blocks_down must be positive, "
                              f"got {init_filters} and {blocks_down}")
        args = {"init_filters": int(init_filters), "blocks_down": blocks_down, "norm": norm, "act": act}
        super().__init__(name, spatial_dims, in_channels, args)
        self._network_args = dict(args)
        network = SegResNet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=1,
                            blocks_up=(1,) * (len(blocks_down) - 1), **args)
        self.convInit = network.convInit
        self.down_layers = network.down_layers
        self.feature_channels = [int(init_filters) * 2**i for i in range(len(blocks_down))]

    @property
    def input_multiple(self) -> int:
        """``2 ** (stages - 1)``: one stride-2 convolution per stage after the first."""
        return 2 ** (len(self.down_layers) - 1)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.check_input(x)
        x = self.convInit(x)
        features = []
        for stage in self.down_layers:
            x = stage(x)
            features.append(x)
        return features

    def segmentation_network_definition(self, out_channels: int, **args: Any) -> dict[str, Any]:
        """``SegResNet`` with this encoder's arguments (``blocks_up`` defaults to one block per
        decoder stage)."""
        args.setdefault("blocks_up", (1,) * (len(self._network_args["blocks_down"]) - 1))
        return {"_target_": "monai.networks.nets.SegResNet", "spatial_dims": self.spatial_dims,
                "in_channels": self.in_channels, "out_channels": out_channels, **self._network_args, **args}
