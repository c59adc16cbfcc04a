"""Negative cosine similarity between a prediction and a stopped-gradient target (BYOL, SimSiam).

Both methods predict the projection of one view from the other through a small predictor ``q``;
the target branch gets no gradient (BYOL: it comes from the momentum network; SimSiam: an explicit
stop-gradient, which the paper shows is what prevents collapse). The two papers write the same
quantity in two forms:

- BYOL (Grill et al. 2020, "Bootstrap Your Own Latent", eq. 2 and the symmetrised ``L + L~``)::

      L = mean_i [ (2 - 2 cos(p1_i, z2_i)) + (2 - 2 cos(p2_i, z1_i)) ]      # in [0, 8], minimum 0

  (``||a/|a| - b/|b|||^2 = 2 - 2 cos(a, b)``; the two directions are *summed*, not averaged.)
- SimSiam (Chen & He 2021, "Exploring Simple Siamese Representation Learning", Algorithm 1)::

      D(p, z) = -mean_i cos(p_i, stopgrad(z_i))
      L = D(p1, z2) / 2 + D(p2, z1) / 2                                     # in [-1, 1], minimum -1

``z1``/``z2`` are always detached inside the loss, so the gradient reaches only the predictions.

Example:
    >>> import torch
    >>> p1, p2, z1, z2 = (torch.randn(4, 8) for _ in range(4))
    >>> abs(float(BYOLLoss()(p1, p2, p2, p1))) < 1e-5  # predictions equal to the targets: the minimum
    True
    >>> round(float(SimSiamLoss()(p1, p2, p2, p1)), 4)
    -1.0
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medssl.losses.checks import check_pair, float32, no_autocast


def cosine_to_target(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample ``cos(prediction_i, stopgrad(target_i))``, shape ``(N,)``, computed in float32."""
    with no_autocast(prediction):
        p = F.normalize(float32(prediction), dim=1)
        z = F.normalize(float32(target.detach()), dim=1)
        return (p * z).sum(dim=1)


class BYOLLoss(nn.Module):
    """BYOL's symmetrised normalised MSE, ``mean(2 - 2cos(p1, z2)) + mean(2 - 2cos(p2, z1))``.

    Call as ``loss(p1, p2, z1, z2)``: ``p*`` online predictions, ``z*`` target projections.
    """

    def forward(self, p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        check_pair(p1, p2, "BYOLLoss")
        check_pair(z1, z2, "BYOLLoss")
        check_pair(p1, z2, "BYOLLoss")
        return (2 - 2 * cosine_to_target(p1, z2)).mean() + (2 - 2 * cosine_to_target(p2, z1)).mean()


class SimSiamLoss(nn.Module):
    """SimSiam's symmetrised negative cosine, ``D(p1, z2)/2 + D(p2, z1)/2`` with stop-gradient on z.

    Call as ``loss(p1, p2, z1, z2)``: ``p*`` predictor outputs, ``z*`` projector outputs.
    """

    def forward(self, p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        check_pair(p1, p2, "SimSiamLoss")
        check_pair(z1, z2, "SimSiamLoss")
        check_pair(p1, z2, "SimSiamLoss")
        return -cosine_to_target(p1, z2).mean() / 2 - cosine_to_target(p2, z1).mean() / 2
