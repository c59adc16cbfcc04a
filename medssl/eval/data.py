"""Labeled cases from a labels table: read, checked, preprocessed once through the cache.

A labels table (CSV or Parquet; ``labels.csv`` of ``medssl synth`` is one) has one row per labeled
case: ``case_id``, ``image`` (a NIfTI file, a DICOM series folder or file), ``mask`` (an integer
label NIfTI on the image's grid; needed for segmentation), the case-level class (``label``), and
optionally ``patient_key`` (to keep a patient's scans on one side of every split) and ``modality``.
Relative paths start at the table's folder (``data.root`` is the pretraining images' folder and
plays no part here, so one config can pretrain on an archive and study a labels table elsewhere).

:func:`load_labeled_data` checks the columns and values (a clear :class:`DataError` naming the file,
the column and the fix), keeps the rows of ``data.modalities``, preprocesses every case once through
:class:`medssl.data.cache.PreprocessedCache` (``data.preprocess``: orientation, spacing, intensity
to [0, 1]) and returns :class:`LabeledData`: the table, one :class:`~medssl.eval.cases.LabeledCase`
per case (memory-mapped arrays), the cache and a data fingerprint (case ids, labels, patients and
the path, relative to the table's folder, and byte size of every image and mask file, so it survives
copying the data elsewhere; see :mod:`medssl.utils.provenance`).

Example::

    data = load_labeled_data(config, run_dir / "cache")
    data.cases["ct_0001"].image.shape      # (1, X, Y, Z) preprocessed
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medssl.config import Config
from medssl.data.tables import read_table
from medssl.errors import DataError
from medssl.eval.cases import LabeledCase
from medssl.utils.logging import progress_bar
from medssl.utils.provenance import case_records_fingerprint, volume_files_fingerprint

log = logging.getLogger(__name__)

PATIENT = "patient"
"""Column of :attr:`LabeledData.table` holding the patient key used for splitting."""


@dataclass
class LabeledData:
    """Labeled cases ready for splitting, fine-tuning and evaluation."""

    table: pd.DataFrame
    cases: dict[str, LabeledCase]
    root: Path
    fingerprint: str
    cache: Any = None
    entries: pd.DataFrame = field(default_factory=pd.DataFrame)
    content_key: str = ""
    """Hash of the cache keys (file stats + preprocessing config): changes whenever a file is rewritten."""

    def subset(self, case_ids: list[str]) -> list[LabeledCase]:
        return [self.cases[c] for c in case_ids]

    def entries_for(self, case_ids: list[str]) -> pd.DataFrame:
        """Rows for :class:`medssl.data.labeled_patches.LabeledPatchDataset` (``path``, ``mask``, ``label``...)."""
        index = self.entries.set_index("case_id")
        return index.loc[list(case_ids)].reset_index()


def resolve_stratify_column(config: Config, columns: Any, *, quiet: bool = False) -> str | None:
    """The column splits are stratified on (``study.stratify_column``, see
    :class:`medssl.config.StudyConfig`), or None. ``auto`` is the label column when ``columns`` has
    it (logged at INFO, as is its absence); an explicitly named column that is absent is a warning."""
    column = config.study.stratify_column
    label = config.finetune.label_column
    if not column:
        return None
    if column == "auto":
        chosen = label if label in columns else None
        if not quiet:
            if chosen:
                log.info("study.stratify_column auto: splits are stratified on %r", chosen)
            else:
                log.info("study.stratify_column auto: the labels table has no %r column, so splits are not "
                         "stratified (name a column in study.stratify_column to stratify on it)", label)
        return chosen
    if column not in columns:
        if not quiet:
            log.warning("study.stratify_column %r is not in the labels table; splitting without stratification",
                        column)
        return None
    return column


def _checked_table(raw: pd.DataFrame, config: Config, source: str, need_mask: bool, need_label: bool) -> pd.DataFrame:
    study, finetune = config.study, config.finetune
    required = [study.case_column, "image"] + (["mask"] if need_mask else []) + \
               ([finetune.label_column] if need_label else [])
    missing = [c for c in required if c not in raw.columns]
    if missing:
        raise DataError(f"labels table {source} lacks column(s) {missing} (it has {list(raw.columns)}); "
                        "see docs/studies.md for the expected columns")
    table = raw.copy()
    if config.data.modalities:
        if "modality" not in table.columns:
            raise DataError(f"data.modalities={config.data.modalities} needs a 'modality' column in {source}")
        wanted = {m.upper() for m in config.data.modalities}
        table = table[table["modality"].astype(str).str.upper().isin(wanted)]
    table["case_id"] = table[study.case_column].astype(str)
    duplicated = table["case_id"][table["case_id"].duplicated()].unique()
    if len(duplicated):
        raise DataError(f"labels table {source}: case id(s) {list(duplicated[:5])} appear more than once")
    if need_mask:
        no_mask = table["mask"].isna() | (table["mask"].astype(str).str.strip() == "")
        if no_mask.any():
            log.warning("%s: %d case(s) without a mask are left out of the segmentation study (e.g. %s)",
                        source, int(no_mask.sum()), list(table.loc[no_mask, "case_id"][:3]))
            table = table[~no_mask]
    if need_label:
        labels = pd.to_numeric(table[finetune.label_column], errors="coerce")
        bad = labels.isna() | (labels != labels.round()) | (labels < 0) | (labels >= finetune.num_classes)
        if bad.any():
            raise DataError(f"labels table {source}: column {finetune.label_column!r} must hold class indices 0.."
                            f"{finetune.num_classes - 1} (finetune.num_classes); bad rows: "
                            f"{list(table.loc[bad, 'case_id'][:5])}")
        table[finetune.label_column] = labels.astype(int)
    if study.patient_column and study.patient_column in table.columns:
        patients = table[study.patient_column]
        if patients.isna().any():
            raise DataError(f"labels table {source}: {int(patients.isna().sum())} row(s) lack a "
                            f"{study.patient_column!r}; every case needs its patient key for a patient-level split")
        table[PATIENT] = patients.astype(str)
    else:
        log.warning("%s has no patient column %r: each case counts as its own patient; scans of one patient "
                    "could fall on both sides of a split (set study.patient_column)", source, study.patient_column)
        table[PATIENT] = table["case_id"]
    if table.empty:
        raise DataError(f"labels table {source}: no usable case (after the modality filter and mask check)")
    return table.reset_index(drop=True)


def load_labeled_data(
    config: Config,
    cache_dir: str | os.PathLike,
    *,
    table: pd.DataFrame | None = None,
    root: str | os.PathLike | None = None,
) -> LabeledData:
    """Read, check and preprocess the labeled cases of ``config.study.labels`` (or ``table``)."""
    from medssl.data.cache import PreprocessedCache

    study, finetune = config.study, config.finetune
    if table is None:
        if not study.labels:
            raise DataError("no labeled cases: set study.labels to a labels CSV (case_id, image, mask, label)")
        source = str(study.labels)
        raw = read_table(study.labels, what="labels table", missing_hint="study.labels; `medssl synth` writes labels.csv",
                         dtype={"case_id": str, "image": str, "mask": str, "patient_key": str})
        base = Path(root or Path(study.labels).resolve().parent)
    else:
        source, raw = "<table>", table
        base = Path(root or ".")
    classification = finetune.task == "classification" or study.evaluation != "finetune"
    patch_classifier = (finetune.task == "classification" and study.evaluation == "finetune"
                        and finetune.classification_input == "patch")
    need_mask = not classification or patch_classifier  # patch classifiers centre patches on the mask
    need_label = classification or resolve_stratify_column(config, raw.columns, quiet=True) == finetune.label_column
    clean = _checked_table(raw, config, source, need_mask=need_mask, need_label=need_label)

    def resolve(value: Any) -> str | None:
        if value is None or (isinstance(value, float) and np.isnan(value)) or not str(value).strip():
            return None
        path = Path(str(value))
        return str(path if path.is_absolute() else base / path)

    cache = PreprocessedCache(cache_dir, config.data.preprocess)
    entries = pd.DataFrame({
        "case_id": clean["case_id"],
        "path": [resolve(v) for v in clean["image"]],
        "mask": [resolve(v) for v in clean["mask"]] if need_mask else None,
        "modality": clean["modality"].astype(str) if "modality" in clean.columns else None,
    })
    if need_label:
        entries["label"] = clean[finetune.label_column].to_numpy()
    cases: dict[str, LabeledCase] = {}
    keys = []
    patients = dict(zip(clean["case_id"], clean[PATIENT]))
    for row in progress_bar(entries.itertuples(index=False), total=len(entries), desc="preprocess labeled cases",
                            leave=False):
        modality = None if row.modality in (None, "None", "nan") else row.modality
        cached = cache.get(row.path, row.mask, modality=modality)
        label = int(row.label) if need_label else None
        cases[row.case_id] = LabeledCase(row.case_id, cached.image, cached.mask, label, tuple(cached.spacing),
                                         {"cache_key": cached.key, "modality": cached.modality})
        keys.append((row.case_id, cached.key))
    files = [p for p in list(entries["path"]) + list(entries["mask"] if "mask" in entries else []) if p]
    fingerprint = case_records_fingerprint(
        [(c, cases[c].label, patients[c]) for c in cases] + [("files", volume_files_fingerprint(files, base))]
    )
    log.info("%d labeled case(s) from %s (%d patient(s)); data fingerprint %s", len(cases), source,
             clean[PATIENT].nunique(), fingerprint)
    return LabeledData(clean, cases, base, fingerprint, cache, entries, case_records_fingerprint(keys))
