"""Errors that medssl raises for bad input, each naming the file (or setting), the reason and a fix.

Every error derives from :class:`MedsslError`, so a caller can catch the whole family at once.

Example:
    >>> from medssl.errors import VolumeReadError
    >>> err = VolumeReadError("/data/ct/001.dcm", "no pixel data", hint="check it is an image object")
    >>> print(err)
    cannot read /data/ct/001.dcm: no pixel data (check it is an image object)
"""

from __future__ import annotations

import os


class MedsslError(Exception):
    """Base class of every error medssl raises on purpose."""


class VolumeReadError(MedsslError):
    """A file or series that cannot be turned into a :class:`medssl.io.Volume`.

    Attributes:
        path: the file or folder that failed.
        reason: why, in plain words (for example the missing codec).
        hint: what the user can do about it, or ``None``.
    """

    def __init__(self, path: str | os.PathLike, reason: str, hint: str | None = None):
        self.path = str(path)
        self.reason = reason
        self.hint = hint
        message = f"cannot read {self.path}: {reason}"
        if hint:
            message += f" ({hint})"
        super().__init__(message)

    def __reduce__(self):  # picklable across worker processes
        return (type(self), (self.path, self.reason, self.hint))


class NotAnImageError(VolumeReadError):
    """A readable DICOM object that holds no image (SR, RTSTRUCT, presentation state...)."""


class ConfigError(MedsslError):
    """A configuration file or override that is invalid; the message names the key and the file."""


class DataError(MedsslError):
    """A manifest, cache or dataset that is inconsistent (missing column, empty split, ...)."""


class SplitLeakageError(DataError):
    """A split that puts the same patient on two sides (train and test, say)."""


class CheckpointError(MedsslError):
    """A checkpoint that is missing, truncated or does not match the model it is loaded into."""


class TrainingDivergedError(MedsslError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class RunError(MedsslError):
    """A run folder that cannot be used: not writable, or held by another live run (its lock)."""


class DiskFullError(MedsslError):
    """A write failed because the disk (or the user's quota) is full; names the file and its folder.

    The file that was being replaced is left as it was (atomic writes), so nothing already written is
    lost; free space on that disk, or point the run at another folder, and run again (or resume).

    Attributes:
        path: the file whose write failed.
        what: what was being written, in plain words (``"a checkpoint"``, ``"the preprocessing cache"``).
    """

    def __init__(self, path: str | os.PathLike, what: str = "a file", hint: str | None = None,
                 folder: str | os.PathLike | None = None):
        self.path = str(path)
        self.what = what
        self.hint = hint
        self.folder = str(folder) if folder is not None else (os.path.dirname(self.path) or ".")
        message = f"disk full: no space left in folder {self.folder} to write {what}"
        if self.path != self.folder:
            message += f" ({self.path})"
        message += f"; {hint}" if hint else "; the previous file is kept: free space on that disk and run again"
        super().__init__(message)

    def __reduce__(self):  # picklable across worker processes
        return (type(self), (self.path, self.what, self.hint, self.folder))


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) is an ``OSError`` for a full disk/quota."""
    import errno

    codes = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in codes:
            return True
        current = current.__cause__ or current.__context__
    return False
