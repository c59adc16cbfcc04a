"""Masked image modelling: images cut into patches, random patch masks and the masked-patch loss.

Shared by SparK (Tian et al., ICLR 2023), MAE (He et al., CVPR 2022) and SimMIM (Xie et al., CVPR
2022), which differ in the network, not in what is scored: a reconstruction ``p`` of the image,
compared with the image ``x`` only on the patches the network did not see::

    L = 1/|M| sum_{n in M} 1/P sum_{v in patch n} rho( p_{n,v} - t_{n,v} )

with ``M`` the masked patches, ``P`` the values per patch (voxels x channels), ``rho`` the square
(MAE, SparK) or the absolute value (SimMIM), and the target ``t`` either the raw patch or, with
``normalise_target`` (MAE's "norm_pix_loss", SparK's default), each patch standardised by its own
mean and variance: ``t_n = (x_n - mean(x_n)) / sqrt(var(x_n) + eps)``.

Patches are ordered row-major over the patch grid (axis ``X`` slowest), the order of a ViT's
tokens (``monai.networks.blocks.PatchEmbeddingBlock``: a strided convolution, flattened).

Example:
    >>> import torch
    >>> x = torch.arange(16.0).reshape(1, 1, 4, 4)
    >>> patchify(x, (2, 2))[0, 1].tolist()   # the patch at grid position (0, 1)
    [2.0, 3.0, 6.0, 7.0]
    >>> torch.equal(unpatchify(patchify(x, (2, 2)), (2, 2), (2, 2), channels=1), x)
    True
    >>> mask = random_patch_mask(3, 8, 0.75, generator=torch.Generator().manual_seed(0))
    >>> mask.sum(dim=1).tolist()
    [6, 6, 6]
"""

from __future__ import annotations

import math
from typing import Literal, Sequence

import torch
import torch.nn.functional as F

from medssl.errors import ConfigError

__all__ = ["patchify", "unpatchify", "random_patch_mask", "masked_patch_loss", "normalised_patches",
           "masked_count", "upsample_mask"]


def _grid(spatial: Sequence[int], patch: Sequence[int]) -> tuple[int, ...]:
    if len(spatial) != len(patch) or any(s % p for s, p in zip(spatial, patch)):
        raise ValueError(f"image size {tuple(spatial)} must be a multiple of the patch size {tuple(patch)}")
    return tuple(s // p for s, p in zip(spatial, patch))


def patchify(x: torch.Tensor, patch: Sequence[int]) -> torch.Tensor:
    """``(B, C, *S) -> (B, N, prod(patch) * C)``: patches row-major over the grid, each flattened
    voxel-major then channel (the layout of :func:`unpatchify`)."""
    batch, channels, *spatial = x.shape
    grid = _grid(spatial, patch)
    d = len(grid)
    shape = [batch, channels]
    for g, p in zip(grid, patch):
        shape += [g, p]
    x = x.reshape(shape)
    # (B, C, g1, p1, g2, p2, ...) -> (B, g1, g2, ..., p1, p2, ..., C)
    order = [0] + [2 + 2 * i for i in range(d)] + [3 + 2 * i for i in range(d)] + [1]
    return x.permute(order).reshape(batch, math.prod(grid), math.prod(patch) * channels)


def unpatchify(patches: torch.Tensor, patch: Sequence[int], grid: Sequence[int], channels: int) -> torch.Tensor:
    """The inverse of :func:`patchify`: ``(B, N, prod(patch) * C) -> (B, C, *(grid * patch))``."""
    batch = patches.shape[0]
    d = len(grid)
    x = patches.reshape(batch, *grid, *patch, channels)
    # (B, g1.., p1.., C) -> (B, C, g1, p1, g2, p2, ...)
    order = [0, 2 * d + 1]
    for i in range(d):
        order += [1 + i, 1 + d + i]
    return x.permute(order).reshape(batch, channels, *(g * p for g, p in zip(grid, patch)))


def masked_count(num_patches: int, mask_ratio: float) -> int:
    """Patches masked per sample: ``round(ratio * N)``, kept within ``[1, N - 1]`` (one patch seen,
    one to predict)."""
    if not 0.0 < mask_ratio < 1.0:
        raise ConfigError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
    if num_patches < 2:
        raise ConfigError(f"masking needs at least 2 patches per sample, the patch grid has {num_patches}: "
                          "use a larger patch_size (or a smaller mask cell)")
    return min(max(int(round(mask_ratio * num_patches)), 1), num_patches - 1)


def random_patch_mask(batch: int, num_patches: int, mask_ratio: float, device: torch.device | str | None = None,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """``(B, N)`` boolean, True where masked: exactly :func:`masked_count` random patches per sample
    (a uniform random subset, drawn on the CPU from ``generator``, or the global generator)."""
    count = masked_count(num_patches, mask_ratio)
    ranks = torch.rand(batch, num_patches, generator=generator).argsort(dim=1).argsort(dim=1)
    return (ranks < count).to(device) if device is not None else ranks < count


def upsample_mask(mask: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """A ``(B, 1, *grid)`` mask repeated to ``size`` (each a multiple of the grid): nearest neighbour."""
    grid = tuple(mask.shape[2:])
    size = tuple(int(s) for s in size)
    if size == grid:
        return mask
    if any(s % g for s, g in zip(size, grid)):
        raise ValueError(f"a feature map of size {size} does not divide into the mask grid {grid}")
    return F.interpolate(mask, size=size, mode="nearest")


def normalised_patches(patches: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Each patch (last axis) standardised by its own mean and (unbiased) variance (MAE's
    ``norm_pix_loss``)."""
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True)
    return (patches - mean) / (var + eps).sqrt()


def masked_patch_loss(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                      kind: Literal["mse", "l1"] = "mse", normalise_target: bool = True) -> torch.Tensor:
    """The loss of the module docstring on patch tensors ``(B, N, P)``; ``mask`` ``(B, N)``, True
    where masked (only those patches count)."""
    if prediction.shape != target.shape or mask.shape != prediction.shape[:2]:
        raise ValueError(f"prediction {tuple(prediction.shape)}, target {tuple(target.shape)} and mask "
                         f"{tuple(mask.shape)} do not match")
    target = target.float()
    if normalise_target:
        target = normalised_patches(target)
    difference = prediction.float() - target
    per_patch = difference.square().mean(dim=-1) if kind == "mse" else difference.abs().mean(dim=-1)
    weights = mask.float()
    return (per_patch * weights).sum() / weights.sum().clamp_min(1.0)
