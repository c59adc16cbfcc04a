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

**Two files, one shareable** (:mod:`medssl.data.manifest_store`). Export folders are often named after patients
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
:func:`medssl.io.redaction.redact_locations`). The acquisition columns come only from the
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

import logging
import os
from pathlib import Path
from typing import Literal, Sequence

import pandas as pd

from medssl.data.manifest_rows import (
    ACQUISITION_COLUMNS,
    LIST_COLUMNS,
    LOCATION_COLUMNS,
    SCHEMA,
    NiftiPatientRule,
    apply_schema,
    dicom_base,
    file_row,
    folder_row,
    holds_locations,
    is_missing,
    nifti_row,
    posix_path,
    redact_reasons,
    row_files,
    series_rows,
)
from medssl.data.manifest_store import (
    MISSING_LOCATIONS_ATTR,
    ROOT_ATTR,
    load_manifest,
    load_manifest_volume,
    locations_path,
    manifest_root,
    require_locations,
    save_manifest,
)
from medssl.errors import DataError
from medssl.io import deid
from medssl.io.dicom import group_by_series
from medssl.io.dicom_header import DicomHeader
from medssl.io.limits import ReadLimits, as_limits
from medssl.io.scan import list_files_with_stats, scan_files

logger = logging.getLogger(__name__)

#: The schema (:mod:`medssl.data.manifest_rows`) and the two-file store
#: (:mod:`medssl.data.manifest_store`) are re-exported: ``medssl.data.manifest`` is the manifest's API.
__all__ = [
    "ACQUISITION_COLUMNS", "LIST_COLUMNS", "LOCATION_COLUMNS", "MISSING_LOCATIONS_ATTR", "ROOT_ATTR", "SCHEMA",
    "build_manifest", "load_manifest", "load_manifest_volume", "locations_path", "manifest_root",
    "require_locations", "save_manifest", "write_manifest",
]


def _sorted_by_path(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows by ``path`` then ``volume_id`` (missing last). Sorted in Python: pandas' multi-column
    sort hashes text through Arrow, which refuses file names that are not valid UTF-8."""
    keys = [(p is None or is_missing(p), str(p) if not is_missing(p) else "", str(v) if not is_missing(v) else "")
            for p, v in zip(frame["path"], frame["volume_id"])]
    order = sorted(range(len(keys)), key=keys.__getitem__)
    return frame.iloc[order].reset_index(drop=True)


def _reusable_rows(previous: pd.DataFrame | str | os.PathLike | None, stats: dict[str, str], salt_id: str) -> list[dict]:
    if previous is None:
        return []
    previous = load_manifest(previous) if not isinstance(previous, pd.DataFrame) else previous
    if not holds_locations(previous):
        logger.warning("the previous manifest has no file locations (its locations file is missing); rescanning every file")
        return []
    previous = apply_schema(previous)
    if len(previous) and set(previous["salt_id"].dropna()) != {salt_id}:
        logger.warning("the previous manifest used a different de-identification salt; rescanning every file")
        return []
    current = {posix_path(rel): stat for rel, stat in stats.items()}
    rows = []
    for row in previous.to_dict("records"):
        files, file_stats = row_files(row), list(row.get("file_stats") or [])
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
    covered = {f for row in reused for f in row_files(row)}
    to_read = [rel for rel in stats if posix_path(rel) not in covered]
    records = scan_files(str(root_path), to_read, salt_bytes, workers=workers, progress=progress, limits=limits)

    # A series that gained a file (or lost one, leaving its other files unchanged but now in a
    # different volume) must be rebuilt from all its files.
    touched = {r.header.series_key for r in records.values() if r.header is not None and r.header.series_key}
    kept, rebuild = [], []
    for row in reused:
        (rebuild if row.get("format") == "dicom" and row.get("series_key") in touched else kept).append(row)
    if rebuild:
        native = {posix_path(rel): rel for rel in stats}
        extra = [native[f] for row in rebuild for f in row_files(row) if f in native]
        records.update(scan_files(str(root_path), extra, salt_bytes, workers=workers, progress=False, limits=limits))

    rows: list[dict] = list(kept)
    dicom_headers: list[DicomHeader] = []
    for rel in sorted(records):
        record = records[rel]
        if record.kind == "nifti":
            rows.append(nifti_row(record, stats, salt_bytes, salt_id, nifti_patient))
        elif record.kind in ("skipped", "error"):
            rows.append(file_row(record, record.kind, stats, salt_bytes, salt_id))
        elif record.header is not None and record.header.status == "non-image":
            row = dicom_base([record.header], stats, salt_id)
            row.update(
                volume_id=deid.pseudonymize("file:" + posix_path(rel), "volume", salt_bytes),
                status="skipped",
                reason=record.header.reason,
            )
            rows.append(row)
        elif record.header is not None:
            dicom_headers.append(record.header)
    for headers in group_by_series(dicom_headers).values():
        rows.extend(series_rows(headers, stats, salt_bytes, salt_id, on_uneven, str(root_path), limits))
    rows.extend(folder_row(rel, reason, salt_bytes, salt_id) for rel, reason in unlisted.items())

    # dtype=object: pandas would infer Arrow strings, which cannot hold a file name that is not UTF-8
    frame = apply_schema(pd.DataFrame(rows, columns=list(SCHEMA), dtype=object) if rows else pd.DataFrame(columns=list(SCHEMA)))
    frame = redact_reasons(frame, str(root_path))
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
