"""2D and 2.5D slices of 3D volumes: the slice axis, slices with neighbours as channels, stacking back.

The 2D track trains and pretrains 2D networks on slices of the same cached volumes the 3D track
uses, and predicts a volume slice by slice, stacked back into its exact 3D grid (so both tracks
are scored with the same 3D metrics on the same cases). This module holds the geometry of that:

* :func:`resolve_slice_axis`: ``auto`` picks the acquisition's slice axis, the axis with the
  largest voxel spacing (the thick axis of an anisotropic MR or CT; ties go to the last axis, Z,
  so an isotropic volume is sliced axially). A 2D image (``Z == 1``) is always sliced along Z.
* :func:`slice_with_context`: one slice ``(C * (2k + 1), A, B, 1)`` with ``k`` neighbours on each
  side as extra channels (2.5D, as in the 2.5D inputs of e.g. Han et al. 2017's liver CT or
  nnU-Net's 2D configuration with stacked slices); indices past the volume's ends repeat the edge
  slice (edge replication). Channel order is offset-major: channel ``(o + k) * C + c`` holds
  channel ``c`` of the slice at offset ``o`` (``-k .. k``), so with ``C == 1`` the channels run
  from the slice ``k`` below to the slice ``k`` above, the centre slice in the middle.
* :func:`volume_to_slices` / :func:`slices_to_volume`: every slice of a volume as a batch
  ``(S, C * (2k + 1), A, B)``, and a batch of per-slice outputs ``(S, K, A, B)`` back to
  ``(K, X, Y, Z)``. The in-plane axes ``(A, B)`` are the two other axes in their original order
  (axis 2 -> ``(X, Y)``, axis 1 -> ``(X, Z)``, axis 0 -> ``(Y, Z)``), the same in training and at
  inference.

Gap filled: MONAI's ``SliceInferer`` predicts slice by slice along a chosen axis but has neither
the 2.5D neighbour channels nor the slice-axis choice from spacing; nnU-Net's 2D configuration
always slices along its first (out-of-plane) axis after transposing by spacing.

Example:
    >>> import torch
    >>> resolve_slice_axis("auto", (0.9, 0.9, 5.0), (1, 64, 64, 24))
    2
    >>> volume = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(1, 2, 3, 4)
    >>> batch = volume_to_slices(volume, axis=0, context=1)
    >>> tuple(batch.shape)
    (2, 3, 3, 4)
    >>> bool(torch.equal(slices_to_volume(batch[:, 1:2], axis=0), volume))
    True
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from medssl.errors import ConfigError

SLICE_AXES = (0, 1, 2)
"""Slice axes of a ``(C, X, Y, Z)`` volume, by spatial index."""

SPACING_TIE_TOLERANCE = 1e-3
"""Relative difference below which two spacings count as equal for ``auto``."""


def resolve_slice_axis(setting: str | int, spacing: Sequence[float], shape: Sequence[int] | None = None) -> int:
    """The spatial axis (0, 1 or 2) to slice a volume along.

    Args:
        setting: ``"auto"`` (the axis with the largest spacing; ties -> the last of the tied axes)
            or an axis index 0, 1, 2.
        spacing: the volume's voxel spacing in mm, in array order ``(x, y, z)``.
        shape: the array shape ``(C, X, Y, Z)``; a 2D image (``Z == 1``) is sliced along Z whatever
            the setting.

    Example:
        >>> resolve_slice_axis("auto", (1.0, 4.0, 1.0)), resolve_slice_axis("auto", (1.5, 1.5, 1.5))
        (1, 2)
    """
    if shape is not None and len(shape) == 4 and int(shape[3]) == 1:
        return 2
    if setting == "auto":
        values = np.asarray([float(s) for s in spacing], dtype=np.float64)
        if values.shape != (3,) or not np.all(values > 0):
            raise ConfigError(f"slice_axis=auto needs three positive spacings, got {tuple(spacing)}")
        tied = np.flatnonzero(values >= values.max() * (1.0 - SPACING_TIE_TOLERANCE))
        return int(tied[-1])
    try:
        axis = int(setting)
    except (TypeError, ValueError):
        axis = -1
    if axis not in SLICE_AXES or str(setting) not in ("0", "1", "2"):
        raise ConfigError(f"slice_axis={setting!r} must be 'auto' or one of 0, 1, 2 (the volume's x, y, z axes)")
    return axis


def check_slice_context(context: int) -> int:
    """``context`` as an int >= 0 (the neighbours on each side of a 2.5D slice)."""
    if int(context) != context or context < 0:
        raise ConfigError(f"slice_context={context!r} must be a whole number >= 0 (0: plain 2D slices)")
    return int(context)


def context_channels(image_channels: int, context: int) -> int:
    """The network input channels of a 2.5D slice: ``image_channels * (2 * context + 1)``."""
    return int(image_channels) * (2 * check_slice_context(context) + 1)


def _neighbour_indices(index: int, count: int, context: int) -> np.ndarray:
    """Indices ``index - k .. index + k`` clamped into ``[0, count - 1]`` (edge replication)."""
    return np.clip(np.arange(index - context, index + context + 1), 0, count - 1)


def slice_with_context(array: np.ndarray, axis: int, index: int, context: int = 0) -> np.ndarray:
    """Slice ``index`` along spatial ``axis`` of ``array`` ``(C, X, Y, Z)`` with ``context`` neighbours.

    Returns ``(C * (2 * context + 1), A, B, 1)`` (a 2D image in the medssl layout), a copy in the
    array's dtype; only the slices needed are read from a memory map.

    Example:
        >>> volume = np.arange(4, dtype=np.float32).reshape(1, 1, 1, 4)
        >>> slice_with_context(volume, 2, 0, 1)[:, 0, 0, 0].tolist()   # edge slice repeated
        [0.0, 0.0, 1.0]
    """
    if array.ndim != 4:
        raise ValueError(f"a volume is (C, X, Y, Z), got shape {array.shape}")
    context = check_slice_context(context)
    count = array.shape[1 + axis]
    if not 0 <= index < count:
        raise IndexError(f"slice {index} outside the {count} slices along axis {axis}")
    picked = np.take(array, _neighbour_indices(int(index), count, context), axis=1 + axis)  # (C, .., 2k+1, ..)
    stacked = np.moveaxis(picked, 1 + axis, 0)  # (2k+1, C, A, B)
    return np.ascontiguousarray(stacked.reshape(-1, *stacked.shape[2:])[..., None])


def _slices_first(volume: torch.Tensor, axis: int) -> torch.Tensor:
    """``(C, X, Y, Z)`` -> ``(S, C, A, B)``: the slice axis first, the in-plane axes in order."""
    others = [1 + a for a in SLICE_AXES if a != axis]
    return volume.permute(1 + axis, 0, *others)


def volume_to_slices(volume: torch.Tensor, axis: int, context: int = 0) -> torch.Tensor:
    """Every slice of ``volume`` ``(C, X, Y, Z)`` along ``axis`` as a 2D batch ``(S, C * (2k + 1), A, B)``.

    Slice ``s`` of the batch holds the same channels as :func:`slice_with_context` of index ``s``.
    """
    if volume.ndim != 4:
        raise ValueError(f"a volume is (C, X, Y, Z), got shape {tuple(volume.shape)}")
    if axis not in SLICE_AXES:
        raise ValueError(f"axis must be 0, 1 or 2, got {axis}")
    context = check_slice_context(context)
    slices = _slices_first(volume, axis)  # (S, C, A, B)
    if context == 0:
        return slices.contiguous()
    count = slices.shape[0]
    positions = torch.arange(count)
    offsets = [slices[(positions + o).clamp(0, count - 1)] for o in range(-context, context + 1)]
    return torch.cat(offsets, dim=1).contiguous()  # offset-major channels


def slices_to_volume(slices: torch.Tensor, axis: int) -> torch.Tensor:
    """Per-slice outputs ``(S, K, A, B)`` back into the volume grid ``(K, X, Y, Z)`` (inverse of the
    slicing of :func:`volume_to_slices` along ``axis``)."""
    if slices.ndim != 4:
        raise ValueError(f"per-slice outputs are (S, K, A, B), got shape {tuple(slices.shape)}")
    if axis not in SLICE_AXES:
        raise ValueError(f"axis must be 0, 1 or 2, got {axis}")
    order = [1 + axis, 0] + [1 + a for a in SLICE_AXES if a != axis]  # where each (S, K, A, B) dim goes
    inverse = [order.index(d) for d in range(4)]
    return slices.permute(*inverse).contiguous()


def in_plane_axes(axis: int) -> tuple[int, int]:
    """The two spatial axes of a slice along ``axis``, in array order (axis 0 -> (1, 2))."""
    return tuple(a for a in SLICE_AXES if a != axis)  # type: ignore[return-value]
