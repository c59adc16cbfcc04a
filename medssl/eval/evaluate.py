"""Evaluation of a fine-tuned network on whole test cases: per-case tables.

* :func:`evaluate_segmentation`: sliding-window prediction of each whole volume
  (:func:`medssl.eval.inference.predict_labels`; a 2D network predicts every slice along
  ``finetune.slice_axis``, resolved per case from its spacing, and the slices are stacked back into
  the volume), then Dice, HD95 (mm) and surface Dice per class
  against the case's mask (:func:`medssl.eval.metrics.segmentation_case_metrics`), one row per case.
* :func:`predict_classification`: class probabilities per case, from the whole volume resized
  (``classification_input: whole``) or the mean of the logits of a sliding grid of patches
  (``patch``, MONAI ``dense_patch_slices``), as :func:`medssl.eval.metrics.classification_table`.

Example::

    table = evaluate_segmentation(model, test_cases, cfg.finetune)
    table[["case_id", "dice", "hd95"]]
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from medssl.config import FinetuneConfig
from medssl.data.slices import resolve_slice_axis
from medssl.eval.cases import LabeledCase, remap_mask, whole_volume_input
from medssl.eval.inference import predict_labels
from medssl.eval.geometry import trained_flip_axes
from medssl.eval.metrics import classification_table, segmentation_case_metrics
from medssl.eval.postprocess import keep_largest_components
from medssl.eval.networks import FinetuneModel
from medssl.utils.devices import device_of

log = logging.getLogger(__name__)


def predict_case(model: FinetuneModel, case: LabeledCase, cfg: FinetuneConfig,
                 device: torch.device | str | None = None) -> torch.Tensor:
    """The whole-volume label map ``(X, Y, Z)`` of one case: sliding window over ``patch_size``
    (2D networks slice by slice along ``slice_axis``, with ``slice_context``; with
    ``test_time_flips``, averaged over the flips training used), then ``keep_largest_components``
    where set (:mod:`medssl.eval.postprocess`), as it is scored."""
    image = case.image_tensor()
    labels = predict_labels(
        model.network,
        image,
        roi_size=cfg.patch_size,
        spatial_dims=model.spatial_dims,
        sw_batch_size=cfg.sliding_window_batch_size,
        overlap=cfg.sw_overlap,
        device=device_of(model.network, device),
        slice_axis=resolve_slice_axis(cfg.slice_axis, case.spacing, tuple(image.shape)),
        slice_context=cfg.slice_context,
        flip_axes=trained_flip_axes(cfg.augment) if cfg.test_time_flips else (),
    )
    if cfg.keep_largest_components:
        labels = keep_largest_components(labels, cfg.keep_largest_components)
    return labels


def evaluate_segmentation(
    model: FinetuneModel,
    cases: Sequence[LabeledCase],
    cfg: FinetuneConfig,
    *,
    metrics: Sequence[str] | None = None,
    device: torch.device | str | None = None,
) -> pd.DataFrame:
    """One row per case: ``case_id`` and the metrics per class (``dice_1``...) and averaged (``dice``)."""
    device = device_of(model.network, device)
    rows = []
    for case in cases:
        prediction = predict_case(model, case, cfg, device)
        reference = remap_mask(case.mask_tensor(), cfg.mask_labels)[0]
        row: dict[str, object] = {"case_id": case.case_id}
        row.update(segmentation_case_metrics(
            prediction, reference, num_classes=cfg.num_classes, spacing=case.spacing,
            surface_tolerance_mm=cfg.surface_tolerance_mm, metrics=list(metrics or cfg.eval_metrics),
        ))
        rows.append(row)
    return pd.DataFrame(rows)


def classifier_input_size(cfg: FinetuneConfig) -> tuple[int, ...]:
    return tuple(cfg.input_size or cfg.patch_size)


def _patch_logits(network: torch.nn.Module, image: torch.Tensor, patch_size: Sequence[int], overlap: float,
                  spatial_dims: int, batch_size: int, device: torch.device) -> torch.Tensor:
    """Mean logits over a sliding grid of patches covering ``image`` ``(C, X, Y, Z)``."""
    from monai.data.utils import dense_patch_slices
    from monai.transforms import SpatialPad

    if spatial_dims == 2:
        image = image[..., 0]
        patch_size = tuple(patch_size)[:2]
    patch_size = tuple(int(s) for s in patch_size)
    padded = SpatialPad(spatial_size=[max(s, n) for s, n in zip(patch_size, image.shape[1:])])(image)
    padded = torch.as_tensor(padded.as_tensor() if hasattr(padded, "as_tensor") else padded)
    size = tuple(padded.shape[1:])
    interval = tuple(max(1, int(p * (1 - overlap))) for p in patch_size)
    slices = dense_patch_slices(size, patch_size, interval)
    logits = []
    for start in range(0, len(slices), batch_size):
        patches = torch.stack([padded[(slice(None), *s)] for s in slices[start:start + batch_size]])
        logits.append(network(patches.to(device)).float().cpu())
    return torch.cat(logits).mean(dim=0)


@torch.no_grad()
def predict_classification(
    model: FinetuneModel,
    cases: Sequence[LabeledCase],
    cfg: FinetuneConfig,
    *,
    device: torch.device | str | None = None,
) -> pd.DataFrame:
    """Per-case table (``case_id``, ``target``, ``prediction``, ``correct``, ``prob_<k>``)."""
    device = device_of(model.network, device)
    network = model.network.eval()
    probabilities, targets = [], []
    for case in cases:
        if case.label is None:
            raise ValueError(f"case {case.case_id} has no class label to evaluate against")
        image = case.image_tensor()
        if cfg.classification_input == "whole":
            x = whole_volume_input(image, classifier_input_size(cfg))
            logits = network(x.unsqueeze(0).to(device)).float().cpu()[0]
        else:
            logits = _patch_logits(network, image, cfg.patch_size, cfg.sw_overlap, model.spatial_dims,
                                   cfg.sliding_window_batch_size, device)
        probabilities.append(torch.softmax(logits, dim=0).numpy())
        targets.append(int(case.label))
    return classification_table([c.case_id for c in cases], targets, np.stack(probabilities))
