"""The archive manifest: one row per volume found under a folder, from headers only.

:func:`build_manifest` walks a PACS export (or any folder of DICOM and NIfTI files), reads every
file's header in parallel processes without decoding pixel data, groups DICOM files into series and
volumes with the code :func:`medssl.io.load_volume` uses (:mod:`medssl.io.dicom`), and returns a
:class:`pandas.DataFrame`:

========================  ====================================================================
column                    meaning
========================  ====================================================================
``volume_id``             stable pseudonymous id (``volume-<16 hex>``), same across re-scans
``status``                ``ok``; ``error`` (unreadable: truncated, undecodable geometry, gaps,
                          a folder that cannot be listed); ``skipped`` (not an acquired image:
                          SR, RTSTRUCT, SEG, non-DICOM file)
``reason``                why, for ``error`` and ``skipped`` rows; names no path (see below)
``format``                ``dicom``, ``nifti`` or ``other``
``path``                  *location*: the series folder or the file, relative to ``root`` (POSIX)
``files``                 *location*: the DICOM files of the volume, relative to ``root``; ``None``
                          for a NIfTI (or other single non-DICOM) file, whose location is ``path``
``file_stats``            *location*: ``size:mtime_ns`` of each file (of ``files``, else ``path``)
``patient_key`` ...       ``study_key``, ``series_key``: salted pseudonyms (:mod:`medssl.io.deid`)
``modality`` ...          ``sop_class``, ``body_part``, ``series_description``, ``manufacturer``,
                          ``manufacturer_model``, ``magnetic_field_strength``, ``kvp``,
                          ``slice_thickness``, ``echo_time``, ``photometric``, ``transfer_syntax``
``channels``, ``shape_*``  the ``(C, X, Y, Z)`` a load gives (after reorientation to RAS+)
``spacing_*``             voxel size in mm along X, Y, Z; ``orientation``: axis codes (``RAS``)
``gantry_tilt_deg``       tilt of a sheared CT stack (0 otherwise)
``spacing_known``         False when the pixel spacing was unknown (PixelSpacing ``0\\0``) and
                          1 mm assumed; ``reason`` says what the header held
``echo_number``           the echo of one row of a multi-echo series (``echo_time`` is its TE)
``n_files``, ``size_bytes``, ``n_frames``, ``salt_id``   counts and the salt's fingerprint
========================  ====================================================================

**Two files, one shareable.** Export folders are often named after patients
(``CT/ROSSI^AMARA_46845436/...``), so the *location* columns are as sensitive as the archive.
:func:`save_manifest` writes the manifest at the path asked for **without** them (safe to share:
pseudonymous keys, allow-listed acquisition fields, geometry) and a site-local **locations file**
beside it, ``<stem>.locations.<ext>`` (``volume_id`` + the location columns, and any column medssl
did not make), which must stay inside the hospital. :func:`load_manifest` joins the two by
``volume_id`` when the locations file is there; without it the frame has no location columns, and
loading a volume from it (:func:`load_manifest_volume`, :func:`require_locations`) raises a
:class:`~medssl.errors.DataError` saying the locations file is missing.

No identifier reaches the frame's other columns, the reasons or the log: workers return pseudonymous
keys only (the SeriesInstanceUID is blanked before a header leaves its worker), and text that would
name a location names ``files[k]`` (the row's k-th file, in its ``files`` list), ``<path>`` (the
row's ``path``) or ``<file>`` in a reason, and the ``volume_id`` in a log record (see
:func:`medssl.io.scan.redact_locations`). The acquisition columns come only from the
de-identification allow-list (:data:`ACQUISITION_COLUMNS`, :data:`medssl.io.deid.ACQUISITION_FIELDS`);
``series_description`` is free text on that list and is copied as written.

A re-scan with ``previous=`` (a frame or a saved manifest with its locations file) reuses every row
whose files are all unchanged (same size and modification time) and reads only new or changed files,
plus the other files of a series that gained or lost a file. Rows of a different salt (``salt_id``)
are not reused.

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
    >>> shareable = save_manifest(df, root + "/manifest.csv")   # + manifest.locations.csv beside it
    >>> "path" in load_manifest(shareable).columns               # joined again where the locations are
    True
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import urllib.parse
from pathlib import Path, PurePosixPath
from typing import Any, Literal, Mapping, Sequence

import numpy as np
import pandas as pd

from medssl.errors import DataError, VolumeReadError
from medssl.io import deid
from medssl.io.dicom import VolumePlan, group_by_series, plan_series, series_name
from medssl.io.dicom_header import DERIVED_SOP_CLASSES, DicomHeader
from medssl.io.limits import ReadLimits, as_limits
from medssl.io.orientation import orientation_code, reoriented_geometry
from medssl.io.scan import FileRecord, LocationRedactor, list_files_with_stats, nifti_volume_id, redacted_logs, scan_files
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

#: ``manifest.csv`` -> ``manifest.locations.csv`` (see :func:`locations_path`).
LOCATIONS_INFIX = ".locations"

#: ``DataFrame.attrs`` key: the absolute folder the manifest's relative paths start from (the scanned
#: root). Saved in the locations file as the ``scan_root`` column, so ``data.manifest`` alone finds
#: the files; ``data.root`` overrides it (an archive that moved).
ROOT_ATTR = "medssl_root"
_ROOT_COLUMN = "scan_root"

#: ``DataFrame.attrs`` key: the locations file a manifest was loaded without.
MISSING_LOCATIONS_ATTR = "medssl_missing_locations"

#: Values that make an extra column a location column (it cannot be passed as ``share=``).
_PATH_SUFFIXES = (".nii", ".nii.gz", ".dcm", ".ima", ".nrrd", ".nhdr", ".mha", ".mhd", ".png", ".jpg", ".jpeg",
                  ".tif", ".tiff", ".npy", ".npz", ".h5", ".hdf5", ".json", ".csv", ".parquet", ".pt")

NiftiPatientRule = Literal["auto", "parent", "file"]


# ---------------------------------------------------------------------------------------------
# Locations in text


def _posix(rel: str) -> str:
    return (rel.replace(os.sep, "/") if os.sep != "/" else rel) if rel not in ("", ".") else "."


def _common_folder(rels: Sequence[str]) -> str:
    if len(rels) == 1:
        return _posix(os.path.dirname(rels[0]) or ".")
    return _posix(os.path.commonpath(rels) or ".")


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


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA


def _row_files(row: Mapping[str, Any]) -> list[str]:
    """Every file of a row: its ``files`` (DICOM), else its ``path`` (a NIfTI or other single file)."""
    files = row.get("files")
    if isinstance(files, (list, tuple, np.ndarray)) and len(files):
        return [str(f) for f in files]
    path = row.get("path")
    return [] if _is_missing(path) else [str(path)]


def _redact_reasons(frame: pd.DataFrame, root: str | None = None) -> pd.DataFrame:
    """Replace each row's own locations in its ``reason`` (a safety net for rows of older manifests
    and frames edited by hand; rows built here name none)."""
    if "reason" not in frame.columns or "path" not in frame.columns or not frame["reason"].notna().any():
        return frame
    reasons = list(frame["reason"])
    for i, row in enumerate(frame[["reason", "path", "files"]].to_dict("records")):
        if isinstance(row["reason"], str) and row["reason"]:
            files = row["files"] if isinstance(row["files"], (list, tuple, np.ndarray)) else []
            path = None if _is_missing(row["path"]) else str(row["path"])
            reasons[i] = LocationRedactor(_location_tokens([str(f) for f in files], path, root))(row["reason"])
    frame = frame.copy()
    frame["reason"] = pd.Series(reasons, index=frame.index, dtype=frame["reason"].dtype)
    return frame


# ---------------------------------------------------------------------------------------------
# Rows


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
        n_files=1,
        file_stats=[stats[record.rel]],
        size_bytes=int(stats[record.rel].split(":")[0]),
    )
    return row


def _folder_row(rel: str, reason: str, salt: bytes, salt_id: str) -> dict[str, Any]:
    """A folder the scan could not list: an ``error`` row, so the loss is visible in the manifest."""
    row = _empty_row(salt_id)
    rel = _posix(rel)
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


def _series_rows(
    headers: list[DicomHeader], stats: dict[str, str], salt: bytes, salt_id: str, on_uneven: str, root: str,
    limits: ReadLimits | None = None,
) -> list[dict]:
    # Workers decode acquisition fields once per series: share them with the series' other files.
    shared = next((h.meta for h in sorted(headers, key=lambda h: h.path) if h.meta is not None), None)
    for header in headers:
        if header.meta is None:
            header.meta = shared
    series_id = deid.pseudonymize(headers[0].series_key or "file:" + _posix(headers[0].path), "volume", salt)
    rels = sorted(_posix(h.path) for h in headers)
    folder = _common_folder(rels) if len(rels) > 1 else rels[0]
    in_reason = LocationRedactor(_location_tokens(rels, folder, root))
    broken = [h for h in headers if h.status == "error"]
    if broken:
        row = _dicom_base(headers, stats, salt_id)
        row["volume_id"] = series_id
        shown = "; ".join(f"{_posix(h.path)}: {h.reason}" for h in sorted(broken, key=lambda h: _posix(h.path))[:3])
        more = f" (and {len(broken) - 3} more)" if len(broken) > 3 else ""
        row.update(status="error", reason=in_reason(f"{len(broken)} of {len(headers)} files unreadable: {shown}{more}"))
        return [row]
    try:
        # Geometry code logs (a resampled stack) name the series' folder: the log names the volume.
        with redacted_logs(_location_tokens(rels, folder, root, volume_id=series_id)):
            plans = plan_series(headers, on_uneven=on_uneven, limits=limits)  # type: ignore[arg-type]
    except VolumeReadError as exc:
        row = _dicom_base(headers, stats, salt_id)
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


# ---------------------------------------------------------------------------------------------
# Frames


def _apply_schema(frame: pd.DataFrame, locations: bool = True) -> pd.DataFrame:
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
            frame[column] = [list(v) if isinstance(v, (list, tuple, np.ndarray)) else (None if _is_missing(v) else v) for v in frame[column]]
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


def _sorted_by_path(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows by ``path`` then ``volume_id`` (missing last). Sorted in Python: pandas' multi-column
    sort hashes text through Arrow, which refuses file names that are not valid UTF-8."""
    keys = [(p is None or _is_missing(p), str(p) if not _is_missing(p) else "", str(v) if not _is_missing(v) else "")
            for p, v in zip(frame["path"], frame["volume_id"])]
    order = sorted(range(len(keys)), key=keys.__getitem__)
    return frame.iloc[order].reset_index(drop=True)


def _as_bool(value: Any) -> Any:
    """``True``/``False`` from a bool, a number or the text a CSV holds; missing -> ``pd.NA``."""
    if _is_missing(value):
        return pd.NA
    if isinstance(value, str):
        text = value.strip().lower()
        return True if text in ("true", "1", "yes") else (False if text in ("false", "0", "no") else pd.NA)
    return bool(value)


def _has_locations(frame: pd.DataFrame) -> bool:
    return "path" in frame.columns and bool(frame["path"].notna().any() or frame.empty)


def _reusable_rows(previous: pd.DataFrame | str | os.PathLike | None, stats: dict[str, str], salt_id: str) -> list[dict]:
    if previous is None:
        return []
    previous = load_manifest(previous) if not isinstance(previous, pd.DataFrame) else previous
    if not _has_locations(previous):
        logger.warning("the previous manifest has no file locations (its locations file is missing); rescanning every file")
        return []
    previous = _apply_schema(previous)
    if len(previous) and set(previous["salt_id"].dropna()) != {salt_id}:
        logger.warning("the previous manifest used a different de-identification salt; rescanning every file")
        return []
    current = {_posix(rel): stat for rel, stat in stats.items()}
    rows = []
    for row in previous.to_dict("records"):
        files, file_stats = _row_files(row), list(row.get("file_stats") or [])
        if files and len(files) == len(file_stats) and all(current.get(f) == s for f, s in zip(files, file_stats)):
            rows.append(row)
    return rows


def _exclude(stats: dict[str, str], root_path: Path, exclude: Sequence[str | os.PathLike]) -> None:
    """Drop ``exclude`` (and their temporary files) from ``stats``."""
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


# ---------------------------------------------------------------------------------------------
# Public API


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
    limits: ReadLimits | None = None,
) -> pd.DataFrame:
    """Scan ``root`` recursively and return one row per volume (see the module docstring).

    The frame holds the location columns (``path``, ``files``, ``file_stats``) that loading needs;
    :func:`save_manifest` keeps them out of the shareable file. Reasons and log records name no
    location (``files[k]``, ``<path>``, or the ``volume_id`` in the log).

    Args:
        root: the archive folder.
        workers: header-reading processes; ``None`` uses every available core for archives of 200
            files or more and the calling process below that; ``0`` or ``1`` never starts processes.
        previous: an earlier manifest (frame, or file with its locations file) of the same root:
            unchanged files are not read.
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
        limits: the size guard (:class:`medssl.io.limits.ReadLimits`): a volume whose headers promise
            more voxels or pixel bytes is an ``error`` row (default ``$MEDSSL_MAX_VOXELS`` /
            ``$MEDSSL_MAX_BYTES``, else 2^31 voxels and 8 GiB).

    Returns:
        the manifest, sorted by ``path`` then ``volume_id``. Never raises for a bad file.
    """
    root_path = Path(root)
    if not root_path.is_dir():
        raise DataError(f"cannot scan {root}: no such folder")
    salt_bytes = deid.get_salt(salt)
    salt_id = deid.salt_fingerprint(salt_bytes)
    limits = as_limits(limits)
    unlisted: dict[str, str] = {}
    stats = list_files_with_stats(root_path, unlisted)
    if "." in unlisted:
        raise DataError(f"cannot scan {root}: the folder cannot be listed ({unlisted['.']})")
    _exclude(stats, root_path, exclude)

    reused = _reusable_rows(previous, stats, salt_id)
    covered = {f for row in reused for f in _row_files(row)}
    to_read = [rel for rel in stats if _posix(rel) not in covered]
    records = scan_files(str(root_path), to_read, salt_bytes, workers=workers, progress=progress, limits=limits)

    # A series that gained a file (or lost one, leaving its other files unchanged but now in a
    # different volume) must be rebuilt from all its files.
    touched = {r.header.series_key for r in records.values() if r.header is not None and r.header.series_key}
    kept, rebuild = [], []
    for row in reused:
        (rebuild if row.get("format") == "dicom" and row.get("series_key") in touched else kept).append(row)
    if rebuild:
        native = {_posix(rel): rel for rel in stats}
        extra = [native[f] for row in rebuild for f in _row_files(row) if f in native]
        records.update(scan_files(str(root_path), extra, salt_bytes, workers=workers, progress=False, limits=limits))

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
        rows.extend(_series_rows(headers, stats, salt_bytes, salt_id, on_uneven, str(root_path), limits))
    rows.extend(_folder_row(rel, reason, salt_bytes, salt_id) for rel, reason in unlisted.items())

    # dtype=object: pandas would infer Arrow strings, which cannot hold a file name that is not UTF-8
    frame = _apply_schema(pd.DataFrame(rows, columns=list(SCHEMA), dtype=object) if rows else pd.DataFrame(columns=list(SCHEMA)))
    frame = _redact_reasons(frame, str(root_path))
    frame = _sorted_by_path(frame)
    frame.attrs[ROOT_ATTR] = str(Path(root_path).resolve())
    counts = frame["status"].value_counts().to_dict()
    unknown = int(((frame["status"] == "ok") & (frame["spacing_known"] == False)).sum())  # noqa: E712
    if unknown:
        logger.warning("manifest: %d volumes have unknown pixel spacing (1 mm assumed; column spacing_known, "
                       "reason says what the header held)", unknown)
    logger.info(
        "manifest: %d ok, %d error, %d skipped rows; %d files read, %d rows reused",
        counts.get("ok", 0),
        counts.get("error", 0),
        counts.get("skipped", 0),
        len(records),
        len(kept),
    )
    return frame


def locations_path(manifest_path: str | os.PathLike) -> Path:
    """The locations file of a manifest: ``manifest.csv`` -> ``manifest.locations.csv`` (same for
    ``.parquet``)."""
    path = Path(manifest_path)
    return path.with_name(path.stem + LOCATIONS_INFIX + path.suffix)


def _holds_paths(values: pd.Series) -> bool:
    for value in values:
        if isinstance(value, (list, tuple, np.ndarray)):
            if any(isinstance(v, str) and ("/" in v or "\\" in v or v.lower().endswith(_PATH_SUFFIXES)) for v in value):
                return True
        elif isinstance(value, (str, os.PathLike)):
            text = os.fspath(value)
            if "/" in text or "\\" in text or text.lower().endswith(_PATH_SUFFIXES):
                return True
    return False


#: Prefix of a location written in escaped form: a file name that is not valid UTF-8.
_BYTES_PREFIX = "fsbytes:"


def _escape_location(value: Any) -> Any:
    """A path as text that every table format stores: unchanged when it is valid UTF-8; otherwise
    (names with bytes like ``ff fe``, which Python holds as lone surrogates and Parquet and UTF-8
    CSV refuse) ``fsbytes:`` + its bytes percent-encoded, which :func:`_unescape_location` reverses."""
    if not isinstance(value, str):
        return value
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        return _BYTES_PREFIX + urllib.parse.quote_from_bytes(os.fsencode(value), safe="/")


def _unescape_location(value: Any) -> Any:
    if not isinstance(value, str) or not value.startswith(_BYTES_PREFIX):
        return value
    raw = urllib.parse.unquote_to_bytes(value[len(_BYTES_PREFIX):])
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return os.fsdecode(raw)
    return value  # a real name that begins with the prefix (never written escaped)


def _map_locations(frame: pd.DataFrame, convert: Any) -> pd.DataFrame:
    """``convert`` applied to every text of the location columns (lists element-wise)."""
    columns = [c for c in (*LOCATION_COLUMNS, _ROOT_COLUMN) if c in frame.columns and c != "file_stats"]
    if not columns:
        return frame
    frame = frame.copy()
    for column in columns:
        frame[column] = pd.Series(
            [[convert(v) for v in value] if isinstance(value, (list, tuple, np.ndarray)) else convert(value)
             for value in frame[column]],
            index=frame.index, dtype=object,
        )
    return frame


def _write_table(frame: pd.DataFrame, path: Path, suffix: str) -> None:
    frame = _map_locations(frame, _escape_location)
    if suffix == ".parquet":
        frame.to_parquet(path, index=False)
        return
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype == object and any(isinstance(v, (list, tuple, np.ndarray)) for v in out[column]):
            out[column] = [json.dumps(list(v)) if isinstance(v, (list, tuple, np.ndarray)) else v for v in out[column]]
    out.to_csv(path, index=False)


def save_manifest(frame: pd.DataFrame, path: str | os.PathLike, *, share: Sequence[str] = ()) -> Path:
    """Write a manifest atomically as two files: the shareable manifest at ``path`` and its
    site-local locations file beside it (:func:`locations_path`).

    * ``path`` (``.parquet``, or ``.csv`` with lists as JSON): every column except the locations
      (``path``, ``files``, ``file_stats``) and the columns medssl did not make. **Safe to share**:
      pseudonymous keys, allow-listed acquisition fields, geometry, status and reasons that name no
      path.
    * ``<stem>.locations.<ext>``: ``volume_id``, the location columns and the columns medssl did
      not make (unless named in ``share``). **Stays inside the hospital; never share it**: export
      folders and file names often hold patient names and IDs.

    Both are written to temporary files first and moved into place together (locations first); a
    run killed between the two moves leaves a pair that :func:`load_manifest` reports as not
    matching. A frame without location columns (a manifest loaded without its locations file)
    writes the manifest only.

    Args:
        frame: a manifest (:func:`build_manifest` or :func:`load_manifest`).
        path: the shareable file, ``.parquet`` or ``.csv``.
        share: extra columns (not made by medssl) to write to the shareable file, e.g. ``["split"]``;
            a column holding file paths cannot be shared.

    Returns:
        ``path``.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise ValueError(f"a manifest is saved as .parquet or .csv, got {path.name}")
    has_locations = _has_locations(frame)
    table = _apply_schema(frame.copy(), locations=has_locations)
    extras = [c for c in table.columns if c not in SCHEMA]
    for column in share:
        if column in LOCATION_COLUMNS:
            raise ValueError(f"column {column!r} holds file locations and cannot be shared")
        if column not in extras:
            raise ValueError(f"share={list(share)}: {column!r} is not an extra column of the manifest")
        if _holds_paths(table[column]):
            raise ValueError(f"column {column!r} holds file paths and cannot be shared (they may name patients)")
    if table["volume_id"].isna().any() or not table["volume_id"].is_unique:
        raise DataError(f"cannot save manifest {path}: volume_id must be set and unique (it joins the two files)")
    if has_locations:
        table = _redact_reasons(table)
    local = [c for c in LOCATION_COLUMNS if has_locations] + [c for c in extras if c not in share]
    shared = [c for c in table.columns if c not in local]
    locations = locations_path(path)
    with atomic_path(path, suffix=suffix) as tmp_manifest:
        with atomic_path(locations, suffix=suffix) if local else contextlib.nullcontext() as tmp_locations:
            _write_table(table[shared], tmp_manifest, suffix)
            if tmp_locations is not None:
                located = table[["volume_id"] + local].copy()
                if has_locations and frame.attrs.get(ROOT_ATTR):
                    located[_ROOT_COLUMN] = str(frame.attrs[ROOT_ATTR])
                _write_table(located, tmp_locations, suffix)
    if local:
        logger.info(
            "manifest written to %s: shareable (no file locations, no identifiers); its locations file %s "
            "holds file paths (%s) that may name patients: keep it inside the hospital and never share it",
            path, locations, ", ".join(local),
        )
    else:
        logger.info("manifest written to %s without file locations (the frame has none); %s not written", path, locations.name)
    return path


def _read_table(path: Path) -> pd.DataFrame:
    try:
        if path.suffix.lower() == ".parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
            for column in LIST_COLUMNS:
                if column in frame.columns:
                    frame[column] = [json.loads(v) if isinstance(v, str) and v else None for v in frame[column]]
    except Exception as exc:
        raise DataError(f"manifest file {path} cannot be read ({exc})") from exc
    return _map_locations(frame, _unescape_location)


def _join_locations(frame: pd.DataFrame, local: pd.DataFrame, path: Path, locations: Path) -> pd.DataFrame:
    """The manifest with its locations, one-to-one by ``volume_id``; :class:`DataError` naming both
    files when they were not saved together."""
    fix = "they were not saved together: save both again with save_manifest, or rebuild with `medssl manifest`"
    if "volume_id" not in local.columns:
        raise DataError(f"locations file {locations} of manifest {path} has no volume_id column; {fix}")
    for name, table in ((path, frame), (locations, local)):
        if table["volume_id"].isna().any() or not table["volume_id"].is_unique:
            raise DataError(f"{name}: volume_id must be set and unique to join manifest {path} and its locations file {locations}")
    overlap = [c for c in local.columns if c in frame.columns and c != "volume_id"]
    if overlap:
        raise DataError(f"manifest {path} and its locations file {locations} both hold the columns {overlap}; {fix}")
    ids, located = set(frame["volume_id"]), set(local["volume_id"])
    if ids != located:
        unlocated, stray = sorted(ids - located), sorted(located - ids)
        raise DataError(
            f"manifest {path} and its locations file {locations} do not match: {len(unlocated)} manifest rows have no "
            f"location{' (first: ' + unlocated[0] + ')' if unlocated else ''} and {len(stray)} locations belong to no "
            f"manifest row{' (first: ' + stray[0] + ')' if stray else ''}; {fix}"
        )
    return frame.merge(local, on="volume_id", how="left", sort=False, validate="one_to_one")


def load_manifest(path: str | os.PathLike, *, require_locations: bool = False) -> pd.DataFrame:
    """Read a manifest written by :func:`save_manifest` and join its locations file when it exists.

    With the locations file the frame equals the one saved (columns and dtypes as built). Without
    it (a manifest shared outside the hospital) the frame has no location columns: it can be
    filtered, split and counted, but not loaded from; :func:`load_manifest_volume` and
    :func:`require_locations` then raise a :class:`DataError` naming the missing file.

    Args:
        path: the manifest (``.parquet`` or ``.csv``).
        require_locations: raise :class:`DataError` at once when the locations file is missing
            (for callers that load volumes).

    A single-file manifest of older medssl versions (locations inside) is read as it is, with a
    warning that it must not be shared.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"manifest {path} does not exist (build it with `medssl manifest ROOT --out {path}`)")
    frame = _read_table(path)
    missing = [c for c in ("volume_id", "status") if c not in frame.columns]
    if missing:
        raise DataError(f"manifest {path} lacks the columns {missing}; rebuild it with `medssl manifest`")
    if any(c in frame.columns for c in LOCATION_COLUMNS):
        logger.warning(
            "manifest %s holds file locations in the same file (written by an older medssl): do not share it; "
            "save it again with save_manifest to move them into a locations file", path,
        )
        return _apply_schema(frame)
    locations = locations_path(path)
    if not locations.is_file():
        if require_locations:
            raise DataError(_missing_locations_message(f"manifest {path}", str(locations)))
        logger.info("manifest %s loaded without file locations (%s is not there): volumes cannot be loaded from it",
                    path, locations.name)
        table = _apply_schema(frame, locations=False)
        table.attrs[MISSING_LOCATIONS_ATTR] = str(locations)
        return table
    local = _read_table(locations)
    root = None
    if _ROOT_COLUMN in local.columns:
        roots = local[_ROOT_COLUMN].dropna().unique()
        root = str(roots[0]) if len(roots) else None
        local = local.drop(columns=[_ROOT_COLUMN])
    table = _apply_schema(_join_locations(frame, local, path, locations))
    if root:
        table.attrs[ROOT_ATTR] = root
    return table


def manifest_root(frame: pd.DataFrame) -> Path | None:
    """The folder a manifest's relative ``path`` values start from (the scanned root), if recorded."""
    root = (getattr(frame, "attrs", {}) or {}).get(ROOT_ATTR)
    return Path(root) if root else None


def _missing_locations_message(what: str, locations: str | None) -> str:
    where = f"its locations file {locations} is missing" if locations else "its locations file (<manifest>.locations.<ext>) was not loaded"
    return (f"{what} has no file locations: {where}. The shareable manifest alone cannot load volumes; use it "
            "where its locations file is (inside the hospital), or rebuild it with `medssl manifest ROOT --out FILE`")


def require_locations(frame: pd.DataFrame | pd.Series | Mapping[str, Any], what: str = "the manifest") -> None:
    """Raise :class:`DataError` unless ``frame`` (a manifest or one row) holds file locations.

    For code that loads volumes from a manifest: the error names the missing locations file when
    the manifest came from :func:`load_manifest`.
    """
    attrs = getattr(frame, "attrs", {}) or {}
    if isinstance(frame, pd.DataFrame):
        present = _has_locations(frame)
    else:
        present = bool(_row_files(frame)) and not _is_missing(frame.get("path"))
    if not present:
        raise DataError(_missing_locations_message(what, attrs.get(MISSING_LOCATIONS_ATTR)))


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
    """``medssl manifest ROOT --out FILE``: build (re-using ``out`` and its locations file when they
    exist and ``rescan``) and save both files.

    ``out`` may lie inside ``root``: neither it nor its locations file is scanned.
    """
    previous = out if rescan and Path(out).is_file() else None
    frame = build_manifest(
        root, workers=workers, previous=previous, progress=progress, salt=salt, on_uneven=on_uneven,
        exclude=[out, locations_path(out)],
    )
    save_manifest(frame, out)
    return frame


def load_manifest_volume(row: pd.Series | Mapping[str, Any], root: str | os.PathLike, **load_kwargs: Any) -> Volume:
    """Load the volume of one manifest row (locations relative to ``root``) with :func:`load_volume`.

    Uses the row's file list, so a folder holding several series needs no ``series_uid``; a NIfTI
    row (``files`` is ``None``) loads its ``path``. Raises :class:`DataError` when the row has no
    location (the manifest was loaded without its locations file) or its status is not ``ok``.
    """
    from medssl.io import load_volume

    volume_id = row.get("volume_id")
    require_locations(row, f"manifest row {volume_id}")
    if row.get("status") not in (None, "ok"):
        raise DataError(f"manifest row {volume_id} has status {row.get('status')}: {row.get('reason')}")
    paths = [os.path.join(os.fspath(root), *PurePosixPath(f).parts) for f in _row_files(row)]
    if row.get("format") == "nifti" or len(paths) == 1:
        if row.get("format") == "nifti" and "modality" not in load_kwargs and isinstance(row.get("modality"), str):
            load_kwargs["modality"] = row["modality"]
        return load_volume(paths[0], **load_kwargs)
    return load_volume(paths, **load_kwargs)
