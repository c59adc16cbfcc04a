"""Tiny datasets and a train-loop helper shared by the masked-modelling and VoCo method tests."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from medssl.utils.seeding import make_torch_generator


def smooth_batch(count: int, size: int, spatial_dims: int, generator: torch.Generator) -> torch.Tensor:
    """``(count, 1, *size)`` smooth random images (upsampled 4-voxel noise): learnable structure."""
    coarse = torch.rand(count, 1, *(4,) * spatial_dims, generator=generator)
    mode = "bilinear" if spatial_dims == 2 else "trilinear"
    return torch.nn.functional.interpolate(coarse, size=(size,) * spatial_dims, mode=mode, align_corners=False)


def ramp_batch(count: int, size: int, spatial_dims: int, generator: torch.Generator) -> torch.Tensor:
    """``(count, 1, *size)`` linear ramps in random directions plus a little noise: every patch
    holds the same normalised pattern, so the hidden patches follow from the visible ones."""
    axes = torch.meshgrid(*[torch.linspace(-1, 1, size)] * spatial_dims, indexing="ij")
    direction = torch.randn(count, spatial_dims, generator=generator)
    ramps = sum(direction[:, i].reshape(-1, *(1,) * spatial_dims) * axes[i] for i in range(spatial_dims))
    return (ramps + 0.02 * torch.randn(ramps.shape, generator=generator)).unsqueeze(1)


class ImageItems(Dataset):
    """``{"views": [image]}`` items whose content depends only on ``(epoch, index)``, with an
    optional ``extra(index, generator) -> dict`` merged in (VoCo's overlaps)."""

    def __init__(self, n: int, size: int, spatial_dims: int, views=None):
        self.n, self.size, self.spatial_dims, self.views = n, size, spatial_dims, views
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict:
        generator = make_torch_generator(0, "items", self.epoch, index)
        if self.views is not None:
            return self.views(generator)
        return {"views": [smooth_batch(1, self.size, self.spatial_dims, generator)[0]]}


def train_losses(method, batches, steps: int, lr: float = 3e-3) -> list[float]:
    """Adam steps on ``batches(step) -> batch``; the loss of each step."""
    optimiser = torch.optim.Adam(method.parameters(), lr=lr)
    method.train()
    losses = []
    for step in range(1, steps + 1):
        loss, _ = method(batches(step))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        method.on_train_step_end(step, steps)
        losses.append(float(loss.detach()))
    return losses


def held_out_loss(method, batch: dict, seed: int = 1234) -> float:
    """The loss on ``batch`` in eval mode with the masks of ``seed`` (the same masks every call)."""
    method.eval()
    with torch.no_grad():
        torch.manual_seed(seed)
        loss = float(method(batch)[0])
    method.train()
    return loss
