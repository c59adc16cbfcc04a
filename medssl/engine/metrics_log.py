"""The run's metrics: one CSV row per logging step (``metrics.csv``) and TensorBoard scalars.

The CSV is appended row by row, each row written in one call and flushed, so a killed run leaves
only complete rows that pandas reads. The columns are fixed by the first row (``step`` first);
later values for unknown columns are dropped with a debug message, missing ones stay empty. On
resume, :meth:`MetricsLog.open` keeps only the rows up to the checkpoint's step (the steps after it
are computed again) and TensorBoard purges the events after it (``purge_step``).

Example:
    >>> import tempfile, pathlib, pandas
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> log = MetricsLog.open(folder, tensorboard=False)
    >>> log.write({"step": 10, "loss": 1.5, "lr": 0.1})
    >>> log.write({"step": 20, "loss": 1.2, "lr": 0.05})
    >>> log.close()
    >>> pandas.read_csv(folder / "metrics.csv")["loss"].tolist()
    [1.5, 1.2]
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import math
import os
from pathlib import Path
from typing import Any, Iterator, Mapping

from medssl.errors import DiskFullError, is_disk_full
from medssl.utils.atomic import atomic_write_text

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.csv"


def _format(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    return str(value)


def truncate_metrics(path: Path, last_step: int) -> list[str] | None:
    """Rewrite ``path`` atomically keeping the header and the complete rows with ``step <= last_step``.

    Returns the header (``None`` when the file does not exist or is empty).
    """
    if not path.is_file():
        return None
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        return None
    header, kept = rows[0], [rows[0]]
    for row in rows[1:]:
        if len(row) != len(header):
            continue  # a row cut short by a crash
        try:
            if int(float(row[0])) <= last_step:
                kept.append(row)
        except ValueError:
            continue
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(kept)
    atomic_write_text(path, buffer.getvalue())
    return header


class MetricsLog:
    """Appends metric rows to ``run_dir/metrics.csv`` and, optionally, TensorBoard events."""

    def __init__(self, path: Path, header: list[str] | None, tensorboard_writer: Any = None) -> None:
        self.path = path
        self.header = header
        self._writer = tensorboard_writer
        self._handle = open(path, "a", newline="", encoding="utf-8")

    @classmethod
    def open(
        cls,
        run_dir: str | os.PathLike,
        tensorboard: bool = True,
        resume_step: int | None = None,
    ) -> "MetricsLog":
        """Open the log of ``run_dir``; with ``resume_step``, continue an interrupted run from there
        (else start afresh, replacing an old file)."""
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / METRICS_FILE
        header = None
        if resume_step is not None:
            header = truncate_metrics(path, resume_step)
        elif path.exists():
            path.unlink()
        writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=resume_step)
            except ImportError as exc:  # tensorboard is a dependency, but keep the run alive without it
                logger.warning("TensorBoard logging disabled: %s", exc)
        return cls(path, header, writer)

    def write(self, row: Mapping[str, Any]) -> None:
        """Append one row (a mapping with at least ``step``) and flush it."""
        if "step" not in row:
            raise ValueError("a metrics row needs a 'step'")
        header_line = None
        if self.header is None:
            self.header = ["step"] + [k for k in row if k != "step"]
            header_line = ",".join(self.header) + "\n"
        unknown = [k for k in row if k not in self.header]
        if unknown:
            logger.debug("metrics %s not in the CSV header; kept in TensorBoard only", unknown)
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow([_format(row.get(k)) for k in self.header])
        with self._disk_full_named():
            if header_line is not None:
                self._handle.write(header_line)
            self._handle.write(buffer.getvalue())
            self._handle.flush()
        if self._writer is not None:
            step = int(row["step"])
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._writer.add_scalar(key, value, step)

    @contextlib.contextmanager
    def _disk_full_named(self) -> Iterator[None]:
        """A full disk while appending is a :class:`~medssl.errors.DiskFullError` naming the file; the
        rows of the steps up to the last checkpoint are on disk and a resume recomputes the others."""
        try:
            yield
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            raise DiskFullError(self.path, "the metrics log",
                                hint="free space on that disk and resume the run (--resume): the rows after "
                                     "its last checkpoint are computed again") from exc

    def close(self) -> None:
        if not self._handle.closed:
            with self._disk_full_named():
                self._handle.close()
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None

    def __enter__(self) -> "MetricsLog":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
