"""The geometry of fine-tuning: the training patches' spatial augmentation, and the test-time flips
that match it.

Few-label training gets mild geometry (:func:`finetune_spatial_augmentation`): left-right flips
(volume axis 0, probability 0.5), +-10 degree in-plane rotations and +-10% scaling. Test-time
mirroring (``finetune.test_time_flips``, nnU-Net's mirroring, Isensee et al. 2021) may only flip the
axes the network was trained flipped: an abdomen flipped front to back or head to foot is an image
the network never saw, and averaging its prediction in costs accuracy (on the built-in CT cohort,
flipping all three axes cost 0.11-0.14 Dice). :func:`trained_flip_axes` gives those axes.

Example:
    >>> trained_flip_axes(True), trained_flip_axes(False)
    ((0,), ())
"""

from __future__ import annotations

from medssl.transforms.spatial import SpatialAugmentation


def finetune_spatial_augmentation(enabled: bool) -> SpatialAugmentation:
    """Mild geometry for few-label training: left-right flips, +-10 degree in-plane rotation, +-10% scale."""
    if not enabled:
        return SpatialAugmentation.identity()
    return SpatialAugmentation(flip_prob=(0.5, 0.0, 0.0), rot90_prob=0.0, rotate_prob=0.3,
                               rotate_range_deg=(0.0, 0.0, 10.0), scale_prob=0.3, scale_range=(0.9, 1.1))


def trained_flip_axes(augment: bool) -> tuple[int, ...]:
    """The volume axes (0, 1, 2) that training flips with ``finetune.augment`` (the only ones
    test-time mirroring may flip)."""
    flips = finetune_spatial_augmentation(augment).flip_prob
    return tuple(axis for axis, probability in enumerate(flips) if float(probability) > 0.0)
