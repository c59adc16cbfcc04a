"""Local (dense) contrastive learning of the whole segmentation network.

Paper: Chaitanya et al., "Contrastive learning of global and local features for medical image
segmentation with limited annotations", NeurIPS 2020 (the *local* loss): the decoder's feature map
of an image and of an intensity-augmented copy of it are cut into regions; a region's embedding
must match the same region of the copy against the copy's other regions (negatives from the same
image, which makes the features tell apart the structures *within* a scan, what a segmentation
needs). As in that paper (and Models Genesis, see :mod:`medssl.methods.pretext`), the whole MONAI
network is trained, encoder and decoder, and both transfer to fine-tuning.

Views: one crop of ``patch_size`` (``pretrain.augmentation.shared_geometry: true``), two independent
intensity augmentations of it. Each view is then sub-cropped to ``patch - max_shift`` at its own
random offset (a multiple of ``region_size`` along each axis), so a region sits at *different*
positions in the two sub-crops: the network cannot match regions by where they lie in its input
(zero padding lets a CNN learn absolute position), only by what they contain. This shift is our
addition to the paper's identical-geometry pairs (the known-correspondence crops of VADeR, Pinheiro
et al. 2020, and PixPro, Xie et al. 2021, serve the same purpose).

Loss, per sample, on ``f = normalize(avg_pool(net(x), region_size))`` (``n`` regions per view)::

    L = - 1/|M| sum_{(i, j) in M} log( exp(f1_i . f2_j / tau) / sum_k exp(f1_i . f2_k / tau) )

symmetrised (view 2 to view 1), where ``M`` are the region pairs that cover the same voxels in
both sub-crops (at most ``num_regions`` of them, drawn at random) and ``k`` runs over every region
of the other view.

Export: ``encoder.pt`` (plain encoder) plus the decoder (``encoder.decoder.pt``); the network's
last layer outputs ``embedding_dim`` channels and so stays fresh in the fine-tuned network.

Example:
    >>> import torch
    >>> from medssl.models import build_encoder
    >>> method = LocalContrastive(build_encoder("resnet10_tiny", spatial_dims=2), embedding_dim=8)
    >>> x = torch.rand(2, 1, 40, 40)
    >>> loss, logs = method({"views": [x, x + 0.05 * torch.randn_like(x)]})
    >>> bool(loss > 0), sorted(k for k in logs if k != "embeddings")
    (True, ['loss', 'region_accuracy'])
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F

from medssl.errors import ConfigError, DataError
from medssl.methods.base import SSLMethod, detached_logs
from medssl.methods.pretext import _plain_args, network_around_encoder, network_decoder_state
from medssl.methods.registry import register_method
from medssl.models.base import Encoder


def draw_offsets(batch: int, dims: int, max_shift: int, region_size: int,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """``(batch, dims)`` sub-crop offsets in voxels: multiples of ``region_size`` in ``[0, max_shift]``."""
    steps = max_shift // region_size + 1
    return torch.randint(0, steps, (batch, dims), generator=generator) * region_size


def crop_at(x: torch.Tensor, offsets: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Per-sample sub-crops: ``x[b, :, o_b0 : o_b0 + size_0, ...]`` stacked over the batch."""
    crops = []
    for sample, offset in zip(x, offsets.tolist()):
        index = (slice(None),) + tuple(slice(o, o + s) for o, s in zip(offset, size))
        crops.append(sample[index])
    return torch.stack(crops)


def matching_regions(offset_a: torch.Tensor, offset_b: torch.Tensor, grid: tuple[int, ...],
                     region_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat indices ``(ia, ib)`` of region pairs covering the same voxels in two sub-crops.

    Region ``r`` of sub-crop ``a`` (grid position ``g``) lies at ``offset_a / region_size + g`` in
    the shared crop; it is region ``g + (offset_a - offset_b) / region_size`` of sub-crop ``b``
    when that position is inside ``b``'s grid.
    """
    shift = ((offset_a - offset_b) // region_size).tolist()
    axes = [torch.arange(n) for n in grid]
    positions = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(grid))
    moved = positions + torch.tensor(shift)
    inside = ((moved >= 0) & (moved < torch.tensor(grid))).all(dim=1)
    strides = torch.tensor([int(torch.tensor(grid[k + 1:]).prod()) for k in range(len(grid))])
    ia = (positions[inside] * strides).sum(dim=1)
    ib = (moved[inside] * strides).sum(dim=1)
    return ia, ib


@register_method("local_contrastive")
class LocalContrastive(SSLMethod):
    """Region-level InfoNCE on the whole segmentation network's output (see the module docstring).

    Args:
        encoder: a registry encoder (its segmentation network is built around it, sharing weights).
        embedding_dim: channels of the network's output, the region embedding (64).
        region_size: voxels per region side (4).
        max_shift: largest sub-crop offset per axis in voxels, a multiple of ``region_size`` (8);
            the network sees ``patch_size - max_shift`` (keep it a multiple of the network's
            downsampling factor: 40 -> 32 for the ResNets).
        temperature: ``tau`` (0.1).
        num_regions: matched regions per sample in the loss (128; all when fewer overlap).
        network_args: arguments of the segmentation network (as ``finetune.network_args`` for the
            decoder to transfer).
    """

    name = "local_contrastive"
    requires_shared_geometry = True

    def __init__(self, encoder: Encoder, embedding_dim: int = 64, region_size: int = 4, max_shift: int = 8,
                 temperature: float = 0.1, num_regions: int = 128,
                 network_args: Mapping[str, Any] | None = None):
        super().__init__(encoder)
        if region_size < 1 or max_shift < 0 or max_shift % region_size:
            raise ConfigError(f"method 'local_contrastive': max_shift ({max_shift}) must be a non-negative multiple "
                              f"of region_size ({region_size})")
        if temperature <= 0 or num_regions < 1 or embedding_dim < 1:
            raise ConfigError("method 'local_contrastive': temperature, num_regions and embedding_dim must be > 0")
        self.embedding_dim = int(embedding_dim)
        self.region_size = int(region_size)
        self.max_shift = int(max_shift)
        self.temperature = float(temperature)
        self.num_regions = int(num_regions)
        self.network_args = dict(network_args or {})
        self.head = network_around_encoder(encoder, self.embedding_dim, self.network_args)

    def region_embeddings(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, n, D)`` unit-norm region embeddings of sub-crops ``x``."""
        features = self.head(x).float()
        pool = F.avg_pool3d if features.ndim == 5 else F.avg_pool2d
        regions = pool(features, self.region_size)
        return F.normalize(regions.flatten(2).transpose(1, 2), dim=-1)

    def forward(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        view1, view2 = self.views(batch)[:2]
        if view1.shape != view2.shape:
            raise DataError(f"local_contrastive needs two views of one crop (augmentation.shared_geometry: true); "
                            f"got shapes {tuple(view1.shape)} and {tuple(view2.shape)}")
        spatial = tuple(int(s) for s in view1.shape[2:])
        size = tuple(s - self.max_shift for s in spatial)
        if any(s < self.region_size or s % self.region_size for s in size):
            raise DataError(f"local_contrastive: patch {spatial} minus max_shift {self.max_shift} gives sub-crops "
                            f"{size}, which must be positive multiples of region_size {self.region_size}")
        batch_size, dims = view1.shape[0], len(spatial)
        offsets1 = draw_offsets(batch_size, dims, self.max_shift, self.region_size)
        offsets2 = draw_offsets(batch_size, dims, self.max_shift, self.region_size)
        crops = torch.cat([crop_at(view1, offsets1, size), crop_at(view2, offsets2, size)])
        emb1, emb2 = self.region_embeddings(crops).chunk(2)
        grid = tuple(s // self.region_size for s in size)
        losses, correct = [], []
        for b in range(batch_size):
            ia, ib = matching_regions(offsets1[b], offsets2[b], grid, self.region_size)
            if ia.numel() > self.num_regions:
                keep = torch.randperm(ia.numel())[: self.num_regions]
                ia, ib = ia[keep], ib[keep]
            logits_12 = emb1[b, ia] @ emb2[b].T / self.temperature  # (m, n): region -> every region of view 2
            logits_21 = emb2[b, ib] @ emb1[b].T / self.temperature
            losses.append(0.5 * (F.cross_entropy(logits_12, ib) + F.cross_entropy(logits_21, ia)))
            correct.append((logits_12.argmax(dim=1) == ib).float().mean())
        loss = torch.stack(losses).mean()
        embeddings = emb1.mean(dim=1)
        return loss, detached_logs(loss, embeddings=embeddings, region_accuracy=torch.stack(correct).mean())

    def decoder_export(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """``(state, info)`` of the pretrained decoder (every network weight but the encoder's)."""
        info = {"network": type(self.head).__name__, "network_args": _plain_args(self.network_args),
                "out_channels": self.embedding_dim, "pretext": self.name}
        return network_decoder_state(self.encoder, self.head), info
