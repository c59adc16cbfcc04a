"""SparK: sparse masked modelling of a CNN's whole segmentation network.

Paper: Tian et al., "Designing BERT for Convolutional Networks: Sparse and Hierarchical Masked
Modeling", ICLR 2023 (reference code github.com/keyu-tian/SparK); the 3D form is the masked image
modelling of CNN segmentation networks that wins the OpenMind benchmark (Wald et al., ICCV 2025,
nnssl) and "Revisiting MAE pre-training for 3D medical image segmentation" (Wald et al., CVPR 2025).

Per step, for a patch ``x`` whose sides are multiples of the encoder's total stride ``s`` (32 for
the ResNets, per axis for nnU-Net's networks; one mask *cell* per deepest feature voxel):

1. mask: ``round(mask_ratio * N)`` of the ``N`` cells are drawn at random (:func:`random_patch_mask`);
   ``m_l`` is the keep-mask (1 = visible) repeated to the resolution of any feature map ``l``;
2. sparse encoding: the encoder sees ``x * m_0``, and the output of every convolution, norm and
   pooling layer inside it is multiplied by ``m_l`` again (forward hooks), so masked cells stay
   empty at every stage: no value from a masked cell ever reaches a visible one, which is what
   SparK's sparse convolutions guarantee (SparK's sparse batch norm also leaves the empty voxels out
   of the batch statistics; here they count as zeros, a difference of normalisation constants only);
3. densify: each encoder feature map's masked positions are filled with that scale's learnable
   mask token ``e_l`` (``f_l <- f_l * m_l + e_l * (1 - m_l)``; SparK also passes each scale
   through a projection, which the segmentation decoder's own first convolutions play here);
4. decode with the segmentation network's own decoder (``FlexibleUNet``: what fine-tuning starts
   from, exported with the encoder as in :mod:`medssl.methods.local_contrastive`) to an image ``p``;
5. loss (:func:`medssl.losses.masked.masked_patch_loss`): MSE on the masked cells only, against
   per-cell normalised targets::

       L = 1/|M| sum_{n in M} mean_v ( p_{n,v} - (x_{n,v} - mean(x_n)) / sqrt(var(x_n) + eps) )^2

Masks are drawn from the global torch generator (seeded from the run seed, checkpointed), as the
method's other random draws. Batches are ``{"views": [x]}`` (``pretrain.augmentation.num_views: 1``;
further views are used as more samples).

Supported encoders: the ResNets and ``nnunet`` (their segmentation network, FlexibleUNet or the
planned nnU-Net network, calls the encoder module once and decodes its feature list). nnU-Net's
strides may differ per axis: a cell is then the total stride along each axis (``cell_size``), and
the keep-mask is permuted to the network's axis order inside it (``encoder.to_network_order``). Export: ``encoder.pt`` (plain encoder) plus ``encoder.decoder.pt`` (the
network's decoder; its last layer, ``in_channels`` outputs here, stays fresh at fine-tuning).

Example:
    >>> import torch
    >>> from medssl.models import build_encoder
    >>> method = SparK(build_encoder("resnet10_tiny", spatial_dims=2), mask_ratio=0.6)
    >>> loss, logs = method({"views": [torch.rand(2, 1, 64, 64)]})
    >>> bool(loss > 0), float(logs["masked_fraction"])
    (True, 0.5)
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator, Mapping

import torch
from torch import nn
from torch.nn.modules.batchnorm import _NormBase
from torch.nn.modules.conv import _ConvNd
from torch.nn.modules.pooling import _AdaptiveAvgPoolNd, _AvgPoolNd, _MaxPoolNd

from medssl.errors import ConfigError, DataError
from medssl.losses.masked import masked_patch_loss, patchify, random_patch_mask, upsample_mask
from medssl.methods.base import SSLMethod, detached_logs
from medssl.methods.pretext import _plain_args, network_around_encoder, network_decoder_state
from medssl.methods.registry import register_method
from medssl.models.base import Encoder
from medssl.models.encoders import NnUNetEncoder, ResNetEncoder

#: layers whose output is re-masked: those that move values between voxels or shift empty ones
#: (activations map 0 to 0 and residual sums of empty voxels stay empty)
SPARSE_LAYERS = (_ConvNd, _NormBase, nn.GroupNorm, nn.LayerNorm, _MaxPoolNd, _AvgPoolNd)


class SparseMasking:
    """Forward hooks that multiply every spatial layer's output of ``module`` by the keep-mask at
    its resolution, while ``active(keep)`` is entered (the sparse-convolution emulation)."""

    def __init__(self, module: nn.Module):
        self.layers = [m for m in module.modules() if isinstance(m, SPARSE_LAYERS)
                       and not isinstance(m, _AdaptiveAvgPoolNd)]
        self.keep: torch.Tensor | None = None
        self._cache: dict[tuple[int, ...], torch.Tensor] = {}

    def mask_at(self, size: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """The keep-mask ``(B, 1, *size)`` (cached per size within one forward)."""
        assert self.keep is not None
        found = self._cache.get(size)
        if found is None:
            found = upsample_mask(self.keep, size)
            self._cache[size] = found
        return found.to(dtype)

    def _hook(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        if self.keep is None or not isinstance(output, torch.Tensor) or output.ndim != self.keep.ndim:
            return output
        return output * self.mask_at(tuple(output.shape[2:]), output.dtype)

    @contextlib.contextmanager
    def active(self, keep: torch.Tensor) -> Iterator["SparseMasking"]:
        """Hooks on while inside; the module is plain again afterwards (nothing left registered)."""
        self.keep, self._cache = keep, {}
        handles = [layer.register_forward_hook(self._hook) for layer in self.layers]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()
            self.keep, self._cache = None, {}


@register_method("spark")
class SparK(SSLMethod):
    """Sparse masked modelling of the whole segmentation network (see the module docstring).

    Args:
        encoder: a ResNet registry encoder (its FlexibleUNet is built around it, sharing weights).
        mask_ratio: fraction of the cells masked (0.6, the paper's; 0.6-0.75 works).
        normalise_target: per-cell normalised targets (True, the paper's).
        network_args: arguments of the segmentation network (as ``finetune.network_args``, for the
            decoder to transfer).
    """

    name = "spark"

    def __init__(self, encoder: Encoder, mask_ratio: float = 0.6, normalise_target: bool = True,
                 network_args: Mapping[str, Any] | None = None):
        super().__init__(encoder, num_views=1)
        if not isinstance(encoder, (ResNetEncoder, NnUNetEncoder)):
            raise ConfigError(f"method 'spark' supports the ResNet encoders (FlexibleUNet) and nnunet (the planned "
                              f"nnU-Net network), not {encoder.name!r}; for the ViT use 'mae' or 'simmim', for Swin "
                              "'simmim'")
        if not 0.0 < mask_ratio < 1.0:
            raise ConfigError(f"method 'spark': mask_ratio must be in (0, 1), got {mask_ratio}")
        self.mask_ratio = float(mask_ratio)
        self.normalise_target = bool(normalise_target)
        self.network_args = dict(network_args or {})
        self.cell = tuple(int(c) for c in getattr(encoder, "cell_size", None)
                          or (encoder.input_multiple,) * encoder.spatial_dims)
        self.head = network_around_encoder(encoder, encoder.in_channels, self.network_args)
        self.mask_tokens = nn.ParameterList([nn.Parameter(torch.zeros(c)) for c in encoder.feature_channels])
        for token in self.mask_tokens:  # SparK: trunc_normal_(std=.02)
            nn.init.trunc_normal_(token, std=0.02, a=-0.02, b=0.02)
        self.sparse = SparseMasking(encoder)
        self._encoder_module = getattr(encoder, type(encoder).network_modules[0])
        self._deepest: tuple[torch.Tensor, torch.Tensor] | None = None

    def draw_mask(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, *grid)`` boolean, True where masked, one entry per cell of ``cell`` voxels."""
        spatial = tuple(int(s) for s in x.shape[2:])
        if any(s % c for s, c in zip(spatial, self.cell)):
            raise DataError(f"spark: patch {spatial} must be a multiple of the encoder's total stride "
                            f"{self.cell[0] if len(set(self.cell)) == 1 else self.cell} along every axis "
                            "(pretrain.augmentation.patch_size)")
        grid = tuple(s // c for s, c in zip(spatial, self.cell))
        masked = random_patch_mask(x.shape[0], math.prod(grid), self.mask_ratio, device=x.device)
        return masked.reshape(x.shape[0], *grid)

    def _densify(self, module: nn.Module, inputs: Any, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """Forward hook on the network's encoder module: masked positions take the mask tokens."""
        dense = []
        for feature, token in zip(features, self.mask_tokens):
            keep = self.sparse.mask_at(tuple(feature.shape[2:]), feature.dtype)
            shape = (1, -1) + (1,) * (feature.ndim - 2)
            dense.append(feature * keep + token.to(feature.dtype).reshape(shape) * (1 - keep))
        self._deepest = (features[-1], self.sparse.mask_at(tuple(features[-1].shape[2:]), features[-1].dtype))
        return dense

    def reconstruct(self, x: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        """The network's image from the visible cells of ``x`` (``masked``: ``(B, *grid)``)."""
        keep = (~masked).unsqueeze(1).to(x.dtype)
        with self.sparse.active(self.encoder.to_network_order(keep)):
            handle = self._encoder_module.register_forward_hook(self._densify)
            try:
                return self.head(x * upsample_mask(keep, x.shape[2:]))
            finally:
                handle.remove()

    def forward(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        x = torch.cat(self.views(batch, minimum=1), dim=0)
        masked = self.draw_mask(x)
        prediction = self.reconstruct(x, masked).float()
        cells = self.cell
        loss = masked_patch_loss(patchify(prediction, cells), patchify(x.float(), cells), masked.flatten(1),
                                 normalise_target=self.normalise_target)
        assert self._deepest is not None, "the densify hook did not run"
        deepest, keep = self._deepest
        self._deepest = None
        embeddings = (deepest * keep).flatten(2).sum(dim=2) / keep.flatten(2).sum(dim=2).clamp_min(1.0)
        return loss, detached_logs(loss, embeddings=embeddings, masked_fraction=masked.float().mean())

    def decoder_export(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """``(state, info)`` of the pretrained decoder (every network weight but the encoder's)."""
        info = {"network": type(self.head).__name__, "network_args": _plain_args(self.network_args),
                "out_channels": int(self.encoder.in_channels), "pretext": self.name}
        return network_decoder_state(self.encoder, self.head), info
