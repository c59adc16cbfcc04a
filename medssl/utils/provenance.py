"""Fingerprints: short, stable hashes that tell whether two runs saw the same data, settings or weights.

Each name says what it hashes:

* :func:`source_fingerprint` - per file of a volume's source (a file, a series folder or a list of
  files): ``[absolute path, size, mtime_ns]`` (``mode="stat"``, as ``make`` and ``rsync`` decide
  staleness) or ``[size, blake2b of the bytes]`` (``mode="content"``, survives moving the archive).
  Part of the preprocessing cache key (:mod:`medssl.data.cache`).
* :func:`volume_files_fingerprint` - SHA-256 (16 hex digits) over each volume's path relative to the
  data root, byte size and file count: survives copying the archive elsewhere (no timestamps), changes
  when a volume is added, removed or rewritten to another size. ``environment.json`` and checkpoints
  of a pretraining run record it as ``data_fingerprint``.
* :func:`case_records_fingerprint` - blake2b (16 hex digits) over per-case records such as
  ``(case_id, label, patient)``, order-independent: the labeled data's fingerprint of a study
  (:mod:`medssl.eval.data`).
* :func:`text_fingerprint` / :func:`file_fingerprint` - blake2b (16 hex digits) of some values' text
  or of a file's bytes: a study cell's key, an encoder file's identity.

Example:
    >>> text_fingerprint("a", "b"), len(text_fingerprint("a", "b"))
    ('ad2fbbf2e07b42c7', 16)
    >>> case_records_fingerprint([("c1", 1), ("c2", 0)]) == case_records_fingerprint([("c2", 0), ("c1", 1)])
    True
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Iterable, Literal, Sequence

from medssl.errors import DataError

SourceSpec = str | os.PathLike | Sequence[str | os.PathLike]

__all__ = [
    "SourceSpec",
    "case_records_fingerprint",
    "file_fingerprint",
    "source_fingerprint",
    "text_fingerprint",
    "volume_files_fingerprint",
]


def _file_digest(path: Path, digest_size: int, chunk: int = 1 << 20) -> str:
    digest = hashlib.blake2b(digest_size=digest_size)
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _list_source_files(source: SourceSpec) -> list[Path]:
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            return sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        return [path]
    return sorted(Path(p) for p in source)


def source_fingerprint(source: SourceSpec, mode: Literal["stat", "content"] = "stat") -> list[list[Any]]:
    """Per file of ``source`` (a file, a series folder or a list of files): ``[path, size, mtime_ns]``
    (``mode="stat"``) or ``[size, blake2b]`` (``mode="content"``, independent of where it lives).

    Raises :class:`DataError` naming the path when it does not exist or holds no file.
    """
    files = _list_source_files(source)
    if not files:
        raise DataError(f"{source} holds no file to read (an empty series folder?)")
    out: list[list[Any]] = []
    for path in files:
        try:
            stat = path.stat()
        except OSError as exc:
            raise DataError(f"{path} cannot be read ({exc.strerror or exc}); check the manifest path") from None
        if mode == "content":
            out.append([stat.st_size, _file_digest(path, 16)])
        else:
            out.append([str(path.resolve()), stat.st_size, stat.st_mtime_ns])
    return out


def _size_of(path: Path) -> tuple[int, int]:
    if path.is_file():
        return path.stat().st_size, 1
    if path.is_dir():
        total = count = 0
        for child in sorted(path.rglob("*")):
            if child.is_file():
                total += child.stat().st_size
                count += 1
        return total, count
    return -1, 0


def volume_files_fingerprint(paths: Iterable[str | os.PathLike], root: str | os.PathLike | None = None) -> str:
    """SHA-256 (16 hex digits) over the sorted ``(path relative to root, bytes, files)`` of each volume."""
    root_path = Path(root) if root else None
    records = []
    for raw in paths:
        path = Path(raw)
        full = path if path.is_absolute() or root_path is None else root_path / path
        label = str(path)
        if root_path is not None and path.is_absolute():
            try:
                label = str(path.relative_to(root_path))
            except ValueError:
                label = str(path)
        size, count = _size_of(full)
        records.append(f"{label}\t{size}\t{count}")
    digest = hashlib.sha256("\n".join(sorted(records)).encode("utf-8")).hexdigest()
    return digest[:16]


def case_records_fingerprint(items: Iterable[Sequence[Any]]) -> str:
    """A short stable hash (16 hex digits) of per-case tuples such as ``(case_id, label, patient, key)``,
    whatever their order."""
    digest = hashlib.blake2b(digest_size=8)
    for text in sorted("|".join(str(v) for v in item) for item in items):
        digest.update(text.encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()


def text_fingerprint(*parts: object) -> str:
    """A short stable hash (16 hex digits) of the parts' text."""
    digest = hashlib.blake2b(digest_size=8)
    for part in parts:
        digest.update(str(part).encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()


def file_fingerprint(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Content hash of a file (16 hex digits); ``"missing"`` when it does not exist."""
    path = Path(path)
    if not path.is_file():
        return "missing"
    return _file_digest(path, 8, chunk)
