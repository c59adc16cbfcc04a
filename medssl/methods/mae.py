"""MAE: masked autoencoding of a vision transformer from its visible patches only.

Paper: He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022; in 3D medical
imaging the UNETR/ViT form of Chen et al. 2023 ("Masked image modeling advances 3D medical image
analysis") and the OpenMind benchmark (Wald et al., ICCV 2025).

Per step, for a patch ``x`` of the ViT's fixed ``img_size`` cut into ``N`` tokens of ``patch_size``:

1. ``round(mask_ratio * N)`` tokens are masked at random (:func:`random_patch_mask`, 75% by default);
2. the encoder embeds every patch (patch embedding + its position embedding, as UNETR does) and
   runs its transformer blocks and final norm on the *visible* tokens only (a quarter of the
   sequence: the reason MAE is cheap);
3. a light decoder (``decoder_depth`` transformer blocks of width ``decoder_dim``) receives the
   visible tokens' latents projected to its width and a shared learnable mask token at every masked
   position, plus its own learnable position embedding, and predicts each token's voxels with a
   linear layer;
4. loss (:func:`medssl.losses.masked.masked_patch_loss`): MSE on the masked tokens only, against
   per-patch normalised voxels (``normalise_target``, the paper's "norm_pix_loss")::

       L = 1/|M| sum_{n in M} mean_v ( p_{n,v} - (x_{n,v} - mean(x_n)) / sqrt(var(x_n) + eps) )^2

The decoder is discarded; the exported encoder is the ViT, transferable into UNETR (with
``patch_size: 16`` and 12 layers). Masks come from the global torch generator (seeded, checkpointed).
Batches are ``{"views": [x]}`` (``num_views: 1``; further views are used as more samples).

Swin: its shifted-window attention needs the whole token grid, so it cannot encode the visible
tokens alone; pretrain SwinUNETR's encoder with :mod:`medssl.methods.simmim` instead.

Example:
    >>> import torch
    >>> from medssl.models import build_encoder
    >>> vit = build_encoder("vit", spatial_dims=2, img_size=32, patch_size=8, hidden_size=32, mlp_dim=64,
    ...                     num_layers=4, num_heads=4)
    >>> method = MAE(vit, decoder_dim=16, decoder_depth=1, decoder_heads=2)
    >>> loss, logs = method({"views": [torch.rand(2, 1, 32, 32)]})
    >>> bool(loss > 0), logs["embeddings"].shape, float(logs["masked_fraction"])
    (True, torch.Size([2, 32]), 0.75)
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
from monai.networks.blocks import TransformerBlock
from torch import nn

from medssl.errors import ConfigError, DataError
from medssl.losses.masked import masked_patch_loss, patchify, random_patch_mask
from medssl.methods.base import SSLMethod, detached_logs
from medssl.methods.registry import register_method
from medssl.models.base import Encoder
from medssl.models.encoders import ViTEncoder
from medssl.models.encoders.vit import freeze_unused_cross_attention


def visible_first(masked: torch.Tensor) -> torch.Tensor:
    """``(B, N)`` token indices, each row's visible tokens first (in grid order), then the masked."""
    return torch.argsort(masked.to(torch.int8), dim=1, stable=True)


@register_method("mae")
class MAE(SSLMethod):
    """Masked autoencoder of a ViT encoder (see the module docstring).

    Args:
        encoder: a ``vit`` registry encoder.
        mask_ratio: fraction of the tokens masked (0.75).
        decoder_dim, decoder_depth, decoder_heads: the light decoder (the paper: 512, 8, 16; the
            defaults 128, 2, 4 suit 3D patches of few tokens).
        normalise_target: per-patch normalised targets (True).
    """

    name = "mae"

    def __init__(self, encoder: Encoder, mask_ratio: float = 0.75, decoder_dim: int = 128, decoder_depth: int = 2,
                 decoder_heads: int = 4, normalise_target: bool = True):
        super().__init__(encoder, num_views=1)
        if not isinstance(encoder, ViTEncoder):
            raise ConfigError(f"method 'mae' encodes the visible tokens of a ViT ('vit' encoder), not {encoder.name!r}; "
                              "use 'simmim' for Swin and 'spark' for the ResNets")
        if not 0.0 < mask_ratio < 1.0:
            raise ConfigError(f"method 'mae': mask_ratio must be in (0, 1), got {mask_ratio}")
        if decoder_dim < 1 or decoder_depth < 1 or decoder_dim % decoder_heads:
            raise ConfigError(f"method 'mae': decoder_dim ({decoder_dim}) must be a positive multiple of "
                              f"decoder_heads ({decoder_heads}) and decoder_depth >= 1")
        self.mask_ratio = float(mask_ratio)
        self.normalise_target = bool(normalise_target)
        self.patch = (int(encoder.config["args"]["patch_size"]),) * encoder.spatial_dims
        self.num_tokens = math.prod(encoder.grid)
        hidden = encoder.feature_channels[-1]
        self.decoder_embed = nn.Linear(hidden, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder_position = nn.Parameter(torch.zeros(1, self.num_tokens, decoder_dim))
        self.decoder_blocks = nn.ModuleList([
            TransformerBlock(decoder_dim, 4 * decoder_dim, decoder_heads, qkv_bias=True) for _ in range(decoder_depth)
        ])
        self.decoder_norm = nn.LayerNorm(decoder_dim)
        self.decoder_prediction = nn.Linear(decoder_dim, math.prod(self.patch) * encoder.in_channels)
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        nn.init.trunc_normal_(self.decoder_position, std=0.02)
        freeze_unused_cross_attention(self.decoder_blocks)

    def draw_mask(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N)`` boolean, True where the token is masked."""
        if tuple(x.shape[2:]) != tuple(self.encoder.img_size):
            raise DataError(f"mae: the ViT takes patches of {tuple(self.encoder.img_size)} voxels, got "
                            f"{tuple(x.shape[2:])} (pretrain.augmentation.patch_size = encoder img_size)")
        return random_patch_mask(x.shape[0], self.num_tokens, self.mask_ratio, device=x.device)

    def encode_visible(self, x: torch.Tensor, masked: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(latent (B, V, D), order (B, N))``: the encoder on the visible tokens only."""
        vit = self.encoder.vit
        tokens = vit.patch_embedding(x)  # (B, N, D), position embedding added
        order = visible_first(masked)
        visible = int((~masked[0]).sum())
        keep = order[:, :visible]
        latent = torch.gather(tokens, 1, keep.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
        for block in vit.blocks:
            latent = block(latent)
        return vit.norm(latent), order

    def decode(self, latent: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
        """``(B, N, P)`` voxel predictions of every token, in grid order."""
        batch, visible, _ = latent.shape
        embedded = self.decoder_embed(latent)
        holes = self.mask_token.to(embedded.dtype).expand(batch, self.num_tokens - visible, -1)
        shuffled = torch.cat([embedded, holes], dim=1)  # in ``order``: visible first
        unshuffle = order.argsort(dim=1).unsqueeze(-1).expand(-1, -1, shuffled.shape[-1])
        tokens = torch.gather(shuffled, 1, unshuffle) + self.decoder_position.to(embedded.dtype)
        for block in self.decoder_blocks:
            tokens = block(tokens)
        return self.decoder_prediction(self.decoder_norm(tokens))

    def forward(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        x = torch.cat(self.views(batch, minimum=1), dim=0)
        masked = self.draw_mask(x)
        latent, order = self.encode_visible(x, masked)
        prediction = self.decode(latent, order)
        loss = masked_patch_loss(prediction, patchify(x.float(), self.patch), masked,
                                 normalise_target=self.normalise_target)
        return loss, detached_logs(loss, embeddings=latent.mean(dim=1), masked_fraction=masked.float().mean())
