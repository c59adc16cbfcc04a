"""Logging set-up for the command line; library modules only call ``logging.getLogger(__name__)``."""

from __future__ import annotations

import logging
import os
import sys


def configure_logging(level: str | int | None = None, log_file: str | os.PathLike | None = None) -> None:
    """Send medssl's log records to stderr (and ``log_file`` when given), once per process."""
    level = level or os.environ.get("MEDSSL_LOG_LEVEL", "INFO")
    root = logging.getLogger("medssl")
    root.setLevel(level)
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    if not any(getattr(h, "_medssl", False) and not isinstance(h, logging.FileHandler) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
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
