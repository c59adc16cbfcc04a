"""Atomic file writes: a temporary file in the same folder, flushed, then ``os.replace``.

A run killed in the middle of a write leaves the previous file (or none), never a half file that a
later run would trust. Used for cache entries, checkpoints, manifests and results.

A full disk (``ENOSPC``) or quota (``EDQUOT``) during the write, the flush or the ``fsync`` removes
the temporary file and raises :class:`medssl.errors.DiskFullError` naming the file and its folder;
the file being replaced stays as it was.

Example:
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_write(folder / "results.csv", "w") as f:
    ...     _ = f.write("a,b\\n1,2\\n")
    >>> (folder / "results.csv").read_text()
    'a,b\\n1,2\\n'
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

from medssl.errors import DiskFullError, is_disk_full


def _default_mode() -> int:
    """The mode ``open()`` would give a new file (0666 less the umask); ``mkstemp`` gives 0600."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def _disk_full_named(path: Path, what: str | None) -> Iterator[None]:
    """Turn a full-disk ``OSError`` inside the block into :class:`DiskFullError` naming ``path``."""
    try:
        yield
    except DiskFullError:
        raise
    except BaseException as exc:
        if is_disk_full(exc):
            raise DiskFullError(path, what or "a file") from exc
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", *, what: str | None = None,
                 **open_kwargs: Any) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success move it over ``path`` in one step.

    On an exception the temporary file is removed and ``path`` is left untouched; a full disk
    raises :class:`DiskFullError` (``what`` says what the file is, for its message).
    """
    path = Path(path)
    with _disk_full_named(path, what):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with _disk_full_named(path, what):
            with os.fdopen(fd, mode, **open_kwargs) as handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp_name, _default_mode())
            os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "", *, what: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for libraries that write by file name.

    ``suffix`` keeps the extension a writer looks at (``.nii.gz``, ``.parquet``). The temporary file
    replaces ``path`` only when the block finishes without an exception; a full disk raises
    :class:`DiskFullError` naming ``path``.
    """
    path = Path(path)
    with _disk_full_named(path, what):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
        os.close(fd)
    try:
        with _disk_full_named(path, what):
            yield Path(tmp_name)
            os.chmod(tmp_name, _default_mode())
            os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def atomic_write_text(path: str | os.PathLike, text: str, *, what: str | None = None) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_write(path, "w", encoding="utf-8", what=what) as handle:
        handle.write(text)


def atomic_torch_save(obj: Any, path: str | os.PathLike, *, what: str | None = None) -> None:
    """``torch.save`` that never leaves a truncated checkpoint behind."""
    import torch

    with atomic_write(path, "wb", what=what) as handle:
        torch.save(obj, handle)
