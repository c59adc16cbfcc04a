"""Tiny arguments for every registry encoder (16-32 voxels a side, a few thousand parameters)."""

from __future__ import annotations

import importlib.util

import pytest

HAS_EINOPS = importlib.util.find_spec("einops") is not None
needs_einops = pytest.mark.skipif(not HAS_EINOPS, reason="MONAI's Swin/ViT need the einops package")

SIZE = 32

TINY_ARGS = {
    "resnet10": {"widths": (8, 8, 16, 16)},
    "resnet18": {"widths": (8, 8, 16, 16)},
    "resnet34": {"widths": (8, 8, 8, 16)},
    "resnet50": {"widths": (4, 4, 8, 8)},
    "resnet10_tiny": {},
    "segresnet": {"init_filters": 8, "blocks_down": (1, 1, 1)},
    "basicunet": {"features": (8, 8, 16, 16, 32, 8)},
    "swin": {"feature_size": 12, "depths": (1, 1, 1, 1), "num_heads": (1, 1, 2, 2), "window_size": 4},
    "vit": {"img_size": SIZE, "hidden_size": 24, "mlp_dim": 48, "num_heads": 2},
}

# documented pooled widths and feature-map strides (shallow to deep) for the tiny arguments above
EXPECTED = {
    "resnet10": (16, [2, 4, 8, 16, 32]),
    "resnet18": (16, [2, 4, 8, 16, 32]),
    "resnet34": (16, [2, 4, 8, 16, 32]),
    "resnet50": (32, [2, 4, 8, 16, 32]),
    "resnet10_tiny": (128, [2, 4, 8, 16, 32]),
    "segresnet": (32, [1, 2, 4]),
    "basicunet": (32, [1, 2, 4, 8, 16]),
    "swin": (192, [2, 4, 8, 16, 32]),
    "vit": (24, [16, 16, 16, 16]),
}


def encoder_param(name: str, *more):
    """A pytest param for encoder ``name`` (and ``more`` values), skipped for Swin/ViT without einops."""
    marks = (needs_einops,) if name in ("swin", "vit") else ()
    return pytest.param(name, *more, marks=marks, id="-".join(str(v) for v in (name, *more)))


def encoder_params():
    """pytest params over the registry names."""
    return [encoder_param(name) for name in TINY_ARGS]
