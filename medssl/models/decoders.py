"""A light decoder from an encoder's feature maps back to an image (restoration pretext tasks).

Models Genesis (Zhou et al. 2019), context inpainting (Pathak et al. 2016) and intensity
restoration train an encoder by asking a decoder to rebuild the original image from a corrupted
one. Only the encoder is kept afterwards, so the decoder is deliberately small: an FPN-style
top-down path (Lin et al. 2017) that works with any registry encoder whatever its strides::

    x = lateral_L(f_L)
    for level l = L-1 .. 1:   x = fuse_l( upsample(x, size(f_l)) + lateral_l(f_l) )
    out = head( upsample(x, output_size) )

``lateral_l`` is a 1x1 convolution to ``width`` channels, ``fuse_l`` a 3x3 convolution + norm +
activation (MONAI ``Convolution``), ``head`` a 3x3 conv-norm-act followed by a 1x1 convolution to
``out_channels``.

Gap filled: MONAI's decoders belong to fixed encoder layouts (UNet, FlexibleUNet); this one takes
any list of feature maps.

Example:
    >>> import torch
    >>> decoder = LightDecoder(spatial_dims=2, feature_channels=[8, 16, 32], out_channels=1, width=16)
    >>> features = [torch.randn(2, 8, 16, 16), torch.randn(2, 16, 8, 8), torch.randn(2, 32, 4, 4)]
    >>> decoder(features, output_size=(32, 32)).shape
    torch.Size([2, 1, 32, 32])
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Conv
from torch import nn


class LightDecoder(nn.Module):
    """Top-down decoder over ``feature_channels`` (shallow to deep) to ``out_channels`` at
    ``output_size``.

    Args:
        spatial_dims: 2 or 3.
        feature_channels: channels of the encoder's feature maps, shallow to deep.
        out_channels: channels of the output image (or mask logits).
        width: channels of the decoder's path (32).
        norm, act: MONAI norm/activation specs (batch norm, ReLU).
    """

    def __init__(self, spatial_dims: int, feature_channels: Sequence[int], out_channels: int, width: int = 32,
                 norm: Any = "batch", act: Any = "relu"):
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        self.spatial_dims = spatial_dims
        self.laterals = nn.ModuleList([conv(int(c), width, kernel_size=1) for c in feature_channels])
        self.fuse = nn.ModuleList([
            Convolution(spatial_dims, width, width, kernel_size=3, norm=norm, act=act)
            for _ in range(len(feature_channels) - 1)
        ])
        self.head = nn.Sequential(
            Convolution(spatial_dims, width, width, kernel_size=3, norm=norm, act=act),
            conv(width, out_channels, kernel_size=1),
        )

    def _resize(self, x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        if tuple(x.shape[2:]) == tuple(size):
            return x
        mode = "bilinear" if self.spatial_dims == 2 else "trilinear"
        return F.interpolate(x, size=tuple(size), mode=mode, align_corners=False)

    def forward(self, features: Sequence[torch.Tensor], output_size: Sequence[int]) -> torch.Tensor:
        if len(features) != len(self.laterals):
            raise ValueError(f"LightDecoder expects {len(self.laterals)} feature maps, got {len(features)}")
        x = self.laterals[-1](features[-1])
        for level in range(len(features) - 2, -1, -1):
            skip = features[level]
            x = self._resize(x, skip.shape[2:]) + self.laterals[level](skip)
            x = self.fuse[level](x)
        return self.head(self._resize(x, output_size))
