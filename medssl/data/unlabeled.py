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


def exclude_labeled_patients(table: pd.DataFrame, root: Path | None, labels: str | Path,
                             patient_column: str = "patient_key") -> pd.DataFrame:
    """``table`` (manifest rows, paths relative to ``root`` or absolute) without any volume of a
    patient of the labels table ``labels`` (``data.exclude``).

    Pretraining on the labeled and test patients lets the encoder see, unlabeled, the very scans a
    study then fine-tunes and scores on: the pretrained arm gets a look at the test images that
    scratch never had, and the comparison is no longer fair. A manifest volume is left out when its
    patient has a case in ``labels``, matched by the patient key (``patient_column``, from the
    same manifest, i.e. the same ``MEDSSL_DEID_SALT``) or by the image path (``image``, relative to
    the table's folder), so every scan of such a patient goes, follow-ups and other contrasts
    included. Raises :class:`DataError` when no labeled case matches a volume (keys from another
    salt, paths to another copy of the archive) or when nothing is left.
    """
    labels = Path(labels)
    if not labels.is_file():
        raise DataError(f"data.exclude: labels table {labels} does not exist")
    frame = pd.read_parquet(labels) if labels.suffix.lower() == ".parquet" else pd.read_csv(labels, dtype=str)
    if "image" not in frame.columns and patient_column not in frame.columns:
        raise DataError(f"data.exclude: {labels} has neither an 'image' nor a {patient_column!r} column to match "
                        "the manifest's volumes by")
    images = {str((labels.resolve().parent / str(p)).resolve()) for p in frame.get("image", pd.Series(dtype=str))
              if isinstance(p, str) and p.strip()}
    keys = {str(k) for k in frame.get(patient_column, pd.Series(dtype=str)).dropna()}
    base = Path(root) if root is not None else Path(".")
    paths = pd.Series([str((base / str(p)).resolve()) for p in table["path"]], index=table.index)
    by_path = set(table.loc[paths.isin(images), "patient_key"].astype(str))
    by_key = keys & set(table["patient_key"].astype(str))
    excluded = by_path | by_key
    if not excluded:
        raise DataError(f"data.exclude: none of the {len(frame)} labeled case(s) of {labels} matches a volume of "
                        f"the manifest, by patient key ({patient_column!r}) or by image path. Build the labels "
                        "table from this manifest (its patient_key; the same MEDSSL_DEID_SALT) or give image paths "
                        "to the scanned files")
    kept = table[~table["patient_key"].astype(str).isin(excluded)].reset_index(drop=True)
    log.info("data.exclude: %d volume(s) of %d labeled patient(s) in %s left out of pretraining "
             "(%d matched by patient key, %d by image path); %d volume(s) of %d patient(s) remain",
             len(table) - len(kept), len(excluded), labels.name, len(by_key), len(by_path), len(kept),
             kept["patient_key"].nunique())
    if kept.empty:
        raise DataError(f"data.exclude: every volume belongs to a patient of {labels}; nothing is left to pretrain on")
    return kept
