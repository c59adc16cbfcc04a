"""Post-processing of predicted label maps: keep each organ's largest connected components.

A network trained on one or two labeled cases scatters false-positive islands far from the organ
(a liver-coloured blob in the spleen, a kidney in the bowel). Anatomy says how many pieces an organ
has: one liver, two kidneys. Keeping only that many of each class's largest connected components,
and returning the rest to background, is the post-processing nnU-Net applies when it helps on its
cross-validation (Isensee et al., Nature Methods 2021, "nnU-Net", section "Postprocessing"), and
MONAI's :class:`monai.transforms.KeepLargestConnectedComponent` (which needs scikit-image; here
:func:`scipy.ndimage.label`, full connectivity).

``finetune.keep_largest_components: {1: 1, 2: 2}`` (class index after ``mask_labels``, not the mask
value -> number of components) turns it on for the prediction that is scored, the same for every
arm of a study. Classes not listed are left untouched. With two labeled cases there is no
validation set to decide per class as nnU-Net does: list a class only where its anatomy is known.

Formula, per listed class ``c`` with ``k`` components: ``P'(v) = c`` where ``P(v) = c`` and ``v``
lies in one of the ``k`` largest (by voxel count) face-, edge- or corner-connected components of
``{P = c}``; ``P'(v) = 0`` at the other voxels of ``{P = c}``; ``P' = P`` elsewhere.

Example:
    >>> import torch
    >>> labels = torch.zeros(8, 8, 1, dtype=torch.long)
    >>> labels[0:3, 0:3] = 1            # the organ
    >>> labels[6, 6] = 1                # a one-voxel island
    >>> labels[5:7, 0:2] = 2            # a second class, not listed
    >>> kept = keep_largest_components(labels, {1: 1})
    >>> int((kept == 1).sum()), int((kept == 2).sum())
    (9, 4)
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch


def keep_largest_components(labels: torch.Tensor, components: Mapping[int, int]) -> torch.Tensor:
    """``labels`` ``(X, Y, Z)`` (integer classes) with each listed class ``c`` reduced to its
    ``components[c]`` largest connected components; the removed voxels become background (0).

    Returns a new tensor; ``labels`` is not changed. An empty mapping returns a copy.
    """
    from scipy import ndimage

    if labels.ndim != 3:
        raise ValueError(f"labels must be a label map (X, Y, Z), got shape {tuple(labels.shape)}")
    result = labels.detach().cpu().numpy().copy()
    structure = ndimage.generate_binary_structure(3, 3)    # face, edge and corner neighbours
    for label, count in sorted(components.items()):
        if int(label) < 1 or int(count) < 1:
            raise ValueError(f"keep_largest_components needs a class >= 1 and a count >= 1, got {label}: {count}")
        pieces, n = ndimage.label(result == int(label), structure=structure)
        if n <= int(count):
            continue
        sizes = np.bincount(pieces.ravel())[1:]                 # voxels of components 1..n
        kept = np.argsort(-sizes, kind="stable")[: int(count)] + 1  # ties: the lower component index
        result[(pieces > 0) & ~np.isin(pieces, kept)] = 0
    return torch.from_numpy(result).to(labels.device)
