"""Tables on disk: one reader and one writer for manifests, label tables and splits (CSV or Parquet).

The format follows the suffix: ``.parquet`` is Parquet (lists stay lists), anything else CSV, where
list cells (a DICOM series' ``files``) are written as JSON lists and read back with
``list_columns``. :func:`write_table` is atomic (:func:`medssl.utils.atomic.atomic_path`); a writer
that commits several files together (the manifest and its locations file) writes each temporary
file with :func:`dump_table`. A missing or unreadable file is a :class:`~medssl.errors.DataError`
naming it.

Example:
    >>> import tempfile, pandas as pd
    >>> path = write_table(pd.DataFrame({"case_id": ["007"], "files": [["a.dcm", "b.dcm"]]}),
    ...                    tempfile.mkdtemp() + "/t.csv")
    >>> read_table(path, as_text=True, list_columns=["files"]).to_dict("records")
    [{'case_id': '007', 'files': ['a.dcm', 'b.dcm']}]
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from medssl.errors import DataError
from medssl.utils.atomic import atomic_path

__all__ = ["dump_table", "read_table", "write_table"]


def read_table(
    path: str | os.PathLike,
    *,
    what: str = "table",
    missing_hint: str = "",
    as_text: bool = False,
    dtype: dict[str, Any] | None = None,
    list_columns: Sequence[str] = (),
) -> pd.DataFrame:
    """Read a CSV (``.csv``, ``.csv.gz``) or Parquet (``.parquet``) table.

    Args:
        what: how errors name the file (``"manifest file"``, ``"labels table"``).
        missing_hint: appended to the error for a missing file (how to make one).
        as_text: CSV cells read as text, only empty cells missing (identifiers such as ``007``
            keep their zeros).
        dtype: CSV column types (e.g. ``{"case_id": str}``).
        list_columns: CSV columns holding JSON lists, decoded (empty cells become None).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} {path} does not exist" + (f" ({missing_hint})" if missing_hint else ""))
    try:
        if path.suffix.lower() == ".parquet":
            return pd.read_parquet(path)
        text = {"dtype": str, "keep_default_na": False, "na_values": [""]} if as_text else {"dtype": dtype}
        frame = pd.read_csv(path, **text)
        for column in list_columns:
            if column in frame.columns:
                frame[column] = [json.loads(v) if isinstance(v, str) and v else None for v in frame[column]]
    except Exception as exc:  # pandas and pyarrow raise many kinds
        raise DataError(f"{what} {path} is not a readable CSV or Parquet table ({exc})") from exc
    return frame


def dump_table(frame: pd.DataFrame, path: str | os.PathLike, suffix: str) -> None:
    """Write ``frame`` to ``path`` as ``suffix`` says (``.parquet`` or CSV, list cells as JSON), in
    place: for a temporary file the caller commits."""
    if suffix == ".parquet":
        frame.to_parquet(path, index=False)
        return
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype == object and any(isinstance(v, (list, tuple, np.ndarray)) for v in out[column]):
            out[column] = [json.dumps(list(v)) if isinstance(v, (list, tuple, np.ndarray)) else v for v in out[column]]
    out.to_csv(path, index=False)


def write_table(frame: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write ``frame`` as CSV or Parquet (by suffix), atomically; returns ``path``."""
    path = Path(path)
    suffix = ".parquet" if path.suffix == ".parquet" else ".csv"
    with atomic_path(path, suffix=suffix) as tmp:
        dump_table(frame, tmp, suffix)
    return path
