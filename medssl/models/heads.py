"""Heads that SSL methods put on an encoder's pooled features.

- :class:`ProjectionHead`: ``(Linear-BN-ReLU) x (n-1)`` then ``Linear`` (optionally BN), the
  projector of SimCLR (2 layers), BYOL (2 layers, 4096 hidden, 256 out), Barlow Twins and VICReg
  (3 layers of 8192), SimSiam and NNCLR (3 layers, BN also after the last layer), MoCo v2 (2 layers,
  no BN).
- :class:`PredictionHead`: BYOL/SimSiam/NNCLR predictor ``Linear-BN-ReLU-Linear``.
- :class:`DINOHead`: DINO's MLP with GELU, an l2-normalised bottleneck and a weight-normalised last
  layer whose norm is fixed to 1 (``norm_last_layer``).
- :class:`Prototypes`: SwAV's prototype vectors, a bias-free linear layer whose rows are kept on the
  unit sphere.

Linear layers followed by batch norm have no bias (the norm's shift replaces it), as in the
Barlow Twins, SimSiam and VICReg reference code. Under DDP, the engine converts these batch norms to
``SyncBatchNorm`` so their statistics span the global batch (SimCLR's "global BN").

Gap filled: MONAI has no SSL heads; torch's ``weight_norm`` parametrisation is reused for DINO.

Example:
    >>> import torch
    >>> head = ProjectionHead(512, hidden_dim=2048, out_dim=128, num_layers=2)
    >>> head(torch.randn(8, 512)).shape
    torch.Size([8, 128])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from medssl.errors import ConfigError


def zero_gradient(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor``'s value with a zero gradient: the parameter stays in the graph (DDP needs every
    trainable parameter to receive a gradient) but does not learn."""
    return tensor.detach() + tensor * 0.0


def _check_dims(name: str, **dims: int) -> None:
    for key, value in dims.items():
        if int(value) < 1:
            raise ConfigError(f"{name}: {key} must be >= 1, got {value}")


class ProjectionHead(nn.Sequential):
    """``num_layers`` linear layers with BN + ReLU between them.

    Args:
        in_dim: encoder feature width.
        hidden_dim: width of the hidden layers.
        out_dim: projection width.
        num_layers: linear layers (>= 1).
        batch_norm: BN after each hidden linear layer.
        last_batch_norm: BN after the last linear layer too (SimSiam, NNCLR, SimCLR v2).
        last_batch_norm_affine: learnable scale/shift of that last BN (SimSiam: False).
        last_bias: bias of the last linear layer (ignored when ``last_batch_norm``).
    """

    def __init__(self, in_dim: int, hidden_dim: int = 2048, out_dim: int = 128, num_layers: int = 2,
                 batch_norm: bool = True, last_batch_norm: bool = False, last_batch_norm_affine: bool = True,
                 last_bias: bool = True):
        _check_dims("ProjectionHead", in_dim=in_dim, hidden_dim=hidden_dim, out_dim=out_dim, num_layers=num_layers)
        layers: list[nn.Module] = []
        width = in_dim
        for _ in range(num_layers - 1):
            layers.append(nn.Linear(width, hidden_dim, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.ReLU(inplace=True))
            width = hidden_dim
        layers.append(nn.Linear(width, out_dim, bias=last_bias and not last_batch_norm))
        if last_batch_norm:
            layers.append(nn.BatchNorm1d(out_dim, affine=last_batch_norm_affine))
        super().__init__(*layers)
        self.in_dim, self.out_dim = in_dim, out_dim


class PredictionHead(nn.Sequential):
    """``Linear(in, hidden, no bias) - BN - ReLU - Linear(hidden, out)`` (BYOL, SimSiam, NNCLR)."""

    def __init__(self, in_dim: int, hidden_dim: int = 4096, out_dim: int = 256):
        _check_dims("PredictionHead", in_dim=in_dim, hidden_dim=hidden_dim, out_dim=out_dim)
        super().__init__(
            nn.Linear(in_dim, hidden_dim, bias=False),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )
        self.in_dim, self.out_dim = in_dim, out_dim


class DINOHead(nn.Module):
    """DINO projection head (Caron et al. 2021, reference ``DINOHead``).

    ``MLP(in -> hidden -> ... -> bottleneck)`` with GELU (optional BN), l2-normalise, then a
    weight-normalised ``Linear(bottleneck, out_dim, bias=False)``; with ``norm_last_layer`` its
    per-row norm ``g`` is fixed to 1, so the logits are cosine similarities to ``out_dim`` unit
    vectors. Linear weights start from a truncated normal (std 0.02), biases at 0, as in DINO.

    Args:
        in_dim, out_dim: encoder width, number of "prototypes" ``K`` (65536 in DINO).
        hidden_dim, bottleneck_dim, num_layers: 2048, 256, 3.
        use_bn: BN in the MLP (off for ViTs in DINO).
        norm_last_layer: freeze ``g = 1`` (True in DINO for stability).
    """

    def __init__(self, in_dim: int, out_dim: int = 65536, hidden_dim: int = 2048, bottleneck_dim: int = 256,
                 num_layers: int = 3, use_bn: bool = False, norm_last_layer: bool = True):
        super().__init__()
        _check_dims("DINOHead", in_dim=in_dim, out_dim=out_dim, hidden_dim=hidden_dim,
                    bottleneck_dim=bottleneck_dim, num_layers=num_layers)
        if num_layers == 1:
            self.mlp: nn.Module = nn.Linear(in_dim, bottleneck_dim)
        else:
            layers: list[nn.Module] = [nn.Linear(in_dim, hidden_dim)]
            if use_bn:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.GELU())
            for _ in range(num_layers - 2):
                layers.append(nn.Linear(hidden_dim, hidden_dim))
                if use_bn:
                    layers.append(nn.BatchNorm1d(hidden_dim))
                layers.append(nn.GELU())
            layers.append(nn.Linear(hidden_dim, bottleneck_dim))
            self.mlp = nn.Sequential(*layers)
        for module in self.mlp.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        magnitude = self.last_layer.parametrizations.weight.original0
        with torch.no_grad():
            magnitude.fill_(1.0)
        magnitude.requires_grad_(not norm_last_layer)
        self.in_dim, self.out_dim = in_dim, out_dim

    def forward(self, x: torch.Tensor, freeze_last_layer: bool = False) -> torch.Tensor:
        """Head output ``(B, out_dim)``; ``freeze_last_layer`` sends zero gradients to the last
        layer (DINO keeps it fixed during the first epoch) while keeping it in the autograd graph,
        as DDP requires of every trainable parameter."""
        x = F.normalize(self.mlp(x), dim=-1, p=2)
        weight = self.last_layer.weight
        if freeze_last_layer:
            weight = zero_gradient(weight)
        return F.linear(x, weight)


class Prototypes(nn.Module):
    """SwAV prototypes: ``scores = z @ C^T`` with the rows of ``C`` (``K x dim``) on the unit sphere.

    Call :meth:`normalize_` before each forward (the reference does it at every iteration); the
    scores of a unit ``z`` are then cosine similarities.
    """

    def __init__(self, dim: int, num_prototypes: int = 3000):
        super().__init__()
        _check_dims("Prototypes", dim=dim, num_prototypes=num_prototypes)
        self.layer = nn.Linear(dim, num_prototypes, bias=False)

    @torch.no_grad()
    def normalize_(self) -> None:
        self.layer.weight.copy_(F.normalize(self.layer.weight, dim=1))

    def forward(self, z: torch.Tensor, frozen: bool = False) -> torch.Tensor:
        """Scores ``(B, K)``; ``frozen`` sends zero gradients to the prototypes (SwAV freezes them
        for the first iterations)."""
        weight = zero_gradient(self.layer.weight) if frozen else self.layer.weight
        return F.linear(z, weight)
