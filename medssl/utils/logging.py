"""Logging set-up for the command line; library modules only call ``logging.getLogger(__name__)``."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any


class _CurrentStderrHandler(logging.StreamHandler):
    """A handler that writes each record to ``sys.stderr`` as it is *then*, not as it was when the
    handler was made: a notebook cell, a test's captured stderr or ``contextlib.redirect_stderr``
    replaces the stream, and the old one may be closed by the time the next record comes."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:  # StreamHandler.__init__ assigns it; the property wins
        pass


def configure_logging(level: str | int | None = None, log_file: str | os.PathLike | None = None) -> None:
    """Send medssl's log records to stderr (and ``log_file`` when given), once per process."""
    level = level or os.environ.get("MEDSSL_LOG_LEVEL", "INFO")
    root = logging.getLogger("medssl")
    root.setLevel(level)
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    if not any(getattr(h, "_medssl", False) and not isinstance(h, logging.FileHandler) for h in root.handlers):
        handler = _CurrentStderrHandler()
        handler.setFormatter(formatter)
        handler._medssl = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    if log_file is not None:
        file_handler = logging.FileHandler(log_file, encoding="utf-8")
        file_handler.setFormatter(formatter)
        file_handler._medssl = True  # type: ignore[attr-defined]
        root.addHandler(file_handler)


def progress_enabled() -> bool:
    """Progress bars are on unless ``MEDSSL_PROGRESS=0`` (CI logs) is set."""
    return os.environ.get("MEDSSL_PROGRESS", "1") not in {"0", "false", "no"}


#: Seconds between two refreshes of a progress bar whose stream is not a terminal (a log file, a
#: CI console): tqdm's default of 0.1 s writes every refresh into the file, thousands of lines a run.
NON_TERMINAL_REFRESH_S = 30.0


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def progress_options(enabled: bool = True, stream: Any = None) -> dict[str, Any]:
    """Keyword arguments for ``tqdm``: off when ``enabled`` is False or ``MEDSSL_PROGRESS=0``; on a
    stream that is not a terminal, at most one refresh every :data:`NON_TERMINAL_REFRESH_S` seconds
    (``mininterval`` and ``maxinterval``), so a log file receives a bounded number of bar lines.

    Example:
        >>> import io
        >>> progress_options(stream=io.StringIO())["mininterval"]
        30.0
    """
    stream = sys.stderr if stream is None else stream
    options: dict[str, Any] = {"disable": not (enabled and progress_enabled()), "file": stream}
    if not _is_terminal(stream):
        options.update(mininterval=NON_TERMINAL_REFRESH_S, maxinterval=NON_TERMINAL_REFRESH_S,
                       dynamic_ncols=False)
    return options


def progress_bar(iterable: Any = None, *, enabled: bool = True, stream: Any = None, **kwargs: Any) -> Any:
    """A ``tqdm`` bar with :func:`progress_options` (``kwargs`` go to tqdm: ``total``, ``desc``, ``unit``...)."""
    from tqdm.auto import tqdm

    options = progress_options(enabled, stream)
    if "dynamic_ncols" in kwargs and "mininterval" in options:
        kwargs.pop("dynamic_ncols")
    return tqdm(iterable, **{**options, **kwargs})


def show_loss(bar: Any, loss: float) -> None:
    """Put ``loss`` on ``bar`` without forcing a refresh: ``set_postfix`` refreshes at every call by
    default, past ``mininterval``, so a bar into a log file wrote a line per training step."""
    bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
