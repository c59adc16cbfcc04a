"""Elastic deformation of a view: a cubic B-spline displacement through a coarse grid of controls.

The controls (``elastic_grid``, ``(d, g_1, ..., g_d)`` displacements in source voxels, drawn by
:func:`medssl.transforms.spatial.draw_view_geometry`) are spread over the patch by cubic B-spline
weights (:func:`bspline_basis`: non-negative, summing to one, so the dense field never exceeds the
largest control displacement, which bounds the voxels a view reads). Simulates the smooth
non-rigid variation of soft tissue between patients and breaths (as MONAI's ``Rand3DElastic``,
here computed separably, one small matrix product per axis, and fused into the view's one
resampling by :mod:`medssl.transforms.resampling`).

Example:
    >>> bspline_basis(5, 4).sum(axis=1).round(6).tolist()
    [1.0, 1.0, 1.0, 1.0, 1.0]
    >>> grid = np.zeros((3, 4, 4, 4), np.float32); grid[0] = 2.0      # every control moves x by 2
    >>> field = elastic_displacement(grid, (8, 8, 8))
    >>> tuple(field.shape), round(float(field[0].min()), 4), round(float(field[0].max()), 4)
    ((3, 8, 8, 8), 2.0, 2.0)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

__all__ = ["bspline_basis", "elastic_displacement"]


def bspline_basis(num_points: int, num_controls: int) -> np.ndarray:
    """``(num_points, num_controls)`` cubic B-spline weights spreading the controls over the axis.

    Output index ``i`` sits at control coordinate ``t = 1 + i (n - 3) / (P - 1)``, so every point has
    its four supporting controls inside the grid; the weights are non-negative and sum to one, so the
    dense field never exceeds the largest control displacement (used for the footprint bound).
    """
    if num_points == 1:
        t = np.array([1.0 + (num_controls - 3) / 2.0])
    else:
        t = 1.0 + np.arange(num_points) * (num_controls - 3) / (num_points - 1)
    distance = np.abs(t[:, None] - np.arange(num_controls)[None, :])
    weights = np.where(
        distance < 1.0,
        2.0 / 3.0 - distance**2 + distance**3 / 2.0,
        np.where(distance < 2.0, (2.0 - distance) ** 3 / 6.0, 0.0),
    )
    return weights / weights.sum(axis=1, keepdims=True)


def elastic_displacement(elastic_grid: np.ndarray, patch_size: Sequence[int]) -> torch.Tensor:
    """The dense ``(d, *patch)`` displacement (source voxels): a cubic B-spline over the control grid.

    Computed separably (one small matrix product per axis), which costs a few milliseconds for a
    96^3 patch, where ``F.interpolate`` of the three components costs about 15 ms.
    """
    grid = torch.from_numpy(np.asarray(elastic_grid, np.float32))
    bases = [torch.from_numpy(bspline_basis(p, n).astype(np.float32))
             for p, n in zip(patch_size, grid.shape[1:])]
    if len(patch_size) == 2:
        return torch.einsum("jb,dab->daj", bases[1], torch.einsum("ia,dab->dib", bases[0], grid)).contiguous()
    dense = torch.einsum("kc,dabc->dabk", bases[2], grid)
    dense = torch.einsum("jb,dabk->dajk", bases[1], dense)
    return torch.einsum("ia,dajk->dijk", bases[0], dense).contiguous()
