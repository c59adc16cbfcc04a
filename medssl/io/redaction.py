"""Locations out of text: paths replaced by tokens in messages, reasons and log records.

PACS exports put patient names in folder and file names (``CT/ROSSI^AMARA_46845436/...``), and the
exception texts of pydicom, nibabel and the OS embed the file's path. :func:`redact_locations`
replaces given locations in a text by tokens (``<file>``, ``<folder>``, ``files[2]``...);
:func:`redacted_logs` does the same to every record of the io loggers (``medssl.io.*``, pydicom,
nibabel) within a block. The manifest scan (:mod:`medssl.io.scan`, :mod:`medssl.data.manifest`)
uses both so that no location leaves a worker or reaches a log.

Example:
    >>> import logging
    >>> with redacted_logs({"/data/SMITH^JO/1.dcm": "<file>"}):
    ...     record = logging.LogRecord("medssl.io.dicom", logging.WARNING, "", 0, "bad %s", ("/data/SMITH^JO/1.dcm",), None)
    ...     _ = logging.getLogger("medssl.io.dicom").filter(record)
    >>> record.getMessage()
    'bad <file>'
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from typing import Iterator, Mapping

__all__ = ["REDACTED_LOGGERS", "LocationRedactor", "filtered_io_loggers", "redact_locations", "redacted_logs",
           "rewrite_record"]

#: Loggers whose records :func:`redacted_logs` rewrites (plus every ``medssl.io.*`` logger).
REDACTED_LOGGERS: tuple[str, ...] = ("medssl.io", "pydicom", "nibabel", "nibabel.global")

#: Locations shorter than this are not redacted (``"."``, one-letter folders: no name fits, and
#: replacing them would garble ordinary words of a message).
_MIN_LOCATION_LENGTH = 3


def _variants(location: str) -> set[str]:
    """The spellings a path takes in messages: as given, with either separator (a manifest built on
    one system, read on another), and as ``repr`` writes Windows separators (doubled backslashes)."""
    forms = {location, location.replace("\\", "/"), location.replace("/", "\\")}
    forms |= {f.replace("\\", "\\\\") for f in list(forms) if "\\" in f}
    return {f for f in forms if len(f) >= _MIN_LOCATION_LENGTH and f not in (".", "..")}


class LocationRedactor:
    """Replaces given locations (paths) in text by tokens; see :func:`redact_locations`.

    The regular expression is compiled on first use: a scan makes one redactor per file and most
    files never need it (no reason, no log record).
    """

    __slots__ = ("locations", "_pattern", "_tokens")

    def __init__(self, locations: Mapping[str, str]):
        self.locations = dict(locations)
        self._pattern: re.Pattern | None = None
        self._tokens: dict[str, str] | None = None

    def _compile(self) -> None:
        tokens: dict[str, str] = {}
        for location, token in sorted(self.locations.items(), key=lambda item: -len(os.fspath(item[0]))):
            for form in _variants(os.fspath(location)):
                tokens.setdefault(form, token)
        self._tokens = tokens
        if tokens:
            alternatives = "|".join(re.escape(form) for form in sorted(tokens, key=len, reverse=True))
            # A location counts where it stands as a whole path: not inside a longer name (``ct`` in
            # ``object``) nor a token already put in (``<path>``, ``files[1]``); followed by a
            # separator (a folder of a longer path) or a full stop is fine.
            self._pattern = re.compile(rf"(?<![\w^\-<])(?:{alternatives})(?![\w^\-\[>]|\.\w)")

    def __call__(self, text: str | None) -> str | None:
        if not text or not self.locations:
            return text
        if self._tokens is None:
            self._compile()
        if self._pattern is None:
            return text
        tokens = self._tokens
        assert tokens is not None
        return self._pattern.sub(lambda match: tokens[match.group(0)], text)


def redact_locations(text: str | None, locations: Mapping[str, str]) -> str | None:
    """``text`` with every location in ``locations`` (a path, absolute or relative, in any of its
    spellings: either separator, ``repr``-escaped) replaced by its token, longest first.

    Gap filled here: exception texts of pydicom, nibabel and the OS embed the file's path, and PACS
    exports put patient names in folder and file names. Only whole paths are replaced (never a
    single folder name inside other words); locations shorter than 3 characters are left alone.

    Example:
        >>> redact_locations("cannot open '/data/SMITH^JO/ct/1.dcm': denied", {"/data/SMITH^JO/ct/1.dcm": "<file>"})
        "cannot open '<file>': denied"
    """
    return LocationRedactor(locations)(text)


def rewrite_record(record: logging.LogRecord, redactor: LocationRedactor) -> None:
    """Rewrite ``record``'s message with ``redactor`` (a broken format string is left to the handler)."""
    try:
        message = record.getMessage()
    except Exception:  # a broken format string: leave it to the handler to report
        return
    redacted = redactor(message)
    if redacted != message:
        record.msg, record.args = redacted, None


class _RedactingFilter(logging.Filter):
    """Rewrites a record's message with a :class:`LocationRedactor` (records are never dropped)."""

    def __init__(self, redactor: LocationRedactor):
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        rewrite_record(record, self.redactor)
        return True


_logger_cache: tuple[int, list[logging.Logger]] = (-1, [])


def _redacted_loggers() -> list[logging.Logger]:
    """:data:`REDACTED_LOGGERS` and every ``medssl.io.*`` logger (cached until a logger is added)."""
    global _logger_cache
    known = logging.root.manager.loggerDict
    if _logger_cache[0] != len(known):
        names = set(REDACTED_LOGGERS) | {n for n in list(known) if n.startswith("medssl.io.")}
        _logger_cache = (len(known), [logging.getLogger(n) for n in sorted(names)])
    return _logger_cache[1]


@contextlib.contextmanager
def filtered_io_loggers(log_filter: logging.Filter) -> Iterator[None]:
    """``log_filter`` on each io logger (:data:`REDACTED_LOGGERS`, every ``medssl.io.*``) for the block."""
    loggers = list(_redacted_loggers())
    for target in loggers:
        target.addFilter(log_filter)
    try:
        yield
    finally:
        for target in loggers:
            target.removeFilter(log_filter)


@contextlib.contextmanager
def redacted_logs(locations: Mapping[str, str] | LocationRedactor) -> Iterator[None]:
    """Within the block, records of the io loggers (``medssl.io.*``, pydicom, nibabel) name no
    location of ``locations``: each is replaced by its token (:func:`redact_locations`).

    A :class:`logging.Filter` on each of those loggers (a filter on a parent logger does not see
    its children's records); harmless to records that hold none of the locations.
    """
    redactor = locations if isinstance(locations, LocationRedactor) else LocationRedactor(locations)
    if not redactor.locations:
        yield
        return
    with filtered_io_loggers(_RedactingFilter(redactor)):
        yield
