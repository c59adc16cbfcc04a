"""The manifest on disk: two files, one shareable (:func:`save_manifest`, :func:`load_manifest`).

Export folders are often named after patients, so the *location* columns
(:data:`~medssl.data.manifest_rows.LOCATION_COLUMNS`) are as sensitive as the archive.
:func:`save_manifest` writes the manifest at the path asked for **without** them (safe to share)
and a site-local **locations file** beside it, ``<stem>.locations.<ext>``
(:func:`locations_path`), which must stay inside the hospital; both are committed together,
atomically. :func:`load_manifest` joins the two by ``volume_id`` when the locations file is there;
without it the frame has no location columns, and loading a volume from it
(:func:`load_manifest_volume`, :func:`require_locations`) raises a
:class:`~medssl.errors.DataError` saying the locations file is missing. Tables are read and written
by :mod:`medssl.data.tables`.

Example:
    >>> import tempfile
    >>> from medssl.data.manifest_rows import apply_schema
    >>> folder = tempfile.mkdtemp()
    >>> frame = apply_schema(pd.DataFrame([{"volume_id": "volume-1", "status": "ok", "format": "nifti",
    ...                                     "path": "sub-01/t1.nii.gz"}]))
    >>> shareable = save_manifest(frame, folder + "/manifest.csv")
    >>> locations_path(shareable).name, "path" in pd.read_csv(shareable).columns
    ('manifest.locations.csv', False)
    >>> load_manifest(shareable).loc[0, "path"]
    'sub-01/t1.nii.gz'
"""

from __future__ import annotations

import contextlib
import logging
import os
import urllib.parse
from pathlib import Path, PurePosixPath
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from medssl.data.manifest_rows import (
    LIST_COLUMNS,
    LOCATION_COLUMNS,
    SCHEMA,
    apply_schema,
    holds_locations,
    is_missing,
    redact_reasons,
    row_files,
)
from medssl.data.tables import dump_table, read_table
from medssl.errors import DataError
from medssl.io.volume import Volume
from medssl.utils.atomic import atomic_path

logger = logging.getLogger(__name__)

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
    dump_table(_map_locations(frame, _escape_location), path, suffix)


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
    has_locations = holds_locations(frame)
    table = apply_schema(frame.copy(), locations=has_locations)
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
        table = redact_reasons(table)
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
    frame = read_table(path, what="manifest file", as_text=True, list_columns=LIST_COLUMNS)
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
        return apply_schema(frame)
    locations = locations_path(path)
    if not locations.is_file():
        if require_locations:
            raise DataError(_missing_locations_message(f"manifest {path}", str(locations)))
        logger.info("manifest %s loaded without file locations (%s is not there): volumes cannot be loaded from it",
                    path, locations.name)
        table = apply_schema(frame, locations=False)
        table.attrs[MISSING_LOCATIONS_ATTR] = str(locations)
        return table
    local = _read_table(locations)
    root = None
    if _ROOT_COLUMN in local.columns:
        roots = local[_ROOT_COLUMN].dropna().unique()
        root = str(roots[0]) if len(roots) else None
        local = local.drop(columns=[_ROOT_COLUMN])
    table = apply_schema(_join_locations(frame, local, path, locations))
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
        present = holds_locations(frame)
    else:
        present = bool(row_files(frame)) and not is_missing(frame.get("path"))
    if not present:
        raise DataError(_missing_locations_message(what, attrs.get(MISSING_LOCATIONS_ATTR)))


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
    paths = [os.path.join(os.fspath(root), *PurePosixPath(f).parts) for f in row_files(row)]
    if row.get("format") == "nifti" or len(paths) == 1:
        if row.get("format") == "nifti" and "modality" not in load_kwargs and isinstance(row.get("modality"), str):
            load_kwargs["modality"] = row["modality"]
        return load_volume(paths[0], **load_kwargs)
    return load_volume(paths, **load_kwargs)
