"""Small SSL method and dataset conforming to the engine's contracts, for the engine's tests.

``ToyMethod`` has what real methods have and what exactness depends on: a tiny 3D conv encoder,
a projection head with batch norm and dropout (global RNG), a momentum (EMA) copy of the encoder
updated in ``on_train_step_end``, a state buffer, parameter groups marking biases/norms for LARS
exclusion, and "embeddings" in its logs. ``ToyViews`` yields two views per item whose randomness
depends only on (seed, epoch, index), and offers a device-side ``batch_augment``.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from medssl.utils.seeding import make_torch_generator

SIZE = 8


class ToyEncoder(nn.Module):
    def __init__(self, width: int = 4, feature_dim: int = 8) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, width, 3, padding=1)
        self.fc = nn.Linear(width, feature_dim)
        self.feature_dim = feature_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.relu(self.conv(x)).mean(dim=(2, 3, 4)))


class ToyMethod(nn.Module):
    """Two views -> encoder -> head -> loss: ``"ntxent"`` (medssl.losses.NTXentLoss, float32),
    ``"ntxent_exact"`` (NT-Xent written here over ``gather_with_grad``, in the input's precision, so
    a float64 run can be compared tightly), ``"mse"`` (per-sample regression of each embedding onto a
    fixed target), or ``"nan_after"`` (mse that turns NaN from optimiser step ``nan_step`` on)."""

    batch_kind = "views"
    num_views = 2

    def __init__(self, loss: str = "ntxent", batchnorm: bool = True, dropout: float = 0.1, nan_step: int = 10**9):
        super().__init__()
        self.encoder = ToyEncoder()
        layers: list[nn.Module] = [nn.Linear(8, 16, bias=not batchnorm)]  # no bias before BN
        if batchnorm:
            layers.append(nn.BatchNorm1d(16))
        layers += [nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 8)]
        self.head = nn.Sequential(*layers)
        self.teacher = copy.deepcopy(self.encoder)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.register_buffer("steps_seen", torch.zeros((), dtype=torch.long))
        self.loss_kind = loss
        self.nan_step = nan_step
        if loss == "ntxent":
            from medssl.losses import NTXentLoss

            self.criterion = NTXentLoss(temperature=0.5)
        self.step_calls: list[tuple[int, int]] = []

    def forward(self, batch):
        v1, v2 = batch["views"]
        z = self.head(self.encoder(torch.cat([v1, v2])))
        z1, z2 = z.chunk(2)
        with torch.no_grad():
            t = self.teacher(v1)
        if self.loss_kind == "ntxent":
            loss = self.criterion(z1, z2)
        elif self.loss_kind == "ntxent_exact":
            loss = ntxent_global(z1, z2, temperature=0.5)
        else:
            target = torch.linspace(-1, 1, z.shape[1], device=z.device)
            loss = ((z - target) ** 2).mean()
            if self.loss_kind == "nan_after" and int(self.steps_seen) >= self.nan_step - 1:
                loss = loss * float("nan")
        return loss, {"teacher_norm": t.norm(dim=1).mean(), "embeddings": z1.detach()}

    def on_train_step_end(self, step: int, max_steps: int) -> None:
        self.step_calls.append((step, max_steps))
        self.steps_seen += 1
        with torch.no_grad():
            for t, s in zip(self.teacher.parameters(), self.encoder.parameters()):
                t.mul_(0.9).add_(s, alpha=0.1)

    def parameter_groups(self, weight_decay: float):
        decay, no_decay = [], []
        for p in self.parameters():
            if p.requires_grad:
                (no_decay if p.ndim <= 1 else decay).append(p)
        return [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0, "lars_exclude": True},
        ]


def ntxent_global(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent over the batch gathered from all ranks (mean over the 2N global anchors)."""
    from medssl.utils.distributed import gather_with_grad

    u = F.normalize(torch.cat([gather_with_grad(z1), gather_with_grad(z2)]), dim=1)
    n = u.shape[0] // 2
    logits = u @ u.T / temperature
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=u.device), float("-inf"))
    positives = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(u.device)
    return F.cross_entropy(logits, positives)


class ToyViews(Dataset):
    """``n`` items of two noisy 8^3 views of a smooth blob; randomness from (seed, epoch, index)."""

    def __init__(self, n: int = 6, seed: int = 0, device_side: bool = False, dtype=torch.float32) -> None:
        self.n, self.seed, self.epoch, self.device_side, self.dtype = n, seed, 0, device_side, dtype
        self.items_made: list[tuple[int, int]] = []

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):
        self.items_made.append((self.epoch, index))
        g = make_torch_generator(self.seed, "toy", self.epoch, index)
        grid = torch.linspace(-1, 1, SIZE)
        x, y, z = torch.meshgrid(grid, grid, grid, indexing="ij")
        centre = torch.rand(3, generator=g) - 0.5
        blob = torch.exp(-((x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2) * 4)[None]
        views = [(blob + 0.1 * torch.randn(blob.shape, generator=g)).to(self.dtype) for _ in range(2)]
        return {"views": views}

    def batch_augment(self, batch, generator):
        if not self.device_side:
            return batch
        views = [v * (1 + 0.1 * torch.rand(v.shape[0], 1, 1, 1, 1, generator=generator, device=v.device))
                 for v in batch["views"]]
        return {**batch, "views": views}
