"""A toy two-view problem and small method arguments shared by the method tests."""

from __future__ import annotations

import torch

from medssl.models import build_encoder
from medssl.utils.seeding import make_torch_generator, seed_everything

# head widths small enough for CPU tests; every other argument keeps the method's paper default
SMALL_ARGS = {
    "simclr": {"projection_dim": 16},
    "moco": {"projection_dim": 16, "queue_size": 64},
    "byol": {"projection_hidden_dim": 32, "projection_dim": 16, "prediction_hidden_dim": 32},
    "simsiam": {"projection_dim": 32, "prediction_hidden_dim": 8},
    "barlow_twins": {"projection_hidden_dim": 32, "projection_dim": 32},
    "vicreg": {"projection_hidden_dim": 32, "projection_dim": 32},
    "dino": {"out_dim": 32, "hidden_dim": 32, "bottleneck_dim": 16},
    "nnclr": {"projection_hidden_dim": 32, "projection_dim": 16, "prediction_hidden_dim": 32,
              "support_set_size": 64},
    "swav": {"projection_hidden_dim": 32, "projection_dim": 16, "num_prototypes": 8,
             "freeze_prototypes_steps": 0},
}
JOINT_EMBEDDING = tuple(SMALL_ARGS)


def tiny_encoder(spatial_dims: int = 2, seed: int = 0):
    seed_everything(seed)
    return build_encoder("resnet10_tiny", spatial_dims=spatial_dims)


def smooth_images(count: int, size: int, spatial_dims: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` distinct smooth random images ``(count, 1, *size)``: upsampled coarse noise."""
    coarse = torch.randn(count, 1, *(4,) * spatial_dims, generator=generator)
    mode = "bilinear" if spatial_dims == 2 else "trilinear"
    return torch.nn.functional.interpolate(coarse, size=(size,) * spatial_dims, mode=mode, align_corners=False)


def two_views(images: torch.Tensor, generator: torch.Generator, noise: float = 0.3,
              local_size: int | None = None, local_views: int = 0) -> dict:
    """Two noisy views of each image (plus optional centre-cropped local views)."""
    views = [images + noise * torch.randn(images.shape, generator=generator) for _ in range(2)]
    if local_views:
        start = (images.shape[-1] - local_size) // 2
        crop = images[(..., *(slice(start, start + local_size),) * (images.ndim - 2))]
        views += [crop + noise * torch.randn(crop.shape, generator=generator) for _ in range(local_views)]
    return {"views": views}


def train_losses(method, steps: int = 12, batch: int = 16, size: int = 16, spatial_dims: int = 2,
                 lr: float = 3e-3, local_views: int = 0, fresh_images: bool = False) -> list[float]:
    """Adam on a fixed set of images (new images each step with ``fresh_images``, for methods whose
    queue must not hold keys of the same images) with fresh view noise; the loss of each step."""
    generator = make_torch_generator(0, "toy-views")
    images = smooth_images(batch, size, spatial_dims, generator)
    groups = method.parameter_groups(weight_decay=0.0)
    optimiser = torch.optim.Adam([{"params": g["params"]} for g in groups], lr=lr)
    method.train()
    losses = []
    for step in range(1, steps + 1):
        if fresh_images:
            images = smooth_images(batch, size, spatial_dims, generator)
        loss, _ = method(two_views(images, generator, local_size=size // 2, local_views=local_views))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        method.on_train_step_end(step, steps)
        losses.append(float(loss.detach()))
    return losses
