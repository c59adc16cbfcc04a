"""ResNet encoders (10/18/34/50) from MONAI, transferable into ``monai.networks.nets.FlexibleUNet``.

He et al. 2016, "Deep Residual Learning for Image Recognition", in the 2D/3D form of Hara et al.
2018 (MONAI's ``ResNet``, the MedicalNet layout). The encoder *is* the module FlexibleUNet builds as
its ``encoder`` (``monai.networks.nets.resnet.ResNetEncoder``): stem ``conv1`` (kernel 7, stride 2),
``bn1``, max pool, ``layer1..layer4``. Parameters are named ``encoder.conv1.weight``,
``encoder.layer1.0.conv1.weight``, ..., exactly as in FlexibleUNet.

Widths: MONAI's ResNet family has fixed widths (64, 128, 256, 512). ``widths`` scales them for CPU
work (``(16, 32, 64, 128)``: 0.9 M parameters, a forward+backward of 8 patches of 32^3 in about
0.03 s on one core, against 0.2 s and 14 M parameters at full width). FlexibleUNet only knows the
fixed widths, so a scaled backbone is registered with MONAI's own extension point
(``FLEXUNET_BACKBONE.register_class``) under the name ``medssl-<depth>-<widths>``; that is the gap
this module fills.

Feature maps (``forward_features``): the stem output and ``layer1..4``, at strides 2, 4, 8, 16
and 32, with channels ``[w0, w0*e, w1*e, w2*e, w3*e]`` (block expansion ``e``: 1 basic, 4
bottleneck). Inputs of any size work; 32 voxels a side reach 1 voxel at the deepest level.

Example:
    >>> import torch
    >>> encoder = ResNetEncoder(depth="resnet10", spatial_dims=3, widths=(16, 32, 64, 128))
    >>> encoder(torch.randn(2, 1, 32, 32, 32)).shape
    torch.Size([2, 128])
    >>> encoder.feature_channels
    [16, 16, 32, 64, 128]
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from monai.networks.blocks import BaseEncoder
from monai.networks.nets import ResNet
from monai.networks.nets import resnet as monai_resnet
from monai.networks.nets.flexible_unet import FLEXUNET_BACKBONE
from torch import nn

from medssl.errors import ConfigError
from medssl.models.base import Encoder, instantiate_definition
from medssl.models.explicit_padding import ExplicitPaddingConv3d

DEFAULT_WIDTHS = (64, 128, 256, 512)
DEPTHS = ("resnet10", "resnet18", "resnet34", "resnet50")


class ScaledResNetBackbone(ResNet, BaseEncoder):
    """MONAI's ``ResNetFeatures`` with chosen widths (same module names, same forward).

    Subclasses made by :func:`register_scaled_backbone` fix ``depth`` and ``widths`` so that
    FlexibleUNet can build them by name.
    """

    depth: str = "resnet10"
    widths: tuple[int, int, int, int] = DEFAULT_WIDTHS

    def __init__(self, spatial_dims: int = 3, in_channels: int = 1, pretrained: bool = False,
                 depth: str | None = None, widths: Sequence[int] | None = None) -> None:
        if pretrained:
            raise ConfigError("scaled ResNet backbones have no pretrained weights; use pretrained=False")
        depth = depth or self.depth
        widths = tuple(widths or self.widths)
        block, layers, shortcut_type, bias_downsample, _ = monai_resnet.resnet_params[depth]
        super().__init__(
            block=block,
            layers=layers,
            block_inplanes=list(widths),
            spatial_dims=spatial_dims,
            n_input_channels=in_channels,
            conv1_t_stride=2,
            shortcut_type=shortcut_type,
            feed_forward=False,
            bias_downsample=bias_downsample,
        )

    forward = monai_resnet.ResNetFeatures.forward

    @classmethod
    def get_encoder_parameters(cls) -> list[dict]:
        return [{"spatial_dims": 3, "in_channels": 1, "pretrained": False}]

    @classmethod
    def num_channels_per_output(cls) -> list[tuple[int, ...]]:
        return [tuple(feature_channels(cls.depth, cls.widths))]

    @classmethod
    def num_outputs(cls) -> list[int]:
        return [5]

    @classmethod
    def get_encoder_names(cls) -> list[str]:
        return [backbone_name(cls.depth, cls.widths)]


def expansion(depth: str) -> int:
    return 4 if monai_resnet.resnet_params[depth][0] == "bottleneck" else 1


def feature_channels(depth: str, widths: Sequence[int]) -> list[int]:
    e = expansion(depth)
    return [int(widths[0])] + [int(w) * e for w in widths]


def backbone_name(depth: str, widths: Sequence[int]) -> str:
    """The FlexibleUNet backbone name: MONAI's own for the default widths, a medssl one otherwise."""
    if tuple(widths) == DEFAULT_WIDTHS:
        return depth
    return f"medssl-{depth}-" + "-".join(str(int(w)) for w in widths)


def register_scaled_backbone(depth: str, widths: Sequence[int]) -> str:
    """Make FlexibleUNet able to build ``depth`` at ``widths``; returns the backbone name."""
    name = backbone_name(depth, widths)
    if name not in FLEXUNET_BACKBONE.register_dict:
        cls = type(
            f"ScaledResNetBackbone_{name.replace('-', '_')}",
            (ScaledResNetBackbone,),
            {"depth": depth, "widths": tuple(int(w) for w in widths), "__module__": __name__},
        )
        FLEXUNET_BACKBONE.register_class(cls)
    return name


class ResNetEncoder(Encoder):
    """A MONAI ResNet backbone as an :class:`Encoder` (module ``encoder`` as in FlexibleUNet).

    Args:
        depth: ``resnet10``, ``resnet18``, ``resnet34`` or ``resnet50``.
        spatial_dims, in_channels: 2 or 3; input channels.
        widths: the four stage widths (default MONAI's ``(64, 128, 256, 512)``).
        name: registry name stored in ``config`` (defaults to ``depth``).
    """

    network_modules = ("encoder",)
    segmentation_network = "FlexibleUNet"

    def __init__(self, depth: str = "resnet10", spatial_dims: int = 3, in_channels: int = 1,
                 widths: Sequence[int] = DEFAULT_WIDTHS, name: str | None = None):
        if depth not in DEPTHS:
            raise ConfigError(f"unknown ResNet depth {depth!r}; choose one of {', '.join(DEPTHS)}")
        widths = tuple(int(w) for w in widths)
        if len(widths) != 4 or min(widths) < 1:
            raise ConfigError(f"encoder {depth}: widths must be four positive integers, got {widths}")
        super().__init__(name or depth, spatial_dims, in_channels,
                         {} if widths == DEFAULT_WIDTHS else {"widths": widths})
        self.depth = depth
        self.widths = widths
        self.backbone = register_scaled_backbone(depth, widths)
        if widths == DEFAULT_WIDTHS:
            self.encoder: nn.Module = monai_resnet.ResNetEncoder(
                model_name=depth, pretrained=False, spatial_dims=spatial_dims, in_channels=in_channels)
        else:
            self.encoder = ScaledResNetBackbone(spatial_dims=spatial_dims, in_channels=in_channels,
                                                depth=depth, widths=widths)
        if spatial_dims == 3:  # a oneDNN bug makes the stem's weight gradient garbage on 5-7 voxel inputs
            self.encoder.conv1 = ExplicitPaddingConv3d.replacing(self.encoder.conv1)
        self.feature_channels = feature_channels(depth, widths)

    @property
    def input_multiple(self) -> int:
        """32: the stem (stride 2), the max-pool and three stride-2 stages; FlexibleUNet's decoder
        concatenates the skips, so a size that halves unevenly fails (e.g. 36 -> 18 -> 9 -> 5)."""
        return 32

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.check_input(x)
        return list(self.encoder(x))

    def segmentation_network_definition(self, out_channels: int, **args: Any) -> dict[str, Any]:
        """``FlexibleUNet`` with this backbone; decoder widths scale with the encoder's
        (MONAI's default ``(256, 128, 64, 32, 16)`` at full width). A scaled backbone is registered
        with MONAI when the definition is built (``$`` expression: medssl must be importable)."""
        scale = self.widths[0] / DEFAULT_WIDTHS[0]
        default_decoder = tuple(max(4, int(round(c * scale))) for c in (256, 128, 64, 32, 16))
        args.setdefault("decoder_channels", default_decoder)
        backbone = self.backbone
        if backbone.startswith("medssl-"):
            backbone = (f"$__import__('medssl.models.encoders.resnet', fromlist=['x'])"
                        f".register_scaled_backbone({self.depth!r}, {list(self.widths)})")
        return {"_target_": "monai.networks.nets.FlexibleUNet", "in_channels": self.in_channels,
                "out_channels": out_channels, "backbone": backbone, "pretrained": False,
                "spatial_dims": self.spatial_dims, **args}

    def build_segmentation_network(self, out_channels: int, **args: Any) -> nn.Module:
        """``FlexibleUNet`` with this backbone (:meth:`segmentation_network_definition`)."""
        definition = self.segmentation_network_definition(out_channels, **args)
        definition.update(_target_="monai.networks.nets.FlexibleUNet", backbone=self.backbone)
        return instantiate_definition(definition)
