"""What a manifest row holds and how one is built from headers: the schema and the row builders.

:data:`SCHEMA` fixes the columns and their dtypes (:func:`apply_schema`, applied by build and load
alike), :data:`LOCATION_COLUMNS` the columns that say where a volume lies (kept out of the shareable
manifest, :mod:`medssl.data.manifest_store`) and :data:`ACQUISITION_COLUMNS` the allow-listed header
fields copied. The row builders turn the :class:`~medssl.io.scan.FileRecord` of a scan into rows:
a DICOM series into one row per volume (:func:`medssl.io.dicom.plan_series`, the grouping
:func:`medssl.io.load_volume` uses), a NIfTI file into one row (patient from the BIDS ``sub-``
label or the parent folder), a file that cannot be read into an ``error`` or ``skipped`` row. A
reason names no location: the row's own locations become tokens (``<path>``, ``files[k]``).
:func:`medssl.data.manifest.build_manifest` drives them.

Example:
    >>> frame = apply_schema(pd.DataFrame([{"volume_id": "volume-1", "status": "ok", "format": "nifti",
    ...                                     "path": "a.nii.gz", "files": ["a.nii.gz"], "shape_x": 4}]))
    >>> list(frame.columns) == list(SCHEMA), frame.loc[0, "files"], frame["shape_x"].dtype.name
    (True, None, 'Int64')
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path, PurePosixPath
from typing import Any, Literal, Mapping, Sequence

import numpy as np
import pandas as pd

from medssl.errors import VolumeReadError
from medssl.io import deid
from medssl.io.dicom import VolumePlan, plan_series, series_name
from medssl.io.dicom_header import DERIVED_SOP_CLASSES, DicomHeader
from medssl.io.limits import ReadLimits
from medssl.io.orientation import orientation_code, reoriented_geometry
from medssl.io.redaction import LocationRedactor, redacted_logs
from medssl.io.scan import FileRecord, nifti_volume_id

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
    "echo_time": "float64",
    "echo_number": "Int64",
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
    "spacing_known": "boolean",
    "n_frames": "Int64",
    "size_bytes": "Int64",
    "file_stats": "object",
    "salt_id": "str",
}

LIST_COLUMNS = ("files", "file_stats")

#: Columns that say where a volume lies on the hospital's disks: kept out of the shareable manifest,
#: written to its locations file. (``file_stats`` holds modification times, dates of the export.)
LOCATION_COLUMNS = ("path", "files", "file_stats")

#: Manifest column -> the allow-listed header field it copies (:data:`medssl.io.deid.ACQUISITION_FIELDS`).
#: ``sop_class`` and ``transfer_syntax`` are the names of DICOM UIDs of the standard, not of patients.
ACQUISITION_COLUMNS: dict[str, str] = {
    "modality": "Modality",
    "body_part": "BodyPartExamined",
    "series_description": "SeriesDescription",
    "manufacturer": "Manufacturer",
    "manufacturer_model": "ManufacturerModelName",
    "magnetic_field_strength": "MagneticFieldStrength",
    "kvp": "KVP",
    "slice_thickness": "SliceThickness",
    "echo_time": "EchoTime",
    "photometric": "PhotometricInterpretation",
}

NiftiPatientRule = Literal["auto", "parent", "file"]


def posix_path(rel: str) -> str:
    return (rel.replace(os.sep, "/") if os.sep != "/" else rel) if rel not in ("", ".") else "."


def _common_folder(rels: Sequence[str]) -> str:
    if len(rels) == 1:
        return posix_path(os.path.dirname(rels[0]) or ".")
    return posix_path(os.path.commonpath(rels) or ".")


def _location_tokens(files: Sequence[str], path: str | None, root: str | None, volume_id: str | None = None) -> dict[str, str]:
    """How text names a row's locations: in a reason ``<path>`` (the row's ``path``), ``<path>/..``
    (the folder above it), ``files[k]`` (its k-th file) and ``<root>``; in a log record
    (``volume_id`` given) ``<path of volume-...>`` and ``<files[k] of volume-...>``, so the
    locations file finds them."""
    of = f" of {volume_id}" if volume_id else ""
    tokens: dict[str, str] = {}
    places = [(path, f"<path{of}>")] if path and path != "." else []
    places += [(f, f"<files[{k}]{of}>" if volume_id else f"files[{k}]") for k, f in enumerate(files)]
    if path and path != ".":  # folders above it (messages name the folder holding a series' files)
        ancestors = [str(p) for p in PurePosixPath(path).parents if str(p) != "."]
        places += [(a, f"<path{of}>" + "/.." * (i + 1)) for i, a in enumerate(ancestors)]
    for location, token in places:
        tokens.setdefault(location, token)
        if root is not None:
            tokens.setdefault(os.path.join(root, *PurePosixPath(location).parts), token)
    if root is not None:
        tokens.setdefault(os.path.abspath(root), "<root>")
        tokens.setdefault(os.fspath(root), "<root>")
    return tokens


def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA


def row_files(row: Mapping[str, Any]) -> list[str]:
    """Every file of a row: its ``files`` (DICOM), else its ``path`` (a NIfTI or other single file)."""
    files = row.get("files")
    if isinstance(files, (list, tuple, np.ndarray)) and len(files):
        return [str(f) for f in files]
    path = row.get("path")
    return [] if is_missing(path) else [str(path)]


def redact_reasons(frame: pd.DataFrame, root: str | None = None) -> pd.DataFrame:
    """Replace each row's own locations in its ``reason`` (a safety net for rows of older manifests
    and frames edited by hand; rows built here name none)."""
    if "reason" not in frame.columns or "path" not in frame.columns or not frame["reason"].notna().any():
        return frame
    reasons = list(frame["reason"])
    for i, row in enumerate(frame[["reason", "path", "files"]].to_dict("records")):
        if isinstance(row["reason"], str) and row["reason"]:
            files = row["files"] if isinstance(row["files"], (list, tuple, np.ndarray)) else []
            path = None if is_missing(row["path"]) else str(row["path"])
            reasons[i] = LocationRedactor(_location_tokens([str(f) for f in files], path, root))(row["reason"])
    frame = frame.copy()
    frame["reason"] = pd.Series(reasons, index=frame.index, dtype=frame["reason"].dtype)
    return frame


def _empty_row(salt_id: str) -> dict[str, Any]:
    row: dict[str, Any] = {column: None for column in SCHEMA}
    row["salt_id"] = salt_id
    return row


def file_row(record: FileRecord, status: str, stats: dict[str, str], salt: bytes, salt_id: str) -> dict[str, Any]:
    row = _empty_row(salt_id)
    rel = posix_path(record.rel)
    row.update(
        volume_id=deid.pseudonymize("file:" + rel, "volume", salt),
        status=status,
        reason=record.reason,
        format="other",
        path=rel,
        n_files=1,
        file_stats=[stats[record.rel]],
        size_bytes=int(stats[record.rel].split(":")[0]),
    )
    return row


def folder_row(rel: str, reason: str, salt: bytes, salt_id: str) -> dict[str, Any]:
    """A folder the scan could not list: an ``error`` row, so the loss is visible in the manifest."""
    row = _empty_row(salt_id)
    rel = posix_path(rel)
    row.update(
        volume_id=deid.pseudonymize("folder:" + rel, "volume", salt),
        status="error",
        reason=f"folder cannot be listed ({reason}); its files are left out",
        format="other",
        path=rel,
        n_files=0,
    )
    return row

#: Acquisition columns filled from a header's allow-listed ``meta`` (``modality`` and ``photometric``
#: come from the parsed header itself); the numeric ones are floats.
_META_COLUMNS = tuple(c for c in ACQUISITION_COLUMNS if c not in ("modality", "photometric"))

_NUMERIC_COLUMNS = ("magnetic_field_strength", "kvp", "slice_thickness", "echo_time")


def _acquisition_columns(meta: dict[str, Any]) -> dict[str, Any]:
    """The acquisition columns of :data:`ACQUISITION_COLUMNS` from allow-listed header fields only."""

    def number(value: Any) -> float | None:
        if isinstance(value, list):
            value = value[0] if value else None
        try:
            return float(value) if value is not None else None
        except (TypeError, ValueError):
            return None

    columns: dict[str, Any] = {}
    for column in _META_COLUMNS:
        value = meta.get(ACQUISITION_COLUMNS[column])
        columns[column] = number(value) if column in _NUMERIC_COLUMNS else value
    return columns


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


def dicom_base(headers: Sequence[DicomHeader], stats: dict[str, str], salt_id: str) -> dict[str, Any]:
    first = next((h for h in headers if h.is_image), headers[0])
    rels = sorted(posix_path(h.path) for h in headers)
    row = _empty_row(salt_id)
    row.update(
        format="dicom",
        path=_common_folder(rels) if len(rels) > 1 else rels[0],
        files=rels,
        n_files=len(rels),
        file_stats=[stats[h.path] for h in sorted(headers, key=lambda h: posix_path(h.path))],
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
    row = dicom_base(plan.headers, stats, salt_id)
    first = plan.headers[0]
    identity = first.series_key if whole_series and first.series_key else (first.instance_key or "file:" + posix_path(first.path))
    if plan.echo is not None and first.series_key:  # one echo of a multi-echo series
        identity = f"{first.series_key}|echo:{plan.echo[0]}|{plan.echo[1]}"
        row["echo_number"], row["echo_time"] = plan.echo
    row["volume_id"] = deid.pseudonymize(identity, "volume", salt)
    row.update(_geometry_columns(plan.affine_ras, plan.stack.shape))
    row["channels"] = plan.channels
    row["gantry_tilt_deg"] = float(plan.stack.notes.get("gantry_tilt_deg", 0.0))
    row["spacing_known"] = not plan.stack.notes.get("pixel_spacing_assumed", False)
    if first.sop_class in DERIVED_SOP_CLASSES:
        row.update(status="skipped", reason=f"derived object ({DERIVED_SOP_CLASSES[first.sop_class]}), not an acquired image")
    else:
        notes = [plan.stack.issue] if plan.stack.issue else []
        if not row["spacing_known"]:
            found = next((h.spacing_issue for h in plan.headers if h.spacing_issue), None) or "no PixelSpacing"
            notes.append(f"pixel spacing unknown ({found}): 1 mm assumed")
        row.update(status="ok", reason="; ".join(notes) or None)
    return row


def series_rows(
    headers: list[DicomHeader], stats: dict[str, str], salt: bytes, salt_id: str, on_uneven: str, root: str,
    limits: ReadLimits | None = None,
) -> list[dict]:
    # Workers decode acquisition fields once per series: share them with the series' other files.
    shared = next((h.meta for h in sorted(headers, key=lambda h: h.path) if h.meta is not None), None)
    for header in headers:
        if header.meta is None:
            header.meta = shared
    series_id = deid.pseudonymize(headers[0].series_key or "file:" + posix_path(headers[0].path), "volume", salt)
    rels = sorted(posix_path(h.path) for h in headers)
    folder = _common_folder(rels) if len(rels) > 1 else rels[0]
    in_reason = LocationRedactor(_location_tokens(rels, folder, root))
    broken = [h for h in headers if h.status == "error"]
    if broken:
        row = dicom_base(headers, stats, salt_id)
        row["volume_id"] = series_id
        shown = "; ".join(f"{posix_path(h.path)}: {h.reason}" for h in sorted(broken, key=lambda h: posix_path(h.path))[:3])
        more = f" (and {len(broken) - 3} more)" if len(broken) > 3 else ""
        row.update(status="error", reason=in_reason(f"{len(broken)} of {len(headers)} files unreadable: {shown}{more}"))
        return [row]
    try:
        # Geometry code logs (a resampled stack) name the series' folder: the log names the volume.
        with redacted_logs(_location_tokens(rels, folder, root, volume_id=series_id)):
            plans = plan_series(headers, on_uneven=on_uneven, limits=limits)  # type: ignore[arg-type]
    except VolumeReadError as exc:
        row = dicom_base(headers, stats, salt_id)
        row["volume_id"] = series_id
        text = exc.reason if exc.path == series_name(headers) else f"{exc.path}: {exc.reason}"
        row.update(status="error", reason=in_reason(text))
        return [row]
    whole = len(plans) == 1 and len(plans[0].headers) == len(headers)
    if any(plan.echo is not None for plan in plans):
        whole = False
    return [_plan_row(plan, whole, stats, salt, salt_id) for plan in plans]


def _bids_label(rel: str, entity: str) -> str | None:
    for part in Path(rel).parts:
        match = re.match(rf"^{entity}-([A-Za-z0-9]+)", part)
        if match:
            return match.group(1)
    return None


def nifti_row(record: FileRecord, stats: dict[str, str], salt: bytes, salt_id: str, nifti_patient: NiftiPatientRule) -> dict:
    summary = record.nifti or {}
    rel = posix_path(record.rel)
    row = _empty_row(salt_id)
    subject = _bids_label(rel, "sub")
    if subject and nifti_patient == "auto":
        patient_source = "bids:" + subject
        session = _bids_label(rel, "ses")
        row["study_key"] = deid.pseudonymize(f"bids:{subject}/{session}", "study", salt) if session else None
    elif nifti_patient == "parent":
        patient_source = "folder:" + posix_path(os.path.dirname(rel) or ".")
    else:
        patient_source = "file:" + rel
    shape = summary["shape"]
    row.update(
        volume_id=nifti_volume_id(rel, salt),
        status="ok",
        format="nifti",
        path=rel,
        files=None,  # a NIfTI file is not a DICOM series: its location is ``path``
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
        spacing_known=summary.get("spacing_known", True),
        reason=summary.get("affine_issue"),
    )
    row.update(_acquisition_columns(summary.get("meta", {})))
    return row


def apply_schema(frame: pd.DataFrame, locations: bool = True) -> pd.DataFrame:
    """Columns in :data:`SCHEMA` order (then extra columns), with their dtypes; without the location
    columns when ``locations`` is false. A non-DICOM row's ``files`` is ``None`` (older manifests
    listed a NIfTI file as ``files=[path]``)."""
    schema = {c: t for c, t in SCHEMA.items() if locations or c not in LOCATION_COLUMNS}
    for column in schema:
        if column not in frame.columns:
            frame[column] = None
    extra = [c for c in frame.columns if c not in SCHEMA]
    frame = frame[list(schema) + extra].copy()
    for column, dtype in schema.items():
        if dtype == "object":
            frame[column] = [list(v) if isinstance(v, (list, tuple, np.ndarray)) else (None if is_missing(v) else v) for v in frame[column]]
            frame[column] = frame[column].astype(object)
        elif dtype == "Int64":
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("Int64")
        elif dtype == "float64":
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
        elif dtype == "boolean":
            frame[column] = pd.Series([_as_bool(v) for v in frame[column]], index=frame.index, dtype="boolean")
        else:
            values = [None if v is None or (np.ndim(v) == 0 and pd.isna(v)) else str(v) for v in frame[column]]
            try:
                frame[column] = pd.Series(values, index=frame.index, dtype="str")
            except UnicodeEncodeError:  # a file name that is not valid UTF-8: kept as Python text
                frame[column] = pd.Series(values, index=frame.index, dtype=object)
    if locations and len(frame):
        not_dicom = (frame["format"] != "dicom").to_numpy()
        if not_dicom.any():
            files = frame["files"].tolist()
            frame["files"] = pd.Series([None if nd else f for f, nd in zip(files, not_dicom)], index=frame.index, dtype=object)
    return frame.reset_index(drop=True)


def _as_bool(value: Any) -> Any:
    """``True``/``False`` from a bool, a number or the text a CSV holds; missing -> ``pd.NA``."""
    if is_missing(value):
        return pd.NA
    if isinstance(value, str):
        text = value.strip().lower()
        return True if text in ("true", "1", "yes") else (False if text in ("false", "0", "no") else pd.NA)
    return bool(value)


def holds_locations(frame: pd.DataFrame) -> bool:
    return "path" in frame.columns and bool(frame["path"].notna().any() or frame.empty)
