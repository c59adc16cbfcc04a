"""Manifest rows to cache requests: which rows are usable, which files (and mask) make one volume.

A manifest row (:func:`medssl.data.manifest.build_manifest`, or any table with a ``path`` column)
names a volume by its ``path`` (a file or a series folder) and optionally its ``files``, its
``series_uid``, ``modality`` and a mask column; :func:`request_from_row` turns it into the
:class:`CacheRequest` that :meth:`medssl.data.cache.PreprocessedCache.get_request` reads;
:func:`usable_entries` keeps the rows that can be read (``status == "ok"``, wanted modalities).

Example:
    >>> request_from_row({"path": "ct.nii.gz", "mask": "seg.nii.gz", "modality": "CT", "volume_id": "volume-1"},
    ...                  root="/data")
    CacheRequest(image='/data/ct.nii.gz', mask='/data/seg.nii.gz', series_uid=None, modality='CT', label='volume-1')
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from medssl.errors import DataError
from medssl.io import deid
from medssl.io.redaction import redact_locations
from medssl.utils.provenance import SourceSpec

__all__ = ["MASK_COLUMNS", "CacheRequest", "redacted_reason", "request_from_row", "request_locations", "request_name",
           "requests_from_entries", "usable_entries"]


@dataclass(frozen=True)
class CacheRequest:
    """What :meth:`PreprocessedCache.get` needs for one row of a manifest (paths resolved)."""

    image: SourceSpec
    mask: str | None = None
    series_uid: str | None = None
    modality: str | None = None
    label: str | None = None  # how logs name it: the manifest's volume_id (never a path)


MASK_COLUMNS = ("mask_path", "mask", "label_path", "seg_path")


def _cell(row: Any, name: str) -> Any:
    value = row.get(name) if hasattr(row, "get") else None
    if value is None:
        return None
    try:
        import pandas as pd

        if not isinstance(value, (list, tuple, np.ndarray)) and pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return value


def _resolve(path: str | os.PathLike, root: str | os.PathLike | None) -> str:
    path = Path(path)
    if not path.is_absolute() and root is not None:
        path = Path(root) / path
    return str(path)


def _parse_files(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if text.startswith("["):
            try:
                value = json.loads(text)
            except ValueError:
                return None
        else:
            value = [part for part in text.split(";") if part]
    files = [str(v) for v in value]
    return files or None


def request_from_row(row: Any, root: str | os.PathLike | None = None) -> CacheRequest:
    """A :class:`CacheRequest` from one manifest row (a mapping or a pandas row) or a path.

    Columns: ``path`` (required; relative to ``root`` or absolute), optional ``files`` (the
    series' files: a list, a JSON list or ``;``-separated, relative to ``root`` or to ``path``),
    ``series_uid``, ``modality`` and a mask column (``mask_path``, ``mask``, ``label_path`` or
    ``seg_path``).
    """
    if isinstance(row, (str, os.PathLike)):
        return CacheRequest(_resolve(row, root))
    path = _cell(row, "path")
    if path is None:
        raise DataError("a manifest row has no 'path' (the image file or series folder, relative to data.root)")
    image: SourceSpec = _resolve(path, root)
    files = _parse_files(_cell(row, "files"))
    if files:
        resolved = [_resolve(f, root) for f in files]
        if not all(os.path.exists(f) for f in resolved):
            resolved = [str(Path(image) / f) if not os.path.isabs(f) else f for f in files]
        if all(os.path.exists(f) for f in resolved):
            image = resolved
    mask = None
    for column in MASK_COLUMNS:
        value = _cell(row, column)
        if value is not None and str(value).strip():
            mask = _resolve(value, root)
            break
    series_uid = _cell(row, "series_uid")
    modality = _cell(row, "modality")
    label = _cell(row, "volume_id")
    return CacheRequest(image, mask, None if series_uid is None else str(series_uid),
                        None if modality is None else str(modality), None if label is None else str(label))


def requests_from_entries(entries: Any, root: str | os.PathLike | None = None) -> list[CacheRequest]:
    """Requests for every row of a DataFrame (rows with ``status`` other than ``ok`` are kept: the
    caller filters), a list of rows or a list of paths."""
    if hasattr(entries, "iterrows"):
        if "path" not in entries.columns:
            raise DataError("the manifest has no 'path' column (image file or series folder per row)")
        return [request_from_row(row, root) for _, row in entries.iterrows()]
    return [request_from_row(row, root) for row in entries]


def request_name(request: CacheRequest) -> str:
    """How logs and reports name a request: its ``volume_id``, else a salted pseudonym of its path
    (``<file-...>``). Export folders carry patient names: no path goes to a log."""
    if request.label:
        return request.label
    image = request.image
    source = os.path.abspath(os.fspath(image)) if isinstance(image, (str, os.PathLike)) else \
        "\n".join(sorted(os.path.abspath(os.fspath(p)) for p in image))
    return "<" + deid.pseudonymize(source, "file") + ">"


def request_locations(request: CacheRequest, name: str) -> dict[str, str]:
    """The tokens that replace a request's files (and their folders) in an error text (see
    :func:`medssl.io.redaction.redact_locations`): its :func:`request_name`, ``<mask of ...>``."""
    paths = [request.image] if isinstance(request.image, (str, os.PathLike)) else list(request.image)
    locations = {}
    for path in paths + ([request.mask] if request.mask else []):
        text = os.fspath(path)
        token = name if path is not request.mask else f"<mask of {name}>"
        locations[text], locations[os.path.abspath(text)] = token, token
        folder = os.path.dirname(text)
        if folder and folder not in (os.sep, "."):
            locations.setdefault(folder, f"{token}/..")
            locations.setdefault(os.path.abspath(folder), f"{token}/..")
    return locations


def redacted_reason(request: CacheRequest, exc: BaseException) -> str:
    """The text of ``exc`` with the request's locations replaced by its name (:func:`request_name`)."""
    name = request_name(request)
    return redact_locations(str(exc), request_locations(request, name)) or type(exc).__name__


def usable_entries(entries: Any, modalities: Sequence[str] | None = None) -> Any:
    """The rows of a manifest that can be used: ``status == "ok"`` (when the column exists) and,
    when ``modalities`` is given, a ``modality`` among them. Raises :class:`DataError` when none is."""
    import pandas as pd

    if isinstance(entries, (list, tuple)):
        entries = pd.DataFrame([{"path": str(e)} if isinstance(e, (str, os.PathLike)) else dict(e) for e in entries])
    if not isinstance(entries, pd.DataFrame):
        raise DataError(f"entries must be a DataFrame with a 'path' column, got {type(entries).__name__}")
    if "path" not in entries.columns:
        raise DataError("entries have no 'path' column (the image file or series folder of each volume)")
    table = entries
    if "status" in table.columns:
        table = table[table["status"].fillna("ok").astype(str) == "ok"]
    if modalities:
        if "modality" not in table.columns:
            raise DataError(f"data.modalities={list(modalities)} needs a 'modality' column in the manifest")
        wanted = {m.upper() for m in modalities}
        table = table[table["modality"].astype(str).str.upper().isin(wanted)]
    if table.empty:
        raise DataError(f"no usable volume among {len(entries)} manifest rows (status 'ok'"
                        + (f" and modality in {list(modalities)})" if modalities else ")"))
    return table.reset_index(drop=True)
