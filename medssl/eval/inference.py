"""Whole-volume inference of a patch-trained network, by MONAI's sliding window.

A segmentation network trained on patches of ``roi_size`` is applied to a whole volume by
:func:`monai.inferers.sliding_window_inference`: overlapping windows (``overlap`` of the window
size), Gaussian blending of the window outputs (importance weighting that trusts window centres
more than borders), zero padding where the volume is smaller than a window.

What this module adds on top of MONAI: the medssl layout (a volume is ``(C, X, Y, Z)`` with
``Z == 1`` for a 2D image) and 2D networks on 3D volumes, which are run slice by slice along
``slice_axis`` (every slice is one 2D image of the batch, with ``slice_context`` neighbouring slices
on each side as extra channels for 2.5D networks; :mod:`medssl.data.slices`); the per-slice
probabilities are stacked back into the volume's exact grid.

Example:
    >>> import torch
    >>> net = torch.nn.Conv3d(1, 2, 3, padding=1)
    >>> probs = predict_segmentation(net, torch.rand(1, 20, 18, 9), roi_size=(16, 16, 8), spatial_dims=3)
    >>> tuple(probs.shape)
    (2, 20, 18, 9)
"""

from __future__ import annotations

import itertools
from typing import Sequence

import torch
from torch import nn

from medssl.utils.devices import device_of


def _window(roi_size: Sequence[int], spatial_dims: int) -> tuple[int, ...]:
    roi = tuple(int(s) for s in roi_size)
    if spatial_dims == 2 and len(roi) == 3:
        roi = roi[:2]
    if len(roi) != spatial_dims:
        raise ValueError(f"roi_size {roi} does not match a {spatial_dims}D network")
    return roi


@torch.no_grad()
def predict_segmentation(
    network: nn.Module,
    image: torch.Tensor,
    *,
    roi_size: Sequence[int],
    spatial_dims: int = 3,
    sw_batch_size: int = 4,
    overlap: float = 0.25,
    mode: str = "gaussian",
    device: torch.device | str | None = None,
    slice_axis: int = 2,
    slice_context: int = 0,
    flip_axes: Sequence[int] = (),
) -> torch.Tensor:
    """Class probabilities ``(K, X, Y, Z)`` (softmax) of a whole volume ``image`` ``(C, X, Y, Z)``.

    ``flip_axes``: volume axes (0, 1, 2) to mirror at test time. The probabilities are the mean over
    every combination of flips of those axes (each prediction flipped back; ``2 ** n`` passes), as
    nnU-Net's test-time mirroring does (Isensee et al. 2021). Give only axes the network was trained
    flipped (:func:`medssl.eval.geometry.trained_flip_axes`). A 2D network flips the listed axes
    that lie in its slices' plane.

    ``spatial_dims=2``: the network takes ``(B, C * (2 * slice_context + 1), A, B)``; every slice
    along ``slice_axis`` (0, 1, 2; resolve ``auto`` with :func:`medssl.data.slices.resolve_slice_axis`)
    is predicted on its own, the windows of all slices batched ``sw_batch_size`` at a time.
    The network is put in eval mode and left there. The result is on the CPU.
    """
    from monai.inferers import sliding_window_inference

    from medssl.data.slices import slices_to_volume, volume_to_slices

    if image.ndim != 4:
        raise ValueError(f"image must be (C, X, Y, Z), got shape {tuple(image.shape)}")
    device = device_of(network, device)
    network.eval()
    roi = _window(roi_size, spatial_dims)
    if spatial_dims == 3:
        batch = image.unsqueeze(0)
    else:
        batch = volume_to_slices(image, slice_axis, slice_context)  # (S, C', A, B): one 2D image per slice

    def window_probabilities(inputs: torch.Tensor) -> torch.Tensor:
        logits = sliding_window_inference(
            inputs.to(device),
            roi_size=roi,
            sw_batch_size=sw_batch_size,
            predictor=network,
            overlap=overlap,
            mode=mode,
            sw_device=device,
            device=torch.device("cpu"),
        )
        return torch.softmax(logits.float(), dim=1)

    probabilities = window_probabilities(batch)
    dims = _batch_dims(flip_axes, spatial_dims, slice_axis)
    combinations = flip_combinations(dims)
    for flipped in combinations:
        probabilities += window_probabilities(batch.flip(flipped)).flip(flipped)
    if combinations:
        probabilities /= 1 + len(combinations)
    if spatial_dims == 3:
        return probabilities[0]
    return slices_to_volume(probabilities, slice_axis)  # (K, X, Y, Z)


def _batch_dims(flip_axes: Sequence[int], spatial_dims: int, slice_axis: int) -> tuple[int, ...]:
    """Volume axes -> the dims of the network's batch: ``2 + axis`` in 3D; in 2D, the position of
    the axis in the slice plane (axes outside the plane are dropped)."""
    from medssl.data.slices import in_plane_axes

    axes = sorted({int(a) for a in flip_axes})
    if any(a not in (0, 1, 2) for a in axes):
        raise ValueError(f"flip_axes are volume axes 0, 1, 2, got {tuple(flip_axes)}")
    if spatial_dims == 3:
        return tuple(2 + a for a in axes)
    plane = in_plane_axes(slice_axis)
    return tuple(2 + plane.index(a) for a in axes if a in plane)


def flip_combinations(dims: Sequence[int]) -> list[tuple[int, ...]]:
    """Every non-empty subset of ``dims`` (tensor dims to flip together).

    Example:
        >>> flip_combinations((2, 3))
        [(2,), (3,), (2, 3)]
    """
    dims = tuple(dims)
    return [subset for size in range(1, len(dims) + 1) for subset in itertools.combinations(dims, size)]


def predict_labels(network: nn.Module, image: torch.Tensor, **kwargs) -> torch.Tensor:
    """Integer label map ``(X, Y, Z)``: the argmax of :func:`predict_segmentation`."""
    return predict_segmentation(network, image, **kwargs).argmax(dim=0)
