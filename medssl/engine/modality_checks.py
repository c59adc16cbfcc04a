"""Checks of a pretraining config against the volumes it will read: augmentation preset and spacing.

Every shipped default is CT (``preset: ct``, CT spacing). On an MR archive a CT preset draws
Hounsfield windows and CT noise on images that have no Hounsfield scale, and a 1.5 mm isotropic
target turns 5 mm MR slices into three interpolated copies each. :func:`log_modality_choices`
logs which modalities the volumes hold, the preset each calls for, the native spacing (median of
the manifest's ``spacing_x/y/z``) against ``data.preprocess.target_spacing``, and warns:

* when ``pretrain.augmentation.preset`` is not the preset of the volumes' modality
  (:data:`MODALITY_PRESETS`: CT -> ``ct``, MR -> ``mr``, CR/DX/DR/MG -> ``xr``, US -> ``us``); the
  MR configs are ``configs/pretrain/*_mr.yaml``;
* when the target spacing is finer than half the native spacing along an axis (thick slices
  interpolated more than 2x: the network learns the interpolation; keep the slice spacing, e.g.
  ``target_spacing: [1.0, 1.0, 5.0]``, or ``null`` for the native grid).

Example::

    log_modality_choices(config, table)   # table: manifest rows with modality, spacing_x/y/z
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

MODALITY_PRESETS = {"CT": "ct", "MR": "mr", "CR": "xr", "DX": "xr", "DR": "xr", "MG": "xr", "US": "us"}
"""The augmentation preset each DICOM modality calls for (see :mod:`medssl.transforms.presets`)."""


def native_spacing(table: Any) -> list[float] | None:
    """The median native voxel spacing (mm) of the volumes, from the manifest's ``spacing_x/y/z``."""
    columns = ["spacing_x", "spacing_y", "spacing_z"]
    if not all(c in getattr(table, "columns", ()) for c in columns):
        return None
    values = table[columns].astype(float).to_numpy()
    values = values[np.isfinite(values).all(axis=1)]
    return [round(float(v), 3) for v in np.median(values, axis=0)] if len(values) else None


def log_modality_choices(config: Any, table: Any) -> list[str]:
    """Log the modalities, preset and spacing of a pretraining run; return the warnings logged."""
    warnings: list[str] = []
    preset = str(config.pretrain.augmentation.preset).lower()
    counts: dict[str, int] = {}
    if "modality" in getattr(table, "columns", ()):
        counts = table["modality"].dropna().astype(str).str.upper().value_counts().to_dict()
    if counts:
        described = ", ".join(f"{m} {n} (preset {MODALITY_PRESETS.get(m, '?')})" for m, n in counts.items())
        log.info("volumes by modality: %s; pretrain.augmentation.preset is %s", described, preset)
        expected = {MODALITY_PRESETS[m] for m in counts if m in MODALITY_PRESETS}
        if expected and preset not in expected and preset != "none":
            wanted = " or ".join(sorted(expected))
            warnings.append(f"pretrain.augmentation.preset is {preset!r} but the volumes are "
                            f"{', '.join(counts)}: use preset {wanted} (the MR configs are configs/pretrain/*_mr.yaml; "
                            "a CT preset draws Hounsfield windows on images that have no Hounsfield scale)")
    native = native_spacing(table)
    target = config.data.preprocess.target_spacing
    if native:
        log.info("native spacing (median over volumes) %s mm; data.preprocess.target_spacing %s", native,
                 list(target) if target else "null (native grid kept)")
        if target:
            axes = [name for name, n, t in zip("xyz", native, target) if t < n / 2]
            if axes:
                warnings.append(
                    f"data.preprocess.target_spacing {list(target)} mm is finer than half the native spacing {native} "
                    f"mm along {', '.join(axes)}: thick slices become interpolated copies the network learns to "
                    "undo; keep the slice spacing along that axis (e.g. [1.0, 1.0, 5.0]) or use null")
    for text in warnings:
        log.warning("%s", text)
    return warnings
