"""Structure-wise contrast: each annotated structure of a training patch gets its own intensity offset.

Simulated artefact: contrast enhancement that differs per organ and per phase. Iodinated contrast
raises each organ's attenuation by its own amount (the built-in synthetic CT, after the published
Hounsfield values: kidney cortex 32 HU without contrast and 170 HU in the portal-venous phase,
liver 60 -> 110, spleen 48 -> 118, muscle 45 -> 55), and an MR sequence changes each tissue's grey
level differently. Two labeled cases show one or two phases; the test cases show others. A global
intensity change (windows, gamma, the curves of :mod:`medssl.transforms.intensity_randomization`)
moves every tissue together and cannot teach "the kidneys may be brighter or darker than the muscle
next to them". This does, from the annotation the training patch already has.

The idea is SynthSeg's per-label intensities (Billot et al., "SynthSeg: Segmentation of brain MRI
scans of any contrast and resolution without retraining", Medical Image Analysis 2023), which draws
every label's mean intensity at random. Here the image is real: only the annotated structures move,
and each keeps its texture and noise. The indicator of a structure is blurred before use so that no
new hard edge appears exactly on the annotation's border (which a network could learn as a shortcut).

Formula, per structure ``c`` (a mask value of the task), on the patch's normalised intensities::

    x'(v) = x(v) + sum_c  w_c(v) * delta_c,    w_c = G_sigma * 1[mask = c],
    delta_c ~ U(-shift, +shift) with probability prob, else 0,

``G_sigma`` a Gaussian blur of ``sigma`` voxels. Every channel of the patch gets the same offsets (the
neighbouring slices of a 2.5D input stay consistent); with a mask per channel (2.5D: each neighbour
slice's own annotation) each channel uses its own indicator. ``shift`` is in the units of the
normalised image: the preprocessing maps a CT window or MR percentiles to [0, 1], so ``0.3`` is
150 HU of the demo's 500-HU window.

Example:
    >>> import torch
    >>> image = torch.full((1, 16, 16), 0.5)
    >>> mask = torch.zeros(1, 16, 16, dtype=torch.long)
    >>> mask[0, 4:12, 4:12] = 2
    >>> out = structure_contrast(image, mask, [1, 2], torch.Generator().manual_seed(0), prob=1.0, shift=0.3,
    ...                          sigma=0.0)
    >>> inside, outside = float(out[0, 8, 8]), float(out[0, 0, 0])
    >>> 0 < abs(inside - 0.5) <= 0.3, outside
    (True, 0.5)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from medssl.errors import ConfigError

__all__ = ["StructureContrast", "structure_contrast", "check_structure_contrast"]


def check_structure_contrast(prob: float, shift: float, sigma: float) -> None:
    """Raise :class:`ConfigError` for a probability outside [0, 1] or a negative shift or blur."""
    if not 0.0 <= float(prob) <= 1.0:
        raise ConfigError(f"finetune.structure_contrast={prob} must be a probability in [0, 1]")
    if float(shift) < 0.0:
        raise ConfigError(f"finetune.structure_contrast_shift={shift} must be >= 0")
    if float(sigma) < 0.0:
        raise ConfigError(f"structure contrast blur sigma={sigma} must be >= 0")


def draw_offsets(structures: Sequence[int], generator: torch.Generator, *, prob: float, shift: float
                 ) -> dict[int, float]:
    """One offset per structure: ``U(-shift, shift)`` with probability ``prob``, else 0 (left out).

    Two draws per structure whatever the outcome, so one structure's draw never shifts another's."""
    offsets: dict[int, float] = {}
    for value in structures:
        gate, amount = torch.rand(2, generator=generator).tolist()
        if gate < prob and shift > 0:
            offsets[int(value)] = (2.0 * amount - 1.0) * float(shift)
    return offsets


def structure_contrast(image: torch.Tensor, mask: torch.Tensor, structures: Sequence[int],
                       generator: torch.Generator, *, prob: float, shift: float, sigma: float = 1.0,
                       value_range: tuple[float, float] | None = (0.0, 1.0)) -> torch.Tensor:
    """``image`` ``(C, *S)`` with each structure's region shifted by its own random offset.

    Args:
        image: one training patch, ``(C, *S)`` float.
        mask: its annotation ``(1, *S)`` (one for every channel) or ``(C, *S)`` (one per channel).
        structures: the mask values that may move (the task's ``mask_labels``); other values and
            the background stay as they are.
        generator: the randomness.
        prob: probability that a structure moves.
        shift: the largest offset, in normalised intensity units.
        sigma: the Gaussian blur of each structure's indicator, in voxels (0: a hard edge).
        value_range: the result is clipped to it (medssl's preprocessing maps intensities to
            [0, 1]: a brightened organ saturates as the preprocessing window would); None: no clip.

    Returns:
        A new tensor; ``image`` is not changed.
    """
    check_structure_contrast(prob, shift, sigma)
    if mask.shape[1:] != image.shape[1:] or mask.shape[0] not in (1, image.shape[0]):
        raise ValueError(f"mask {tuple(mask.shape)} must be (1 or {image.shape[0]}, *{tuple(image.shape[1:])}) "
                         "for the image it annotates")
    offsets = draw_offsets(structures, generator, prob=prob, shift=shift)
    if not offsets:
        return image.clone()
    labels = mask.detach().cpu().numpy()
    change = np.zeros(labels.shape, np.float32)
    for value, offset in offsets.items():
        indicator = (labels == value).astype(np.float32)
        if not indicator.any():
            continue
        if sigma > 0:
            from scipy import ndimage

            indicator = ndimage.gaussian_filter(indicator, sigma=(0.0,) + (float(sigma),) * (indicator.ndim - 1),
                                                mode="nearest")
        change += offset * indicator
    shifted = image + torch.from_numpy(change).to(device=image.device, dtype=image.dtype)
    return shifted if value_range is None else shifted.clamp(float(value_range[0]), float(value_range[1]))


@dataclass(frozen=True)
class StructureContrast:
    """The settings of :func:`structure_contrast` for a dataset: ``f(image, mask, generator)``.

    Example:
        >>> import torch
        >>> augment = StructureContrast(structures=(1, 2), prob=0.5, shift=0.3)
        >>> augment(torch.zeros(1, 8, 8), torch.ones(1, 8, 8, dtype=torch.long), torch.Generator()).shape
        torch.Size([1, 8, 8])
    """

    structures: tuple[int, ...]
    prob: float
    shift: float
    sigma: float = 1.0

    def __post_init__(self) -> None:
        check_structure_contrast(self.prob, self.shift, self.sigma)
        if not self.structures or min(int(v) for v in self.structures) < 1:
            raise ConfigError(f"structure contrast needs mask values >= 1 to move, got {list(self.structures)}")

    def __call__(self, image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return structure_contrast(image, mask, self.structures, generator, prob=self.prob, shift=self.shift,
                                  sigma=self.sigma)
