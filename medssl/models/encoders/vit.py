"""Vision transformer encoder (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words"), as the
``vit`` module of ``monai.networks.nets.UNETR`` (Hatamizadeh et al. 2022, "UNETR").

The encoder holds a ``monai.networks.nets.ViT`` under the name ``vit`` built exactly as UNETR builds
its own (no class token, ``classification=False``), so parameters are named ``vit.patch_embedding...``,
``vit.blocks.0...`` as in UNETR. The input size is fixed (``img_size``): the position embedding has
one entry per patch.

Pooled features: the mean over tokens of the final (layer-normed) output. Feature maps: the token
grids after blocks ``L/4, L/2, 3L/4`` (UNETR's 3, 6, 9 for ``L = 12``) and the final output,
reshaped to ``(B, hidden_size, *img_size / patch_size)``.

UNETR fixes ``patch_size = 16`` and 12 layers; other settings pretrain fine but cannot transfer to
UNETR (``build_segmentation_network`` says so).

Example:
    >>> import torch
    >>> encoder = ViTEncoder(spatial_dims=2, img_size=32, hidden_size=48, mlp_dim=96, num_layers=4, num_heads=4)
    >>> encoder(torch.randn(2, 1, 32, 32)).shape
    torch.Size([2, 48])
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from monai.networks.nets import ViT
from monai.utils import OptionalImportError
from torch import nn

from medssl.errors import ConfigError
from medssl.models.base import Encoder

UNETR_PATCH_SIZE = 16
UNETR_NUM_LAYERS = 12


def freeze_unused_cross_attention(module: nn.Module) -> None:
    """Stop training the cross-attention norm of MONAI transformer blocks built without cross
    attention: it never takes part in the forward, so it never gets a gradient, and DDP (without
    ``find_unused_parameters``) stops at the first step waiting for one."""
    from monai.networks.blocks import TransformerBlock

    for block in module.modules():
        if isinstance(block, TransformerBlock) and not block.with_cross_attention:
            block.norm_cross_attn.requires_grad_(False)


class ViTEncoder(Encoder):
    """A MONAI ``ViT`` (no class token) as an :class:`Encoder`.

    Args:
        spatial_dims, in_channels: 2 or 3; input channels.
        img_size: the fixed input size (an int or one per axis).
        patch_size: 16 for UNETR.
        hidden_size, mlp_dim, num_layers, num_heads: ViT-B defaults (768, 3072, 12, 12).
        proj_type, dropout_rate, qkv_bias: as in ``ViT`` / ``UNETR``.
    """

    network_modules = ("vit",)
    segmentation_network = "UNETR"

    def __init__(self, spatial_dims: int = 3, in_channels: int = 1, img_size: int | Sequence[int] = 96,
                 patch_size: int = UNETR_PATCH_SIZE, hidden_size: int = 768, mlp_dim: int = 3072,
                 num_layers: int = UNETR_NUM_LAYERS, num_heads: int = 12, proj_type: str = "conv",
                 dropout_rate: float = 0.0, qkv_bias: bool = False, name: str = "vit"):
        sizes = (int(img_size),) * spatial_dims if isinstance(img_size, int) else tuple(int(s) for s in img_size)
        if len(sizes) != spatial_dims or any(s % int(patch_size) for s in sizes):
            raise ConfigError(f"encoder {name!r}: img_size {sizes} must have {spatial_dims} sizes, each a "
                              f"multiple of patch_size {patch_size}")
        if num_layers < 4:
            raise ConfigError(f"encoder {name!r}: num_layers must be >= 4 to give four feature levels")
        args = {"img_size": sizes, "patch_size": int(patch_size), "hidden_size": int(hidden_size),
                "mlp_dim": int(mlp_dim), "num_layers": int(num_layers), "num_heads": int(num_heads),
                "proj_type": proj_type, "dropout_rate": float(dropout_rate), "qkv_bias": bool(qkv_bias)}
        super().__init__(name, spatial_dims, in_channels, args)
        try:
            self.vit = ViT(in_channels=in_channels, img_size=sizes, patch_size=(int(patch_size),) * spatial_dims,
                           hidden_size=int(hidden_size), mlp_dim=int(mlp_dim), num_layers=int(num_layers),
                           num_heads=int(num_heads), proj_type=proj_type, classification=False,
                           dropout_rate=float(dropout_rate), spatial_dims=spatial_dims, qkv_bias=bool(qkv_bias))
        except OptionalImportError as exc:
            raise ConfigError(f"encoder {name!r} needs MONAI's optional dependency einops "
                              f"(pip install einops): {exc}") from exc
        except (ValueError, AssertionError) as exc:
            raise ConfigError(f"encoder {name!r}: invalid ViT arguments {args}: {exc}") from exc
        freeze_unused_cross_attention(self.vit)
        self.img_size = sizes
        self.grid = tuple(s // int(patch_size) for s in sizes)
        self.feature_layers = tuple(int(num_layers) * k // 4 for k in (1, 2, 3))
        self.feature_channels = [int(hidden_size)] * 4
        self._unetr_args = {"img_size": sizes, "hidden_size": int(hidden_size), "mlp_dim": int(mlp_dim),
                            "num_heads": int(num_heads), "proj_type": proj_type,
                            "dropout_rate": float(dropout_rate), "qkv_bias": bool(qkv_bias)}

    def _tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        self.check_input(x)
        if tuple(x.shape[2:]) != self.img_size:
            raise ValueError(f"encoder {self.name!r} was built for inputs of size {self.img_size}, "
                             f"got {tuple(x.shape[2:])}")
        return self.vit(x)

    def _grid(self, tokens: torch.Tensor) -> torch.Tensor:
        batch, _, hidden = tokens.shape
        return tokens.transpose(1, 2).reshape(batch, hidden, *self.grid)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        final, hidden_states = self._tokens(x)
        return [self._grid(hidden_states[i]) for i in self.feature_layers] + [self._grid(final)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        final, _ = self._tokens(x)
        return final.mean(dim=1)

    def segmentation_network_definition(self, out_channels: int, **args: Any) -> dict[str, Any]:
        """``UNETR`` around this ViT (``feature_size``, ``norm_name``, ``res_block`` may be passed)."""
        patch, layers = self.config["args"]["patch_size"], self.config["args"]["num_layers"]
        if patch != UNETR_PATCH_SIZE or layers != UNETR_NUM_LAYERS:
            raise ConfigError(f"encoder {self.name!r}: UNETR needs patch_size {UNETR_PATCH_SIZE} and "
                              f"{UNETR_NUM_LAYERS} layers, this ViT has patch_size {patch} and {layers} layers")
        return {"_target_": "monai.networks.nets.UNETR", "in_channels": self.in_channels,
                "out_channels": out_channels, "spatial_dims": self.spatial_dims, **self._unetr_args, **args}
