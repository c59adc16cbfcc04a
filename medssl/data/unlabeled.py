"""The unlabeled volumes of an archive, for pretraining and for consistency training.

:func:`unlabeled_entries` turns a manifest (:func:`medssl.data.manifest.load_manifest`) into the
rows a dataset can load: readable (``status == ok``), of the wanted modalities, with absolute
paths, and without any volume of a patient who must stay unseen (the study's test and validation
patients: a test patient's scans in the unlabeled pool would let consistency training, or
pretraining, see the very images it is scored on). A patient is left out when one of their images
is among ``exclude_images`` (paths) or their key is among ``exclude_patients``.

Example::

    manifest = load_manifest("cohort/manifest.csv", require_locations=True)
    rows = unlabeled_entries(manifest, manifest_root(manifest), exclude_images={"/data/ct_0001"},
                             modalities=["CT"])
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Collection

import pandas as pd

from medssl.errors import DataError

log = logging.getLogger(__name__)


def unlabeled_entries(manifest: pd.DataFrame, root: Path, exclude_images: Collection[str],
                      modalities: list[str] | None, *, exclude_patients: Collection[str] = (),
                      purpose: str = "pretraining") -> pd.DataFrame:
    """Manifest rows usable as unlabeled volumes (module docstring); raises :class:`DataError` when
    none is left."""
    rows = manifest[manifest["status"] == "ok"].copy()
    if modalities:
        rows = rows[rows["modality"].isin(modalities)]
    rows["path"] = [str((Path(root) / p).resolve()) for p in rows["path"]]
    if "files" in rows.columns:
        rows["files"] = [
            [str((Path(root) / f).resolve()) for f in files] if isinstance(files, (list, tuple)) and len(files) else None
            for files in rows["files"]
        ]
    excluded = set(rows.loc[rows["path"].isin(set(exclude_images)), "patient_key"]) | set(exclude_patients)
    kept = rows[~rows["patient_key"].isin(excluded)].reset_index(drop=True)
    log.info("%s on %d unlabeled volume(s) of %d patient(s); %d volume(s) of %d held-out patient(s) left out",
             purpose, len(kept), kept["patient_key"].nunique(), len(rows) - len(kept),
             len(excluded & set(rows["patient_key"])))
    if kept.empty:
        raise DataError(f"no unlabeled volume left for {purpose} after leaving out the held-out patients")
    return kept
