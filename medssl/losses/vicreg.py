"""VICReg: variance-invariance-covariance regularisation (Bardes, Ponce & LeCun 2022, ICLR,
"VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised Learning", Algorithm 1).

With ``N`` samples of ``D`` features per view::

    invariance = mean_{i,d} (z1_id - z2_id)^2                              # F.mse_loss
    std_k      = sqrt(var_unbiased(zk, over the batch) + eps)              # per feature
    variance   = mean_d relu(gamma - std_1d) + mean_d relu(gamma - std_2d)
    cov_k      = (zk - mean)^T (zk - mean) / (N - 1)
    covariance = sum_{i != j} cov_1,ij^2 / D + sum_{i != j} cov_2,ij^2 / D
    L = lambda * invariance + mu * variance + nu * covariance

with ``lambda = mu = 25``, ``nu = 1``, ``gamma = 1``, ``eps = 1e-4`` (the paper's defaults). This
follows the paper's pseudo-code: the two variance terms are *added*; the authors' later code
averages them (``/ 2``), which is the same as ``mu = 12.5``.

Distributed: the embeddings of all ranks are gathered first (as the reference's ``FullGatherLayer``),
so variance and covariance are those of the global batch.

Example:
    >>> import torch
    >>> loss = VICRegLoss()
    >>> z = torch.randn(256, 4) * 3                   # decorrelated, std well above gamma
    >>> float(loss.terms(z, z)["invariance"])         # identical views: no invariance term
    0.0
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medssl.errors import ConfigError
from medssl.losses.barlow import off_diagonal
from medssl.losses.checks import check_pair, check_positive, float32, no_autocast
from medssl.utils.distributed import gather_with_grad


class VICRegLoss(nn.Module):
    """``lambda * invariance + mu * variance + nu * covariance`` (see the module docstring).

    Args:
        invariance_weight: ``lambda`` (25).
        variance_weight: ``mu`` (25).
        covariance_weight: ``nu`` (1).
        gamma: target standard deviation of every feature (1).
        eps: added to the variance under the square root (1e-4).
        gather_distributed: statistics over the global batch of all ranks.
    """

    def __init__(
        self,
        invariance_weight: float = 25.0,
        variance_weight: float = 25.0,
        covariance_weight: float = 1.0,
        gamma: float = 1.0,
        eps: float = 1e-4,
        gather_distributed: bool = True,
    ):
        super().__init__()
        for name, value in {"invariance_weight": invariance_weight, "variance_weight": variance_weight,
                            "covariance_weight": covariance_weight}.items():
            if value < 0:
                raise ConfigError(f"VICRegLoss: {name} must be >= 0, got {value}")
        self.invariance_weight = float(invariance_weight)
        self.variance_weight = float(variance_weight)
        self.covariance_weight = float(covariance_weight)
        self.gamma = check_positive("gamma", gamma, "VICRegLoss")
        self.eps = check_positive("eps", eps, "VICRegLoss")
        self.gather_distributed = gather_distributed

    def _variance(self, z: torch.Tensor) -> torch.Tensor:
        std = torch.sqrt(z.var(dim=0) + self.eps)
        return F.relu(self.gamma - std).mean()

    @staticmethod
    def _covariance(z: torch.Tensor) -> torch.Tensor:
        n, d = z.shape
        centred = z - z.mean(dim=0)
        cov = centred.T @ centred / (n - 1)
        return off_diagonal(cov).pow(2).sum() / d

    def terms(self, z1: torch.Tensor, z2: torch.Tensor) -> dict[str, torch.Tensor]:
        """The three unweighted terms ``invariance``, ``variance``, ``covariance`` (for logging)."""
        check_pair(z1, z2, "VICRegLoss", min_batch=2)
        with no_autocast(z1):
            if self.gather_distributed:
                z1, z2 = gather_with_grad(z1), gather_with_grad(z2)
            z1, z2 = float32(z1), float32(z2)
            return {
                "invariance": F.mse_loss(z1, z2),
                "variance": self._variance(z1) + self._variance(z2),
                "covariance": self._covariance(z1) + self._covariance(z2),
            }

    def combine(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """The weighted sum of the terms returned by :meth:`terms`."""
        return (
            self.invariance_weight * terms["invariance"]
            + self.variance_weight * terms["variance"]
            + self.covariance_weight * terms["covariance"]
        )

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        return self.combine(self.terms(z1, z2))

    def extra_repr(self) -> str:
        return (f"invariance_weight={self.invariance_weight}, variance_weight={self.variance_weight}, "
                f"covariance_weight={self.covariance_weight}")
