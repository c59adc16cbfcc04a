"""Read the headers of many files at once, in parallel processes, without decoding any pixel.

The manifest's engine room: :func:`list_files_with_stats` walks a folder, :func:`scan_files` reads
every file's header in worker processes (:mod:`concurrent.futures`) and returns one
:class:`FileRecord` per file: a DICOM header (:func:`medssl.io.dicom_header.read_header`), a NIfTI
summary (:func:`medssl.io.nifti.nifti_summary`), or why the file was skipped or failed. A bad file
never stops the scan.

De-identification boundary: a record leaves its worker with pseudonymous keys only; the raw
SeriesInstanceUID is blanked and the path made relative to the root. Export folders and file names
often carry patient names, so no location leaves a worker inside text either: a reason or a log
record written while a file is read names it ``<file>`` (its folder ``<folder>``, its JSON sidecar
``<sidecar>``, the scanned folder ``<root>``; the redaction itself is :mod:`medssl.io.redaction`,
whose names this module re-exports). Log records about a NIfTI file name its manifest
``volume_id`` instead.

Gap filled here: pydicom and nibabel read one file at a time; the process pool, chunking and
per-series reuse of decoded acquisition fields are what make thousands of headers per second.

Example:
    >>> import numpy as np, tempfile
    >>> from medssl.io import Volume
    >>> from medssl.io.dicom_write import write_dicom_series
    >>> root = tempfile.mkdtemp()
    >>> _ = write_dicom_series(Volume(np.zeros((1, 4, 4, 2), np.float32), np.eye(4), "CT"), root)
    >>> stats = list_files_with_stats(root)
    >>> records = scan_files(root, list(stats), b"salt", workers=0, progress=False)
    >>> sorted((r.rel, r.kind, r.header.series_uid) for r in records.values())
    [('IM000001.dcm', 'dicom', None), ('IM000002.dcm', 'dicom', None)]
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import logging
import multiprocessing
import os
import threading
from typing import Iterator, Sequence

from medssl.errors import VolumeReadError
from medssl.io import deid
from medssl.io.dicom_geometry import PlaneGeometry
from medssl.io.dicom_header import DicomHeader, read_header
from medssl.io.dicom_raw import EmptyFileError, NotDicomError
from medssl.io.limits import ReadLimits, as_limits
from medssl.io.nifti import is_nifti_path, nifti_summary
from medssl.io.redaction import (
    REDACTED_LOGGERS,
    LocationRedactor,
    filtered_io_loggers,
    redact_locations,
    redacted_logs,
    rewrite_record,
)
from medssl.utils.logging import progress_options

logger = logging.getLogger(__name__)

#: ``REDACTED_LOGGERS``, ``LocationRedactor``, ``redact_locations`` and ``redacted_logs``
#: (:mod:`medssl.io.redaction`) are re-exported for existing callers.
__all__ = ["AUTO_POOL_MIN_FILES", "REDACTED_LOGGERS", "FileRecord", "LocationRedactor", "default_workers",
           "list_files_with_stats", "nifti_volume_id", "redact_locations", "redacted_logs", "scan_file", "scan_files"]

#: Below this many files, ``workers=None`` reads in the calling process (a pool costs more).
AUTO_POOL_MIN_FILES = 200

def nifti_volume_id(rel: str, salt: bytes) -> str:
    """The manifest ``volume_id`` of the NIfTI file ``rel`` (POSIX path relative to the root)."""
    return deid.pseudonymize("nifti:" + rel, "volume", salt)


def _posix(rel: str) -> str:
    return rel.replace(os.sep, "/") if os.sep != "/" else rel


def _file_locations(root: str, rel: str) -> dict[str, str]:
    """Tokens of one scanned file's locations: ``<file>``, ``<folder>``, ``<sidecar>``, ``<root>``."""
    path = os.path.join(root, rel)
    locations = {path: "<file>", rel: "<file>", _posix(rel): "<file>"}
    if is_nifti_path(rel):
        name = os.path.basename(rel)
        stem = name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else name[: -len(".nii")]
        sidecar = os.path.join(os.path.dirname(path), stem + ".json")
        locations[sidecar] = "<sidecar>"
        locations[os.path.join(os.path.dirname(rel), stem + ".json")] = "<sidecar>"
    folder = os.path.dirname(rel)
    if folder:
        locations[os.path.dirname(path)] = "<folder>"
        locations[folder] = "<folder>"
    locations[os.path.abspath(root)] = "<root>"
    locations[root] = "<root>"
    return locations


@dataclasses.dataclass(slots=True)
class FileRecord:
    """What a worker returns for one file: a DICOM header, a NIfTI summary, or a reason.

    ``kind`` is ``"dicom"``, ``"nifti"``, ``"skipped"`` (not DICOM or NIfTI) or ``"error"``.
    """

    rel: str
    kind: str
    header: DicomHeader | None = None
    nifti: dict | None = None
    reason: str | None = None


class _FileBeingRead(threading.local):
    """The file this thread is reading (for :class:`_CurrentFileFilter`) and whether the filter is on."""

    file: tuple[str, str, bytes] | None = None
    installed: bool = False


_reading = _FileBeingRead()


class _CurrentFileFilter(logging.Filter):
    """Rewrites records emitted while a thread reads a file so that they name no location of it
    (tokens of :func:`_file_locations`; a NIfTI file by its ``volume_id``). The tokens are made only
    when a record arrives, so reading costs nothing extra."""

    def filter(self, record: logging.LogRecord) -> bool:
        current = _reading.file
        if current is not None:
            rewrite_record(record, LocationRedactor(_log_locations(*current)))
        return True


@contextlib.contextmanager
def _file_log_redaction() -> Iterator[None]:
    """Install :class:`_CurrentFileFilter` on the io loggers for the block (once: nested blocks
    reuse the outer one, so a scan installs it once per chunk of files, not per file)."""
    if _reading.installed:
        yield
        return
    with filtered_io_loggers(_CurrentFileFilter()):
        _reading.installed = True
        try:
            yield
        finally:
            _reading.installed, _reading.file = False, None


def _log_locations(root: str, rel: str, salt: bytes) -> dict[str, str]:
    locations = _file_locations(root, rel)
    if not is_nifti_path(rel):
        return locations
    volume = nifti_volume_id(_posix(rel), salt)
    return {k: (f"<{volume}>" if v == "<file>" else v.replace(">", f" of {volume}>")) for k, v in locations.items()}


def scan_file(
    root: str, rel: str, salt: bytes, seen_series: set[str] | None = None, limits: ReadLimits | None = None
) -> FileRecord:
    """One file's record. ``seen_series``: series whose acquisition fields this worker already
    decoded (a manifest row needs them once per series); updated in place.

    Reasons name the file ``<file>`` (never its path); log records written while it is read name a
    NIfTI file by its ``volume_id`` and any other file ``<file>``.
    """
    with _file_log_redaction():
        _reading.file = (root, rel, salt)
        try:
            record = _read_record(root, rel, salt, seen_series, limits)
        finally:
            _reading.file = None
    if record.reason:
        record.reason = LocationRedactor(_file_locations(root, rel))(record.reason)
    if record.header is not None and record.header.reason:
        record.header.reason = LocationRedactor(_file_locations(root, rel))(record.header.reason)
    return record


#: Names of files that should hold an image: an empty one is an ``error`` (an interrupted copy);
#: any other empty file is ``skipped``. DICOM files often have no extension at all.
_IMAGE_SUFFIXES = (".dcm", ".dicom", ".dic", ".ima", ".img", ".nii", ".nii.gz")


def _looks_like_image_name(rel: str) -> bool:
    name = os.path.basename(rel).lower()
    return name.endswith(_IMAGE_SUFFIXES) or "." not in name.lstrip(".")


def _read_record(root: str, rel: str, salt: bytes, seen_series: set[str] | None, limits: ReadLimits | None = None) -> FileRecord:
    path = os.path.join(root, rel)
    if is_nifti_path(rel):
        try:
            return FileRecord(rel, "nifti", nifti=nifti_summary(path, limits))
        except VolumeReadError as exc:
            return FileRecord(rel, "error", reason=exc.reason)
        except Exception as exc:  # a scan never stops on one file
            return FileRecord(rel, "error", reason=f"unexpected {type(exc).__name__}: {exc}")
    try:
        header = read_header(path, salt, known_series=seen_series or (), limits=limits)
    except EmptyFileError:
        if _looks_like_image_name(rel):
            return FileRecord(rel, "error", reason="empty file (0 bytes): an interrupted copy?")
        return FileRecord(rel, "skipped", reason="empty file (0 bytes), not a DICOM or NIfTI file")
    except NotDicomError:
        return FileRecord(rel, "skipped", reason="not a DICOM or NIfTI file")
    except VolumeReadError as exc:
        return FileRecord(rel, "error", reason=exc.reason)
    except Exception as exc:  # a scan never stops on one file
        return FileRecord(rel, "error", reason=f"unexpected {type(exc).__name__}: {exc}")
    if seen_series is not None and header.series_key is not None:
        seen_series.add(header.series_key)
    # Only pseudonyms leave the worker; paths become relative to the root (the header is ours).
    header.path, header.series_uid = rel, None
    return FileRecord(rel, "dicom", header=header)


_SHARED_FIELDS = ("sop_class", "transfer_syntax", "modality", "patient_key", "study_key", "series_key", "photometric")


def _compact(record: FileRecord, shared: dict) -> FileRecord:
    """Share the values that repeat across the files of a series (keys, class, orientation,
    spacing) between records, so a scan holds about 1 KB per file rather than 3."""
    header = record.header
    if header is None:
        return record
    for name in _SHARED_FIELDS:
        value = getattr(header, name)
        if isinstance(value, str):
            setattr(header, name, shared.setdefault(value, value))
    frames = []
    for plane in header.frames:
        key = (plane.orientation, plane.pixel_spacing, plane.rows, plane.columns)
        template = shared.setdefault(key, plane)
        if template.position is None and plane.position is None:
            frames.append(template)
        else:
            frames.append(PlaneGeometry(plane.position, template.orientation, template.pixel_spacing, plane.rows, plane.columns))
    header.frames = frames
    return record


def _scan_chunk(root: str, rels: Sequence[str], salt: bytes, limits: ReadLimits | None = None) -> list[FileRecord]:
    seen: set[str] = set()
    with _file_log_redaction():
        return [scan_file(root, rel, salt, seen, limits) for rel in rels]


def _pool_context():
    """``fork`` where available: workers run only pydicom/nibabel header code, and unlike ``spawn``
    or ``forkserver`` it does not re-import the caller's ``__main__`` (a script without a
    ``if __name__ == "__main__"`` guard would otherwise fail)."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def default_workers(n_files: int) -> int:
    """Every available core for :data:`AUTO_POOL_MIN_FILES` files or more, else 1 (no pool)."""
    if n_files < AUTO_POOL_MIN_FILES:
        return 1
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(available, 8)


def scan_files(
    root: str,
    rels: Sequence[str],
    salt: bytes,
    *,
    workers: int | None = None,
    progress: bool = True,
    limits: ReadLimits | None = None,
) -> dict[str, FileRecord]:
    """Records of ``rels`` (paths relative to ``root``), read by ``workers`` processes.

    ``limits``: the size guard (:mod:`medssl.io.limits`), resolved here so that workers apply the
    same numbers.

    ``workers=None`` picks :func:`default_workers`; ``0`` or ``1`` reads in the calling process.
    Files go to workers in chunks of up to 64; a tqdm bar counts files (off when ``progress`` is
    false or ``MEDSSL_PROGRESS=0``).
    """
    from tqdm.auto import tqdm

    records: dict[str, FileRecord] = {}
    if not rels:
        return records
    limits = as_limits(limits)
    workers = default_workers(len(rels)) if workers is None else workers
    bar = tqdm(total=len(rels), unit="file", desc="manifest", **progress_options(progress))
    try:
        if workers <= 1:
            seen: set[str] = set()
            shared: dict = {}
            with _file_log_redaction():
                for rel in rels:
                    records[rel] = _compact(scan_file(root, rel, salt, seen, limits), shared)
                    bar.update(1)
            return records
        chunk = max(1, min(64, len(rels) // (workers * 4) or 1))
        with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=_pool_context()) as pool:
            futures = {
                pool.submit(_scan_chunk, root, rels[i : i + chunk], salt, limits): rels[i : i + chunk]
                for i in range(0, len(rels), chunk)
            }
            shared: dict = {}
            for future in concurrent.futures.as_completed(futures):
                try:
                    done = future.result()
                except Exception as exc:  # a worker died (out of memory, a crashing library): redo here
                    logger.warning("a header worker failed (%s); reading its %d files in this process", exc, len(futures[future]))
                    done = _scan_chunk(root, futures[future], salt, limits)
                for record in done:
                    records[record.rel] = _compact(record, shared)
                bar.update(len(done))
    finally:
        bar.close()
    return records


def list_files_with_stats(root: str | os.PathLike, unlisted: dict[str, str] | None = None) -> dict[str, str]:
    """``relative path -> "size:mtime_ns"`` for every regular file under ``root``, sorted
    (``os.scandir``; folder symlinks are not followed, so a link loop cannot trap the scan).

    A folder that cannot be listed (permissions, a vanished network share) is left out with a
    warning that does not name it (folder names may be patient names); pass a dict as ``unlisted``
    to receive ``relative folder -> reason`` for each (the manifest records them as error rows).
    """
    stats: dict[str, str] = {}
    pending = [("", os.fspath(root))]
    while pending:
        rel_folder, folder = pending.pop()
        try:
            with os.scandir(folder) as entries:
                listing = list(entries)
        except OSError as exc:
            reason = str(exc.strerror or type(exc).__name__)
            logger.warning("cannot list a folder%s (%s); its files are left out", " under the root" if rel_folder else "", reason)
            if unlisted is not None:
                unlisted[rel_folder or "."] = reason
            continue
        for entry in listing:
            rel = f"{rel_folder}{os.sep}{entry.name}" if rel_folder else entry.name
            try:
                if entry.is_dir(follow_symlinks=False):
                    pending.append((rel, entry.path))
                elif entry.is_file():
                    info = entry.stat()
                    stats[rel] = f"{info.st_size}:{info.st_mtime_ns}"
            except OSError:
                continue
    return dict(sorted(stats.items()))
