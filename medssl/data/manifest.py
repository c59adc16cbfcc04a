"""The archive manifest: one row per volume found under a folder, from headers only.

:func:`build_manifest` walks a PACS export (or any folder of DICOM and NIfTI files), reads every
file's header in parallel processes without decoding pixel data, groups DICOM files into series and
volumes with the code :func:`medssl.io.load_volume` uses (:mod:`medssl.io.dicom`), and returns a
:class:`pandas.DataFrame`:

========================  ====================================================================
column                    meaning
========================  ====================================================================
``volume_id``             stable pseudonymous id (``volume-<16 hex>``), same across re-scans
``status``                ``ok``; ``error`` (unreadable: truncated, undecodable geometry, gaps);
                          ``skipped`` (not an acquired image: SR, RTSTRUCT, SEG, non-DICOM file)
``reason``                why, for ``error`` and ``skipped`` rows (paths relative to ``root``)
``format``                ``dicom``, ``nifti`` or ``other``
``path``                  the series folder or the file, relative to ``root`` (POSIX separators)
``files``                 every file of the volume, relative to ``root`` (load with these)
``patient_key`` ...       ``study_key``, ``series_key``: salted pseudonyms (:mod:`medssl.io.deid`)
``modality`` ...          ``sop_class``, ``body_part``, ``series_description``, ``manufacturer``,
                          ``manufacturer_model``, ``magnetic_field_strength``, ``kvp``,
                          ``slice_thickness``, ``photometric``, ``transfer_syntax``
``channels``, ``shape_*``  the ``(C, X, Y, Z)`` a load gives (after reorientation to RAS+)
``spacing_*``             voxel size in mm along X, Y, Z; ``orientation``: axis codes (``RAS``)
``gantry_tilt_deg``       tilt of a sheared CT stack (0 otherwise)
``n_files``, ``size_bytes``, ``file_stats``, ``salt_id``   bookkeeping for re-scans
========================  ====================================================================

No identifier reaches the frame: workers return pseudonymous keys only (the SeriesInstanceUID is
blanked before a header leaves its worker), error reasons name files by relative path.

A re-scan with ``previous=`` (a frame or a saved manifest) reuses every row whose files are all
unchanged (same size and modification time) and reads only new or changed files, plus the other files
of a series that gained or lost a file. Rows of a different salt (``salt_id``) are not reused.

Gap filled here: no library builds a de-identified volume inventory of a DICOM archive; pydicom's
``FileSet`` needs a DICOMDIR, which exports rarely carry.

Example:
    >>> import numpy as np, tempfile
    >>> from medssl.io import Volume
    >>> from medssl.io.dicom_write import write_dicom_series
    >>> root = tempfile.mkdtemp()
    >>> _ = write_dicom_series(Volume(np.zeros((1, 8, 8, 4), np.float32), np.diag([0.7, 0.7, 2.5, 1]), "CT"), root + "/ct")
    >>> df = build_manifest(root, progress=False, salt="demo")
    >>> df[["path", "status", "n_files", "shape_z", "spacing_z"]].to_dict("records")
    [{'path': 'ct', 'status': 'ok', 'n_files': 4, 'shape_z': 4, 'spacing_z': 2.5}]
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path, PurePosixPath
from typing import Any, Literal, Sequence

import numpy as np
import pandas as pd

from medssl.errors import DataError, VolumeReadError
from medssl.io import deid
from medssl.io.dicom import VolumePlan, group_by_series, plan_series, series_name
from medssl.io.dicom_header import DERIVED_SOP_CLASSES, DicomHeader
from medssl.io.orientation import orientation_code, reoriented_geometry
from medssl.io.scan import FileRecord, list_files_with_stats, scan_files
from medssl.io.volume import Volume
from medssl.utils.atomic import atomic_path

logger = logging.getLogger(__name__)

#: Column order of a manifest (and their pandas dtypes, applied by build and load alike).
SCHEMA: dict[str, str] = {
    "volume_id": "str",
    "status": "str",
    "reason": "str",
    "format": "str",
    "path": "str",
    "files": "object",
    "n_files": "Int64",
    "patient_key": "str",
    "study_key": "str",
    "series_key": "str",
    "modality": "str",
    "sop_class": "str",
    "body_part": "str",
    "series_description": "str",
    "manufacturer": "str",
    "manufacturer_model": "str",
    "magnetic_field_strength": "float64",
    "kvp": "float64",
    "slice_thickness": "float64",
    "photometric": "str",
    "transfer_syntax": "str",
    "channels": "Int64",
    "shape_x": "Int64",
    "shape_y": "Int64",
    "shape_z": "Int64",
    "spacing_x": "float64",
    "spacing_y": "float64",
    "spacing_z": "float64",
    "orientation": "str",
    "gantry_tilt_deg": "float64",
    "n_frames": "Int64",
    "size_bytes": "Int64",
    "file_stats": "object",
    "salt_id": "str",
}
LIST_COLUMNS = ("files", "file_stats")

NiftiPatientRule = Literal["auto", "parent", "file"]


# ---------------------------------------------------------------------------------------------
# Rows


def _posix(rel: str) -> str:
    return (rel.replace(os.sep, "/") if os.sep != "/" else rel) if rel not in ("", ".") else "."


def _common_folder(rels: Sequence[str]) -> str:
    if len(rels) == 1:
        return _posix(os.path.dirname(rels[0]) or ".")
    return _posix(os.path.commonpath(rels) or ".")


def _empty_row(salt_id: str) -> dict[str, Any]:
    row: dict[str, Any] = {column: None for column in SCHEMA}
    row["salt_id"] = salt_id
    return row


def _file_row(record: FileRecord, status: str, stats: dict[str, str], salt: bytes, salt_id: str) -> dict[str, Any]:
    row = _empty_row(salt_id)
    rel = _posix(record.rel)
    row.update(
        volume_id=deid.pseudonymize("file:" + rel, "volume", salt),
        status=status,
        reason=record.reason,
        format="other",
        path=rel,
        files=[rel],
        n_files=1,
        file_stats=[stats[record.rel]],
        size_bytes=int(stats[record.rel].split(":")[0]),
    )
    return row


def _acquisition_columns(meta: dict[str, Any]) -> dict[str, Any]:
    def number(key: str) -> float | None:
        value = meta.get(key)
        if isinstance(value, list):
            value = value[0] if value else None
        try:
            return float(value) if value is not None else None
        except (TypeError, ValueError):
            return None

    return {
        "manufacturer": meta.get("Manufacturer"),
        "manufacturer_model": meta.get("ManufacturerModelName"),
        "body_part": meta.get("BodyPartExamined") or meta.get("BodyPart"),
        "series_description": meta.get("SeriesDescription"),
        "magnetic_field_strength": number("MagneticFieldStrength"),
        "kvp": number("KVP"),
        "slice_thickness": number("SliceThickness"),
    }


def _geometry_columns(affine: np.ndarray, shape: tuple[int, int, int]) -> dict[str, Any]:
    new_shape, new_affine = reoriented_geometry(affine, shape)
    spacing = np.linalg.norm(new_affine[:3, :3], axis=0)
    return {
        "shape_x": new_shape[0],
        "shape_y": new_shape[1],
        "shape_z": new_shape[2],
        "spacing_x": round(float(spacing[0]), 6),
        "spacing_y": round(float(spacing[1]), 6),
        "spacing_z": round(float(spacing[2]), 6),
        "orientation": orientation_code(new_affine),
    }


def _dicom_base(headers: Sequence[DicomHeader], stats: dict[str, str], salt_id: str) -> dict[str, Any]:
    first = next((h for h in headers if h.is_image), headers[0])
    rels = sorted(_posix(h.path) for h in headers)
    row = _empty_row(salt_id)
    row.update(
        format="dicom",
        path=_common_folder(rels) if len(rels) > 1 else rels[0],
        files=rels,
        n_files=len(rels),
        file_stats=[stats[h.path] for h in sorted(headers, key=lambda h: _posix(h.path))],
        size_bytes=sum(h.file_size for h in headers),
        patient_key=first.patient_key,
        study_key=first.study_key,
        series_key=first.series_key,
        modality=first.modality,
        sop_class=first.sop_class_name,
        photometric=first.photometric or None,
        transfer_syntax=_syntax_name(first.transfer_syntax),
        n_frames=sum(h.n_frames for h in headers if h.is_image) or None,
    )
    meta = next((h.meta for h in sorted(headers, key=lambda h: h.path) if h.meta is not None), None)
    row.update(_acquisition_columns(meta or {}))
    return row


def _syntax_name(uid: str | None) -> str | None:
    if not uid:
        return None
    from pydicom.uid import UID

    return UID(uid).name or uid


def _plan_row(plan: VolumePlan, whole_series: bool, stats: dict[str, str], salt: bytes, salt_id: str) -> dict[str, Any]:
    row = _dicom_base(plan.headers, stats, salt_id)
    first = plan.headers[0]
    identity = first.series_key if whole_series and first.series_key else (first.instance_key or "file:" + _posix(first.path))
    row["volume_id"] = deid.pseudonymize(identity, "volume", salt)
    row.update(_geometry_columns(plan.affine_ras, plan.stack.shape))
    row["channels"] = plan.channels
    row["gantry_tilt_deg"] = float(plan.stack.notes.get("gantry_tilt_deg", 0.0))
    if first.sop_class in DERIVED_SOP_CLASSES:
        row.update(status="skipped", reason=f"derived object ({DERIVED_SOP_CLASSES[first.sop_class]}), not an acquired image")
    else:
        row.update(status="ok", reason=plan.stack.issue)
    return row


def _series_rows(headers: list[DicomHeader], stats: dict[str, str], salt: bytes, salt_id: str, on_uneven: str) -> list[dict]:
    # Workers decode acquisition fields once per series: share them with the series' other files.
    shared = next((h.meta for h in sorted(headers, key=lambda h: h.path) if h.meta is not None), None)
    for header in headers:
        if header.meta is None:
            header.meta = shared
    broken = [h for h in headers if h.status == "error"]
    if broken:
        row = _dicom_base(headers, stats, salt_id)
        row["volume_id"] = deid.pseudonymize(headers[0].series_key or "file:" + _posix(headers[0].path), "volume", salt)
        shown = "; ".join(f"{_posix(h.path)}: {h.reason}" for h in broken[:3])
        more = f" (and {len(broken) - 3} more)" if len(broken) > 3 else ""
        row.update(status="error", reason=f"{len(broken)} of {len(headers)} files unreadable: {shown}{more}")
        return [row]
    try:
        plans = plan_series(headers, on_uneven=on_uneven)  # type: ignore[arg-type]
    except VolumeReadError as exc:
        row = _dicom_base(headers, stats, salt_id)
        row["volume_id"] = deid.pseudonymize(headers[0].series_key or "file:" + _posix(headers[0].path), "volume", salt)
        row.update(status="error", reason=exc.reason if exc.path == series_name(headers) else f"{exc.path}: {exc.reason}")
        return [row]
    whole = len(plans) == 1 and len(plans[0].headers) == len(headers)
    return [_plan_row(plan, whole, stats, salt, salt_id) for plan in plans]


def _bids_label(rel: str, entity: str) -> str | None:
    for part in Path(rel).parts:
        match = re.match(rf"^{entity}-([A-Za-z0-9]+)", part)
        if match:
            return match.group(1)
    return None


def _nifti_row(record: FileRecord, stats: dict[str, str], salt: bytes, salt_id: str, nifti_patient: NiftiPatientRule) -> dict:
    summary = record.nifti or {}
    rel = _posix(record.rel)
    row = _empty_row(salt_id)
    subject = _bids_label(rel, "sub")
    if subject and nifti_patient == "auto":
        patient_source = "bids:" + subject
        session = _bids_label(rel, "ses")
        row["study_key"] = deid.pseudonymize(f"bids:{subject}/{session}", "study", salt) if session else None
    elif nifti_patient == "parent":
        patient_source = "folder:" + _posix(os.path.dirname(rel) or ".")
    else:
        patient_source = "file:" + rel
    shape = summary["shape"]
    row.update(
        volume_id=deid.pseudonymize("nifti:" + rel, "volume", salt),
        status="ok",
        format="nifti",
        path=rel,
        files=[rel],
        n_files=1,
        file_stats=[stats[record.rel]],
        size_bytes=int(stats[record.rel].split(":")[0]),
        patient_key=deid.pseudonymize(patient_source, "patient", salt),
        modality=summary["modality"],
        channels=summary["channels"],
        shape_x=shape[0],
        shape_y=shape[1],
        shape_z=shape[2],
        spacing_x=summary["spacing"][0],
        spacing_y=summary["spacing"][1],
        spacing_z=summary["spacing"][2],
        orientation=summary["orientation"],
        gantry_tilt_deg=0.0,
    )
    row.update(_acquisition_columns(summary.get("meta", {})))
    return row


# ---------------------------------------------------------------------------------------------
# Public API


def _apply_schema(frame: pd.DataFrame) -> pd.DataFrame:
    for column in SCHEMA:
        if column not in frame.columns:
            frame[column] = None
    extra = [c for c in frame.columns if c not in SCHEMA]
    frame = frame[list(SCHEMA) + extra].copy()
    for column, dtype in SCHEMA.items():
        if dtype == "object":
            frame[column] = [list(v) if isinstance(v, (list, tuple, np.ndarray)) else v for v in frame[column]]
            frame[column] = frame[column].astype(object)
        elif dtype == "Int64":
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("Int64")
        elif dtype == "float64":
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
        else:
            values = [None if v is None or (np.ndim(v) == 0 and pd.isna(v)) else str(v) for v in frame[column]]
            frame[column] = pd.Series(values, index=frame.index, dtype="str")
    return frame.reset_index(drop=True)


def _reusable_rows(previous: pd.DataFrame | str | os.PathLike | None, stats: dict[str, str], salt_id: str) -> list[dict]:
    if previous is None:
        return []
    previous = load_manifest(previous) if not isinstance(previous, pd.DataFrame) else _apply_schema(previous)
    if len(previous) and set(previous["salt_id"].dropna()) != {salt_id}:
        logger.warning("the previous manifest used a different de-identification salt; rescanning every file")
        return []
    current = {_posix(rel): stat for rel, stat in stats.items()}
    rows = []
    for row in previous.to_dict("records"):
        files, file_stats = list(row.get("files") or []), list(row.get("file_stats") or [])
        if files and len(files) == len(file_stats) and all(current.get(f) == s for f, s in zip(files, file_stats)):
            rows.append(row)
    return rows


def build_manifest(
    root: str | os.PathLike,
    *,
    workers: int | None = None,
    previous: pd.DataFrame | str | os.PathLike | None = None,
    progress: bool = True,
    salt: str | bytes | None = None,
    on_uneven: Literal["error", "resample"] = "error",
    nifti_patient: NiftiPatientRule = "auto",
    exclude: Sequence[str | os.PathLike] = (),
) -> pd.DataFrame:
    """Scan ``root`` recursively and return one row per volume (see the module docstring).

    Args:
        root: the archive folder.
        workers: header-reading processes; ``None`` uses every available core for archives of 200
            files or more and the calling process below that; ``0`` or ``1`` never starts processes.
        previous: an earlier manifest (frame or file) of the same root: unchanged files are not read.
        progress: show a tqdm progress bar (also off when ``MEDSSL_PROGRESS=0``).
        salt: pseudonymisation salt (default ``$MEDSSL_DEID_SALT``, see :mod:`medssl.io.deid`).
        on_uneven: series with missing slices or uneven spacing are ``error`` rows (``"error"``) or
            ``ok`` rows describing the resampled grid a ``load_volume(..., on_uneven="resample")``
            gives (``"resample"``; ``reason`` still says what was wrong). Re-scan without
            ``previous`` after changing it.
        nifti_patient: how NIfTI files get a patient key: ``"auto"`` (the BIDS ``sub-`` label when
            the path has one, else each file is its own patient), ``"parent"`` (the folder holding
            the file) or ``"file"``.
        exclude: files not to scan (a manifest saved inside ``root``; its temporary files too).

    Returns:
        the manifest, sorted by ``path`` then ``volume_id``. Never raises for a bad file.
    """
    root_path = Path(root)
    if not root_path.is_dir():
        raise DataError(f"cannot scan {root}: no such folder")
    salt_bytes = deid.get_salt(salt)
    salt_id = deid.salt_fingerprint(salt_bytes)
    stats = list_files_with_stats(root_path)
    for path in exclude:
        target = Path(path) if Path(path).is_absolute() else root_path / path
        try:
            rel = os.path.relpath(target.resolve(), root_path.resolve())
        except ValueError:  # another drive
            continue
        folder, name = os.path.split(rel)
        for candidate in [r for r in stats if os.path.dirname(r) == folder]:
            base = os.path.basename(candidate)
            if base == name or (base.startswith(f".{name}.") and ".tmp" in base):
                del stats[candidate]

    reused = _reusable_rows(previous, stats, salt_id)
    covered = {f for row in reused for f in row["files"]}
    to_read = [rel for rel in stats if _posix(rel) not in covered]
    records = scan_files(str(root_path), to_read, salt_bytes, workers=workers, progress=progress)

    # A series that gained a file (or lost one, leaving its other files unchanged but now in a
    # different volume) must be rebuilt from all its files.
    touched = {r.header.series_key for r in records.values() if r.header is not None and r.header.series_key}
    kept, rebuild = [], []
    for row in reused:
        (rebuild if row.get("format") == "dicom" and row.get("series_key") in touched else kept).append(row)
    if rebuild:
        native = {_posix(rel): rel for rel in stats}
        extra = [native[f] for row in rebuild for f in row["files"] if f in native]
        records.update(scan_files(str(root_path), extra, salt_bytes, workers=workers, progress=False))

    rows: list[dict] = list(kept)
    dicom_headers: list[DicomHeader] = []
    for rel in sorted(records):
        record = records[rel]
        if record.kind == "nifti":
            rows.append(_nifti_row(record, stats, salt_bytes, salt_id, nifti_patient))
        elif record.kind in ("skipped", "error"):
            rows.append(_file_row(record, record.kind, stats, salt_bytes, salt_id))
        elif record.header is not None and record.header.status == "non-image":
            row = _dicom_base([record.header], stats, salt_id)
            row.update(
                volume_id=deid.pseudonymize("file:" + _posix(rel), "volume", salt_bytes),
                status="skipped",
                reason=record.header.reason,
            )
            rows.append(row)
        elif record.header is not None:
            dicom_headers.append(record.header)
    for headers in group_by_series(dicom_headers).values():
        rows.extend(_series_rows(headers, stats, salt_bytes, salt_id, on_uneven))

    frame = _apply_schema(pd.DataFrame(rows, columns=list(SCHEMA)) if rows else pd.DataFrame(columns=list(SCHEMA)))
    frame = frame.sort_values(["path", "volume_id"], kind="stable").reset_index(drop=True)
    counts = frame["status"].value_counts().to_dict()
    logger.info(
        "manifest of %s: %d ok, %d error, %d skipped rows; %d files read, %d rows reused",
        root,
        counts.get("ok", 0),
        counts.get("error", 0),
        counts.get("skipped", 0),
        len(records),
        len(kept),
    )
    return frame


def save_manifest(frame: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a manifest atomically as Parquet (``.parquet``) or CSV (``.csv``; lists as JSON)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise ValueError(f"a manifest is saved as .parquet or .csv, got {path.name}")
    frame = _apply_schema(frame)
    with atomic_path(path, suffix=suffix) as tmp:
        if suffix == ".parquet":
            frame.to_parquet(tmp, index=False)
        else:
            out = frame.copy()
            for column in LIST_COLUMNS:
                out[column] = [json.dumps(v) if isinstance(v, list) else None for v in out[column]]
            out.to_csv(tmp, index=False)
    return path


def load_manifest(path: str | os.PathLike) -> pd.DataFrame:
    """Read a manifest written by :func:`save_manifest` (same columns and dtypes as built)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"manifest {path} does not exist (build it with `medssl manifest ROOT --out {path}`)")
    try:
        if path.suffix.lower() == ".parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
            for column in LIST_COLUMNS:
                if column in frame.columns:
                    frame[column] = [json.loads(v) if isinstance(v, str) and v else None for v in frame[column]]
    except Exception as exc:
        raise DataError(f"manifest {path} cannot be read ({exc})") from exc
    missing = [c for c in ("volume_id", "status", "path", "files") if c not in frame.columns]
    if missing:
        raise DataError(f"manifest {path} lacks the columns {missing}; rebuild it with `medssl manifest`")
    return _apply_schema(frame)


def write_manifest(
    root: str | os.PathLike,
    out: str | os.PathLike,
    *,
    workers: int | None = None,
    rescan: bool = True,
    progress: bool = True,
    salt: str | bytes | None = None,
    on_uneven: Literal["error", "resample"] = "error",
) -> pd.DataFrame:
    """``medssl manifest ROOT --out FILE``: build (re-using ``out`` when it exists and ``rescan``) and save.

    ``out`` may lie inside ``root``: it is not scanned itself.
    """
    previous = out if rescan and Path(out).is_file() else None
    frame = build_manifest(
        root, workers=workers, previous=previous, progress=progress, salt=salt, on_uneven=on_uneven, exclude=[out]
    )
    save_manifest(frame, out)
    return frame


def load_manifest_volume(row: pd.Series | dict, root: str | os.PathLike, **load_kwargs: Any) -> Volume:
    """Load the volume of one manifest row (``files`` relative to ``root``) with :func:`load_volume`.

    Uses the row's file list, so a folder holding several series needs no ``series_uid``.
    """
    from medssl.io import load_volume

    files = list(row["files"])
    if not files:
        raise DataError(f"manifest row {row.get('volume_id')} lists no files")
    if row.get("status") not in (None, "ok"):
        raise DataError(f"manifest row {row.get('path')} has status {row.get('status')}: {row.get('reason')}")
    paths = [os.path.join(os.fspath(root), *PurePosixPath(f).parts) for f in files]
    if row.get("format") == "nifti" or len(paths) == 1:
        if row.get("format") == "nifti" and "modality" not in load_kwargs and isinstance(row.get("modality"), str):
            load_kwargs["modality"] = row["modality"]
        return load_volume(paths[0], **load_kwargs)
    return load_volume(paths, **load_kwargs)
