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
    test_time_flips: bool = False,
) -> torch.Tensor:
    """Class probabilities ``(K, X, Y, Z)`` (softmax) of a whole volume ``image`` ``(C, X, Y, Z)``.

    ``test_time_flips``: the mean of the probabilities over every combination of flips of the
    network's spatial axes (each prediction flipped back): 4 passes for a 2D network (its two
    in-plane axes), 8 for a 3D one. This is nnU-Net's test-time mirroring (Isensee et al. 2021).

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
    if test_time_flips:
        for dims in flip_combinations(batch.ndim - 2):
            probabilities += window_probabilities(batch.flip(dims)).flip(dims)
        probabilities /= 2 ** (batch.ndim - 2)
    if spatial_dims == 3:
        return probabilities[0]
    return slices_to_volume(probabilities, slice_axis)  # (K, X, Y, Z)


def flip_combinations(spatial_dims: int) -> list[tuple[int, ...]]:
    """Every non-empty set of the spatial axes of a ``(B, C, *S)`` batch (axes ``2 ..``), as flip dims.

    Example:
        >>> flip_combinations(2)
        [(2,), (3,), (2, 3)]
    """
    axes = range(2, 2 + int(spatial_dims))
    return [dims for size in range(1, int(spatial_dims) + 1) for dims in itertools.combinations(axes, size)]


def predict_labels(network: nn.Module, image: torch.Tensor, **kwargs) -> torch.Tensor:
    """Integer label map ``(X, Y, Z)``: the argmax of :func:`predict_segmentation`."""
    return predict_segmentation(network, image, **kwargs).argmax(dim=0)
