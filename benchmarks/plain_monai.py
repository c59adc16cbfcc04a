"""The baseline a user would write with MONAI alone: the reference the toolkit's recipe must beat.

A 3D ``monai.networks.nets.UNet`` (channels 16-256, strides 2, two residual units: the network of
MONAI's spleen and BTCV tutorials), ``DiceCELoss`` (softmax, one-hot targets), Adam, and MONAI's
usual dictionary augmentation: ``RandCropByPosNegLabeld`` (pos 1, neg 1), ``RandFlipd`` on each
axis and ``RandRotate90d`` (p 0.1 each), ``RandShiftIntensityd`` (offsets 0.1, p 0.5), as in the
tutorials. It trains on the same preprocessed cases (the study's cache: same spacing, window and
intensity range), for the same steps, and is scored by medssl's sliding-window evaluation of the
same test cases, so only the recipe differs. It is always 3D: where the study runs the 2D slice
track, the plain recipe takes the 3D track's patches and batch (:data:`PATCH_3D`, :data:`BATCH_3D`),
as a MONAI user would. It has no post-processing (``keep_largest_components``: none). Random state
from the seed (MONAI ``set_determinism``).

Example::

    per_case = train_plain_monai(data, train_ids, test_ids, cfg, seed=0)
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch


#: The plain recipe's patch and batch when the study's own recipe is 2D (the 3D track's, TRACK_3D).
PATCH_3D = (32, 32, 32)
BATCH_3D = 4


def plain_monai_finetune(cfg: Any) -> Any:
    """The study's ``finetune`` section as the plain recipe uses it: 3D patches (the 3D track's patch
    and batch where the study is 2D), no slice context, no post-processing."""
    update: dict[str, Any] = {"keep_largest_components": None, "slice_context": 0}
    if len(tuple(cfg.patch_size)) == 2:
        update.update(patch_size=PATCH_3D, batch_size=BATCH_3D)
    return cfg.model_copy(update=update)


def plain_monai_network(num_classes: int) -> torch.nn.Module:
    """MONAI's tutorial 3D UNet."""
    from monai.networks.layers import Norm
    from monai.networks.nets import UNet

    return UNet(spatial_dims=3, in_channels=1, out_channels=num_classes, channels=(16, 32, 64, 128, 256),
                strides=(2, 2, 2, 2), num_res_units=2, norm=Norm.BATCH)


def plain_monai_transforms(patch_size: Sequence[int], samples: int):
    """MONAI's usual training augmentation on ``{"image", "label"}`` dictionaries."""
    from monai.transforms import (Compose, RandCropByPosNegLabeld, RandFlipd, RandRotate90d,
                                  RandShiftIntensityd)

    keys = ["image", "label"]
    return Compose([
        RandCropByPosNegLabeld(keys, label_key="label", spatial_size=tuple(patch_size), pos=1, neg=1,
                               num_samples=samples, image_key="image", image_threshold=0),
        RandFlipd(keys, spatial_axis=[0], prob=0.1),
        RandFlipd(keys, spatial_axis=[1], prob=0.1),
        RandFlipd(keys, spatial_axis=[2], prob=0.1),
        RandRotate90d(keys, prob=0.1, max_k=3),
        RandShiftIntensityd(["image"], offsets=0.1, prob=0.5),
    ])


def train_plain_monai(data: Any, train_ids: Sequence[str], test_ids: Sequence[str], cfg: Any, *, seed: int,
                      lr: float = 1e-3) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Train the plain MONAI recipe on ``train_ids`` for ``cfg.steps`` steps of ``cfg.batch_size``
    patches (``cfg``: the study's ``finetune`` section) and score ``test_ids``: per-case table and record."""
    from monai.losses import DiceCELoss
    from monai.utils import set_determinism

    from medssl.eval.cases import remap_mask
    from medssl.eval.evaluate import evaluate_segmentation
    from medssl.eval.networks import FinetuneModel

    cfg = plain_monai_finetune(cfg)
    set_determinism(seed=seed)
    started = time.perf_counter()
    network = plain_monai_network(cfg.num_classes)
    optimizer = torch.optim.Adam(network.parameters(), lr=lr)
    criterion = DiceCELoss(to_onehot_y=True, softmax=True)
    transforms = plain_monai_transforms(cfg.patch_size, samples=2)
    transforms.set_random_state(seed=seed)
    cases = [data.cases[c] for c in train_ids]
    items = [{"image": case.image_tensor(), "label": remap_mask(case.mask_tensor(), cfg.mask_labels)} for case in cases]
    order = np.random.default_rng(seed)
    network.train()
    losses = []
    for _ in range(cfg.steps):
        patches = []
        while len(patches) < cfg.batch_size:
            patches += transforms(items[int(order.integers(len(items)))])
        patches = patches[:cfg.batch_size]
        image = torch.stack([torch.as_tensor(p["image"]) for p in patches]).float()
        label = torch.stack([torch.as_tensor(p["label"]) for p in patches]).long()
        optimizer.zero_grad(set_to_none=True)
        loss = criterion(network(image), label)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    network.eval()
    model = FinetuneModel(network=network, task="segmentation", spatial_dims=3, encoder_config={}, stages=[],
                          init="plain_monai")
    per_case = evaluate_segmentation(model, [data.cases[c] for c in test_ids], cfg)
    record = {"seconds": round(time.perf_counter() - started, 1), "first_loss": losses[0], "final_loss": losses[-1],
              "steps": len(losses), "forward_items": len(losses) * cfg.batch_size}
    set_determinism(seed=None)
    return per_case, record
