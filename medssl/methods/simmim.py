"""SimMIM: masked image modelling with a mask token in the input sequence and a linear head.

Paper: Xie et al., "SimMIM: A Simple Framework for Masked Image Modeling", CVPR 2022; for Swin
UNETR's encoder, the masked-volume inpainting of Tang et al. 2022 ("Self-supervised pre-training of
Swin transformers for 3D medical image analysis") is of this kind.

Per step, for a patch ``x`` cut into cells of ``mask_cell`` voxels (default: the encoder's deepest
stride, 32 for Swin as in SimMIM, the token size for a ViT):

1. ``round(mask_ratio * N)`` cells are masked at random (60% by default, the paper's);
2. the encoder runs on the *whole* token grid, with every token of a masked cell replaced by one
   learnable mask token ``e`` right after the patch embedding (a forward hook; the ViT's position
   embedding is added after it, as in SimMIM)::

       t_i <- t_i * (1 - w_i) + e * w_i          (w_i = 1 where masked)

3. a linear head (a 1x1 convolution on the deepest feature map) predicts the ``stride^d * C`` voxels
   of each deepest voxel (SimMIM's one-layer prediction head);
4. loss: L1 on the masked voxels only, against the raw voxels::

       L = 1/|M| sum_{n in M} mean_v | p_{n,v} - x_{n,v} |

Every token keeps its place in the grid, which is what a windowed-attention encoder needs: Swin
cannot encode the visible tokens alone (MAE), so ``simmim`` is the masked modelling of SwinUNETR's
encoder; on the ViT it is MAE's simpler, costlier sibling. Supported encoders: ``vit``, ``swin``.
The head is discarded; the exported encoder transfers into UNETR / SwinUNETR. Masks come from the
global torch generator (seeded, checkpointed). Batches are ``{"views": [x]}`` (``num_views: 1``).

Example:
    >>> import torch
    >>> from medssl.models import build_encoder
    >>> swin = build_encoder("swin", spatial_dims=2, feature_size=12, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2),
    ...                      window_size=4)
    >>> method = SimMIM(swin)
    >>> loss, logs = method({"views": [torch.rand(2, 1, 64, 64)]})
    >>> bool(loss > 0), float(logs["masked_fraction"])
    (True, 0.5)
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator, Mapping

import torch
from monai.networks.layers.factories import Conv
from torch import nn

from medssl.errors import ConfigError, DataError
from medssl.losses.masked import masked_patch_loss, patchify, random_patch_mask, upsample_mask
from medssl.methods.base import SSLMethod, detached_logs
from medssl.methods.registry import register_method
from medssl.models.base import Encoder
from medssl.models.encoders import SwinEncoder, ViTEncoder


def embedding_layout(encoder: Encoder) -> tuple[nn.Module, int, int, int]:
    """``(patch embedding module, its stride, its width, the deepest feature map's stride)``."""
    if isinstance(encoder, ViTEncoder):
        patch = int(encoder.config["args"]["patch_size"])
        return encoder.vit.patch_embedding.patch_embeddings, patch, encoder.feature_channels[-1], patch
    if isinstance(encoder, SwinEncoder):
        return encoder.swinViT.patch_embed, encoder.patch_size, encoder.feature_channels[0], encoder.input_multiple
    raise ConfigError(f"method 'simmim' supports the 'vit' and 'swin' encoders, not {encoder.name!r}; "
                      "for the ResNets use 'spark'")


@register_method("simmim")
class SimMIM(SSLMethod):
    """SimMIM on a ViT or Swin encoder (see the module docstring).

    Args:
        encoder: a ``vit`` or ``swin`` registry encoder.
        mask_ratio: fraction of the cells masked (0.6).
        mask_cell: the masked cells' side in voxels (None: the deepest stride); a multiple of the
            patch embedding's stride and a divisor of the deepest stride.
        normalise_target: per-cell normalised targets (False: raw voxels, the paper's).
    """

    name = "simmim"

    def __init__(self, encoder: Encoder, mask_ratio: float = 0.6, mask_cell: int | None = None,
                 normalise_target: bool = False):
        super().__init__(encoder, num_views=1)
        self._embedding, embed_stride, embed_dim, self.stride = embedding_layout(encoder)
        if not 0.0 < mask_ratio < 1.0:
            raise ConfigError(f"method 'simmim': mask_ratio must be in (0, 1), got {mask_ratio}")
        self.cell = int(mask_cell or self.stride)
        if self.cell % embed_stride or self.stride % self.cell:
            raise ConfigError(f"method 'simmim': mask_cell ({self.cell}) must be a multiple of the patch embedding's "
                              f"stride ({embed_stride}) and divide the deepest stride ({self.stride})")
        self.mask_ratio = float(mask_ratio)
        self.normalise_target = bool(normalise_target)
        self.mask_token = nn.Parameter(torch.zeros(embed_dim))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        dims = encoder.spatial_dims
        self.head = Conv[Conv.CONV, dims](encoder.feature_channels[-1], self.stride**dims * encoder.in_channels, 1)
        self._weights: torch.Tensor | None = None

    def draw_mask(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, *grid)`` boolean, True where the cell is masked."""
        spatial = tuple(int(s) for s in x.shape[2:])
        if any(s % self.stride for s in spatial):
            raise DataError(f"simmim: patch {spatial} must be a multiple of the encoder's deepest stride "
                            f"{self.stride} along every axis (pretrain.augmentation.patch_size)")
        grid = tuple(s // self.cell for s in spatial)
        return random_patch_mask(x.shape[0], math.prod(grid), self.mask_ratio, device=x.device).reshape(-1, *grid)

    def _replace_masked(self, module: nn.Module, inputs: Any, tokens: torch.Tensor) -> torch.Tensor:
        assert self._weights is not None
        token = self.mask_token.to(tokens.dtype)
        if tokens.ndim == self._weights.ndim:  # (B, D, *grid): a convolution's output
            w = upsample_mask(self._weights, tokens.shape[2:]).to(tokens.dtype)
            return tokens * (1 - w) + token.reshape(1, -1, *(1,) * (tokens.ndim - 2)) * w
        # (B, N, D): the ViT's "perceptron" embedding, tokens in grid order
        grid = self.encoder.grid
        w = upsample_mask(self._weights, grid).flatten(2).transpose(1, 2).to(tokens.dtype)
        return tokens * (1 - w) + token * w

    @contextlib.contextmanager
    def _masking(self, masked: torch.Tensor) -> Iterator[None]:
        self._weights = masked.unsqueeze(1).float()
        handle = self._embedding.register_forward_hook(self._replace_masked)
        try:
            yield
        finally:
            handle.remove()
            self._weights = None

    def predict(self, x: torch.Tensor, masked: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(patches (B, N, stride^d * C), pooled deepest features (B, D))`` for masked cells ``masked``."""
        with self._masking(masked):
            deepest = self.encoder.forward_features(x)[-1]
        prediction = self.head(deepest)
        return prediction.flatten(2).transpose(1, 2), deepest.flatten(2).mean(dim=2)

    def forward(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        x = torch.cat(self.views(batch, minimum=1), dim=0)
        masked = self.draw_mask(x)
        prediction, embeddings = self.predict(x, masked)
        patch = (self.stride,) * (x.ndim - 2)
        grid = tuple(s // self.stride for s in x.shape[2:])
        scored = upsample_mask(masked.unsqueeze(1).float(), grid).flatten(1) > 0.5
        loss = masked_patch_loss(prediction, patchify(x.float(), patch), scored, kind="l1",
                                 normalise_target=self.normalise_target)
        return loss, detached_logs(loss, embeddings=embeddings, masked_fraction=masked.float().mean())
