"""SwinUNETR's Swin transformer encoder (Liu et al. 2021, "Swin Transformer: Hierarchical Vision
Transformer using Shifted Windows"; Hatamizadeh et al. 2022, "Swin UNETR"), transferable into
``monai.networks.nets.SwinUNETR``.

The encoder is the ``swinViT`` module of a ``SwinUNETR`` built with the same arguments (so the
parameters are named ``swinViT.patch_embed...``, ``swinViT.layers1.0...`` as in that network, and as
in the self-supervised Swin UNETR weights of Tang et al. 2022). SwinUNETR's convolutional
``encoder1..4``/``encoder10`` blocks belong to its decoder side and start fresh at fine-tuning.

Feature maps: the five normalised stage outputs (``swinViT(x, normalize=True)``), strides
``2, 4, 8, 16, 32`` with channels ``feature_size * (1, 2, 4, 8, 16)``. Spatial sizes must be
divisible by ``patch_size * 2**4`` (32 with the default patch size 2).

Example:
    >>> import torch
    >>> encoder = SwinEncoder(spatial_dims=2, feature_size=12, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2),
    ...                       window_size=4)
    >>> encoder(torch.randn(2, 1, 32, 32)).shape
    torch.Size([2, 192])
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from monai.networks.nets import SwinUNETR
from monai.utils import OptionalImportError
from torch import nn

from medssl.errors import ConfigError
from medssl.models.base import Encoder


class SwinEncoder(Encoder):
    """``SwinUNETR.swinViT`` as an :class:`Encoder`.

    Args:
        spatial_dims, in_channels: 2 or 3; input channels.
        feature_size: embedding width of the first stage (24 in MONAI, 48 in Swin UNETR's
            pretrained model); must be divisible by 12.
        depths, num_heads: transformer blocks and attention heads per stage.
        window_size, patch_size, mlp_ratio, qkv_bias, drop_rate, attn_drop_rate, dropout_path_rate,
        use_v2, use_checkpoint: as in ``SwinUNETR``.
    """

    network_modules = ("swinViT",)
    segmentation_network = "SwinUNETR"

    def __init__(self, spatial_dims: int = 3, in_channels: int = 1, feature_size: int = 24,
                 depths: Sequence[int] = (2, 2, 2, 2), num_heads: Sequence[int] = (3, 6, 12, 24),
                 window_size: int | Sequence[int] = 7, patch_size: int = 2, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 dropout_path_rate: float = 0.0, use_v2: bool = False, use_checkpoint: bool = False,
                 name: str = "swin"):
        args = {
            "feature_size": int(feature_size), "depths": tuple(int(d) for d in depths),
            "num_heads": tuple(int(h) for h in num_heads), "window_size": window_size,
            "patch_size": int(patch_size), "mlp_ratio": float(mlp_ratio), "qkv_bias": bool(qkv_bias),
            "drop_rate": float(drop_rate), "attn_drop_rate": float(attn_drop_rate),
            "dropout_path_rate": float(dropout_path_rate), "use_v2": bool(use_v2),
            "use_checkpoint": bool(use_checkpoint),
        }
        super().__init__(name, spatial_dims, in_channels, args)
        self._network_args = dict(args)
        try:
            network = SwinUNETR(in_channels=in_channels, out_channels=1, spatial_dims=spatial_dims, **args)
        except OptionalImportError as exc:
            raise ConfigError(f"encoder {name!r} needs MONAI's optional dependency einops "
                              f"(pip install einops): {exc}") from exc
        except (ValueError, AssertionError) as exc:
            raise ConfigError(f"encoder {name!r}: invalid Swin arguments {args}: {exc}") from exc
        self.swinViT = network.swinViT
        self.patch_size = int(patch_size)
        self.feature_channels = [int(feature_size) * 2**i for i in range(5)]

    @property
    def input_multiple(self) -> int:
        """``patch_size * 2**4``: the patch embedding and four patch-merging stages."""
        return self.patch_size * 2**4

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.check_input(x)
        multiple = self.patch_size * 2**4
        if any(size % multiple for size in x.shape[2:]):
            raise ValueError(f"encoder {self.name!r}: every spatial size must be divisible by {multiple}, "
                             f"got {tuple(x.shape[2:])}")
        return list(self.swinViT(x, True))

    def segmentation_network_definition(self, out_channels: int, **args: Any) -> dict[str, Any]:
        """``SwinUNETR`` with this encoder's arguments (``norm_name``, ``normalize`` may be passed)."""
        return {"_target_": "monai.networks.nets.SwinUNETR", "in_channels": self.in_channels,
                "out_channels": out_channels, "spatial_dims": self.spatial_dims, **self._network_args, **args}
