"""Data: the archive manifest, patient-level splits, preprocessing, cache, datasets.

The built-in synthetic cohort lives in :mod:`medssl.synthetic`.

Public names are imported lazily (``medssl.data.build_manifest`` loads only the manifest module), so
``import medssl.data`` stays cheap in worker processes.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "build_manifest": "medssl.data.manifest",
    "save_manifest": "medssl.data.manifest",
    "load_manifest": "medssl.data.manifest",
    "write_manifest": "medssl.data.manifest",
    "load_manifest_volume": "medssl.data.manifest",
    "locations_path": "medssl.data.manifest",
    "require_locations": "medssl.data.manifest",
    "split_by_patient": "medssl.data.splits",
    "kfold_by_patient": "medssl.data.splits",
    "nested_label_budgets": "medssl.data.splits",
    "check_no_leakage": "medssl.data.splits",
    "write_splits": "medssl.data.splits",
    "preprocess_volume": "medssl.data.preprocess",
    "PreprocessedCache": "medssl.data.cache",
    "CachedCase": "medssl.data.cache",
    "build_pretrain_dataset": "medssl.data.datasets",
    "LabeledPatchDataset": "medssl.data.labeled_patches",
    "load_labeled_case": "medssl.data.labeled_patches",
    "make_dataloader": "medssl.data.loaders",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'medssl.data' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
