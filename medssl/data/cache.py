"""Preprocessed volumes on disk, computed once per volume and configuration, memory-mapped by workers.

Gap filled: MONAI's ``CacheDataset`` holds every preprocessed volume in each process's RAM (memory
grows with the cohort) and its ``PersistentDataset`` pickles whole tensors (every read unpickles
and copies the volume). Here an entry is a plain ``.npy`` array that loader workers memory-map
read-only: the pages are shared through the OS page cache, a view copies only the region it reads,
and a process holds nothing per volume beyond an open map (an LRU of ``max_open`` of them).

**Key.** ``blake2b`` of: the cache format and preprocessing code versions, the
:class:`~medssl.config.PreprocessConfig`, the modality override, the series UID, and the
*fingerprint* of every source file (image and mask): with ``fingerprint="stat"`` (default) its
absolute path, size and modification time in nanoseconds, as ``make`` and ``rsync`` decide
staleness (cheap: a stat per file, no reading); with ``fingerprint="content"`` a ``blake2b`` of its
bytes (reads every file; survives moving or copying an archive). A changed file, a new file in a
series folder, or a changed setting gives a new key, so stale entries are never read (they stay
on disk until pruned).

**Layout.** ``cache_dir/<key[:2]>/<key>.image.npy`` (``(C, X, Y, Z)``, ``cache_dtype``),
``<key>.mask.npy`` (``(1, X, Y, Z)`` uint8, optional) and ``<key>.json``, the sidecar: geometry
(affine, spacing), modality, shapes, dtypes, byte sizes and a checksum of the data, the intensity
windows and crop box. No file name or patient identifier is stored.

**Safety.** Each array is written to a temporary file in the same folder, flushed, fsynced and
moved into place with ``os.replace``; the sidecar is written last, the same way, and is the commit
marker: an entry without its sidecar does not exist, so a write killed at any point is recomputed,
never read. An entry whose files disagree with the sidecar (truncated, wrong header, missing mask)
is reported with a warning, deleted and recomputed; ``verify="checksum"`` also hashes the data on
first open. Two processes computing the same entry serialise on a lock file (``fcntl.flock``); the
second finds the committed entry and reads it. Even without the lock, both would write the same
bytes (preprocessing is deterministic) and each ``os.replace`` is atomic.

**Precision.** ``cache_dtype="float16"`` (default) stores the [0, 1] image with an absolute
rounding error below 2.4e-4 (relative 2^-11, about 0.5 HU in a 2000 HU window), halving disk space
and page-cache traffic against float32: measured in ``benchmarks/data_throughput.py``.

Example:
    >>> import tempfile, numpy as np
    >>> from medssl.config import PreprocessConfig
    >>> from medssl.io.volume import Volume
    >>> from medssl.io.nifti import save_volume
    >>> folder = tempfile.mkdtemp()
    >>> _ = save_volume(Volume(np.zeros((1, 8, 8, 8), np.float32), np.eye(4), "CT"), f"{folder}/ct.nii.gz")
    >>> cache = PreprocessedCache(f"{folder}/cache", PreprocessConfig(target_spacing=None))
    >>> case = cache.get(f"{folder}/ct.nii.gz", modality="CT")
    >>> case.image.shape, case.image.dtype, case.modality
    ((1, 8, 8, 8), dtype('float16'), 'CT')
    >>> cache.get(f"{folder}/ct.nii.gz", modality="CT").key == case.key  # a hit
    True
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal

import numpy as np

from medssl.config import PreprocessConfig
from medssl.data.cache_requests import (
    CacheRequest,
    redacted_reason,
    request_from_row,
    request_locations,
    request_name,
    requests_from_entries,
)
from medssl.errors import DataError, DiskFullError, MedsslError, is_disk_full
from medssl.io.redaction import redacted_logs
from medssl.io.volume import Volume
from medssl.utils.atomic import atomic_write, atomic_write_text
from medssl.utils.provenance import SourceSpec, source_fingerprint

logger = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 1
#: Bump when :func:`medssl.data.preprocess.preprocess_volume` changes its output for the same input.
PREPROCESS_CODE_VERSION = 1

Loader = Callable[[SourceSpec, str | None], Volume]

#: ``CacheRequest``, ``request_from_row``, ``requests_from_entries``, ``request_name``, ``redacted_reason``
#: (:mod:`medssl.data.cache_requests`) and
#: ``source_fingerprint`` (:mod:`medssl.utils.provenance`) are re-exported for callers of this module.
__all__ = ["CachedCase", "CacheRequest", "PreprocessedCache", "cached_case", "redacted_reason", "request_from_row",
           "request_name", "requests_from_entries", "source_fingerprint"]


@dataclass(frozen=True)
class CachedCase:
    """One preprocessed volume: read-only memory maps and its geometry.

    ``image`` is ``(C, X, Y, Z)`` float16 or float32 in [0, 1]; ``mask`` is ``(1, X, Y, Z)`` uint8
    or None; ``affine`` maps voxel indices of these arrays to world millimetres (RAS+).
    """

    image: np.ndarray
    mask: np.ndarray | None
    affine: np.ndarray
    spacing: tuple[float, float, float]
    modality: str
    key: str
    meta: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.image.shape[1:])  # type: ignore[return-value]


def _default_loader(source: SourceSpec, series_uid: str | None) -> Volume:
    """:func:`medssl.io.load_volume`."""
    from medssl.io import load_volume

    return load_volume(source, series_uid=series_uid) if series_uid else load_volume(source)


def _data_checksum(array: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(array).view(np.uint8).reshape(-1), digest_size=16).hexdigest()


@contextlib.contextmanager
def _entry_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (POSIX ``flock``); a no-op where unavailable."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


class _CorruptEntry(Exception):
    pass


class PreprocessedCache:
    """Preprocessed volumes on disk, keyed by source fingerprint and configuration (module docstring).

    Args:
        cache_dir: the folder holding the entries (created when missing; may be shared by runs).
        cfg: the preprocessing configuration (part of every key).
        fingerprint: ``"stat"`` (path, size, mtime of every source file) or ``"content"``.
        verify: ``"size"`` checks the sidecar, the ``.npy`` headers and byte sizes on every open;
            ``"checksum"`` also hashes the data the first time a process opens an entry.
        max_open: how many cases a process keeps memory-mapped (least recently used are closed).
        loader: ``(source, series_uid) -> Volume``; :func:`medssl.io.load_volume` by default.
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike,
        cfg: PreprocessConfig | None = None,
        *,
        fingerprint: Literal["stat", "content"] = "stat",
        verify: Literal["size", "checksum"] = "size",
        max_open: int = 8,
        loader: Loader | None = None,
    ):
        if fingerprint not in ("stat", "content"):
            raise ValueError(f"fingerprint must be 'stat' or 'content', got {fingerprint!r}")
        if verify not in ("size", "checksum"):
            raise ValueError(f"verify must be 'size' or 'checksum', got {verify!r}")
        self.cache_dir = Path(cache_dir)
        self.cfg = cfg if cfg is not None else PreprocessConfig()
        self.fingerprint = fingerprint
        self.verify = verify
        self.max_open = max(1, int(max_open))
        self.loader = loader
        self._open: OrderedDict[str, CachedCase] = OrderedDict()
        self._config_json = json.dumps(self.cfg.model_dump(mode="json"), sort_keys=True)
        self.stats = {"hits": 0, "misses": 0, "recomputed": 0}

    def __getstate__(self) -> dict[str, Any]:  # workers re-open their own maps
        state = dict(self.__dict__)
        state["_open"] = OrderedDict()
        return state

    # ------------------------------------------------------------------ keys and paths
    def key(self, image_path: SourceSpec, mask_path: str | os.PathLike | None = None,
            series_uid: str | None = None, modality: str | None = None) -> str:
        """The entry key for these sources under this configuration (stats or reads the files)."""
        payload = {
            "format": CACHE_FORMAT_VERSION,
            "code": PREPROCESS_CODE_VERSION,
            "config": self._config_json,
            "image": source_fingerprint(image_path, self.fingerprint),
            "mask": None if mask_path is None else source_fingerprint(mask_path, self.fingerprint),
            "series_uid": series_uid,
            "modality": None if modality is None else str(modality).upper(),
        }
        text = json.dumps(payload, sort_keys=True, default=str)
        return hashlib.blake2b(text.encode("utf-8"), digest_size=20).hexdigest()

    def _paths(self, key: str) -> dict[str, Path]:
        folder = self.cache_dir / key[:2]
        return {
            "image": folder / f"{key}.image.npy",
            "mask": folder / f"{key}.mask.npy",
            "sidecar": folder / f"{key}.json",
            "lock": folder / f"{key}.lock",
        }

    # ------------------------------------------------------------------ public API
    def get(self, image_path: SourceSpec, mask_path: str | os.PathLike | None = None,
            series_uid: str | None = None, *, modality: str | None = None, label: str | None = None) -> CachedCase:
        """The preprocessed case for these sources: read from the cache, or computed and stored.

        ``modality`` overrides the loaded volume's (a NIfTI file carries none); ``label`` is how
        preprocessing's log records name the volume (its pseudonymous ``volume_id``). Raises
        :class:`medssl.errors.VolumeReadError` when the source cannot be read and
        :class:`DataError` when a path does not exist.
        """
        key = self.key(image_path, mask_path, series_uid, modality)
        case = self._open.get(key)
        if case is not None:
            self._open.move_to_end(key)
            self.stats["hits"] += 1
            return case
        case = self._open_entry(key, expect_mask=mask_path is not None, first=True)
        if case is None:
            with _entry_lock(self._paths(key)["lock"]):
                case = self._open_entry(key, expect_mask=mask_path is not None, first=False)
                if case is None:
                    self.stats["misses"] += 1
                    self._compute(key, image_path, mask_path, series_uid, modality, label)
                    case = self._open_entry(key, expect_mask=mask_path is not None, first=False)
            if case is None:  # pragma: no cover - only if the file system lies
                raise DataError(f"cache entry {key} in {self.cache_dir} could not be read back after writing")
        else:
            self.stats["hits"] += 1
        self._open[key] = case
        while len(self._open) > self.max_open:
            self._open.popitem(last=False)  # drops the memory maps; the OS unmaps them
        return case

    def get_request(self, request: CacheRequest) -> CachedCase:
        """:meth:`get` for a :class:`~medssl.data.cache_requests.CacheRequest` (a manifest row's files);
        log records name the volume by :func:`~medssl.data.cache_requests.request_name`."""
        return self.get(request.image, request.mask, request.series_uid, modality=request.modality,
                        label=request_name(request))

    def contains(self, image_path: SourceSpec, mask_path: str | os.PathLike | None = None,
                 series_uid: str | None = None, *, modality: str | None = None) -> bool:
        """Whether a committed entry exists for these sources (no computation)."""
        key = self.key(image_path, mask_path, series_uid, modality)
        return self._paths(key)["sidecar"].exists()

    def close(self) -> None:
        """Drop every open memory map of this process."""
        self._open.clear()

    def warm(self, entries: Any, workers: int = 0, root: str | os.PathLike | None = None,
             mp_context: str | None = None) -> "Any":
        """Precompute the entries of a manifest (DataFrame or iterable of rows / paths) in parallel.

        ``workers`` processes (0: in this process), started with ``mp_context`` (the platform's
        default when None: ``fork`` on Linux, cheap; ``spawn`` re-imports torch in each worker).
        A row that fails (unreadable file) is logged under its pseudonymous ``volume_id`` and
        reported, never fatal; a full disk is (:class:`~medssl.errors.DiskFullError`, naming the
        cache folder). Returns a DataFrame ``key, status, reason, shape`` in row order (``status``
        is ``ok`` or ``error``; ``reason`` names no location; ``shape`` is the cached spatial shape).
        """
        import pandas as pd

        from medssl.utils.logging import progress_bar

        requests = requests_from_entries(entries, root)
        results: list[tuple[str | None, str, str, tuple[int, ...] | None]] = \
            [(None, "error", "not run", None)] * len(requests)
        with progress_bar(total=len(requests), desc="preprocess", unit="vol") as bar:
            if workers and workers > 0 and len(requests) > 1:
                import multiprocessing
                from concurrent.futures import ProcessPoolExecutor, as_completed

                context = multiprocessing.get_context(mp_context)
                init_args = (str(self.cache_dir), self.cfg.model_dump(mode="json"), self.fingerprint, self.loader)
                with ProcessPoolExecutor(max_workers=workers, mp_context=context,
                                         initializer=_warm_worker_init, initargs=init_args) as pool:
                    futures = {pool.submit(_warm_one, request): i for i, request in enumerate(requests)}
                    try:
                        for future in as_completed(futures):
                            results[futures[future]] = future.result()
                            bar.update(1)
                    except BaseException:
                        pool.shutdown(wait=True, cancel_futures=True)
                        raise
            else:
                for i, request in enumerate(requests):
                    results[i] = _ensure(self, request)
                    self.close()
                    bar.update(1)
        failed = sum(status != "ok" for _, status, _, _ in results)
        if failed:
            logger.warning("%d of %d volumes could not be preprocessed (see the returned table)", failed, len(results))
        return pd.DataFrame({"key": [r[0] for r in results], "status": [r[1] for r in results],
                             "reason": [r[2] for r in results], "shape": [r[3] for r in results]})

    def prune_temporaries(self, older_than_s: float = 3600.0) -> int:
        """Delete temporary files left by killed writes (older than ``older_than_s``); returns the count."""
        if not self.cache_dir.exists():
            return 0
        now = time.time()
        removed = 0
        for path in self.cache_dir.glob("*/.*.tmp*"):
            with contextlib.suppress(OSError):
                if now - path.stat().st_mtime > older_than_s:
                    path.unlink()
                    removed += 1
        return removed

    # ------------------------------------------------------------------ internals
    def _load(self, source: SourceSpec, series_uid: str | None) -> Volume:
        loader = self.loader or _default_loader
        return loader(source, series_uid)

    def _compute(self, key: str, image_path: SourceSpec, mask_path, series_uid, modality,
                 label: str | None = None) -> None:
        from medssl.data.preprocess import preprocess_volume

        started = time.perf_counter()
        volume = self._load(image_path, series_uid)
        meta = dict(volume.meta)
        meta["source"] = label or "<volume>"  # how preprocessing's log records name it (no path)
        volume = Volume(volume.array, volume.affine, str(modality).upper() if modality else volume.modality, meta)
        mask = None
        if mask_path is not None:
            mask = self._load(mask_path, None)
        image, mask_out = preprocess_volume(volume, self.cfg, mask)
        image_array = image.array.astype(self.cfg.cache_dtype)
        mask_array = None
        if mask_out is not None:
            labels = mask_out.array
            if labels.min() < 0 or labels.max() > 255:
                raise DataError(f"mask {mask_path} holds labels outside 0..255 "
                                f"({labels.min():g}..{labels.max():g}); store integer labels 0..255")
            mask_array = labels.astype(np.uint8)
        paths = self._paths(key)
        with self._disk_full_is_fatal():
            with atomic_write(paths["image"], "wb") as handle:
                np.save(handle, image_array)
            if mask_array is not None:
                with atomic_write(paths["mask"], "wb") as handle:
                    np.save(handle, mask_array)
        sidecar = {
            "format": CACHE_FORMAT_VERSION,
            "code": PREPROCESS_CODE_VERSION,
            "key": key,
            "modality": image.modality,
            "affine": image.affine.tolist(),
            "spacing": list(image.spacing),
            "image": {"shape": list(image_array.shape), "dtype": str(image_array.dtype),
                      "bytes": paths["image"].stat().st_size, "checksum": _data_checksum(image_array)},
            "mask": None if mask_array is None else {
                "shape": list(mask_array.shape), "dtype": str(mask_array.dtype),
                "bytes": paths["mask"].stat().st_size, "checksum": _data_checksum(mask_array)},
            "preprocess": image.meta.get("preprocess", {}),
            "config": json.loads(self._config_json),
            "seconds": round(time.perf_counter() - started, 3),
        }
        with self._disk_full_is_fatal():
            atomic_write_text(paths["sidecar"], json.dumps(sidecar, indent=1))  # the commit marker
        logger.debug("cached %s in %.2fs", key, sidecar["seconds"])

    @contextlib.contextmanager
    def _disk_full_is_fatal(self) -> Iterator[None]:
        """A full disk names the cache folder and the setting that moves it: it is not a property of
        the volume, so every later volume would fail the same way (never skip volumes for it)."""
        try:
            yield
        except (DiskFullError, OSError) as exc:
            if not is_disk_full(exc):
                raise
            raise DiskFullError(
                self.cache_dir, "the preprocessing cache", folder=self.cache_dir,
                hint="the entries written so far are kept; free space there, or set data.cache_dir to a folder "
                     "on a disk with more room, and run again",
            ) from exc

    def _open_entry(self, key: str, *, expect_mask: bool, first: bool) -> CachedCase | None:
        paths = self._paths(key)
        if not paths["sidecar"].exists():
            return None
        try:
            return self._read_entry(key, paths, expect_mask)
        except _CorruptEntry as exc:
            logger.warning("cache entry %s in %s is corrupt (%s); recomputing it", key, self.cache_dir, exc)
            if first:  # remove under the lock only once; the caller then takes the lock and recomputes
                with _entry_lock(paths["lock"]):
                    self._remove_if_still_corrupt(key, paths, expect_mask)
            else:
                self._remove(paths)
            self.stats["recomputed"] += 1
            return None

    def _remove_if_still_corrupt(self, key: str, paths: dict[str, Path], expect_mask: bool) -> None:
        if not paths["sidecar"].exists():
            return
        try:
            self._read_entry(key, paths, expect_mask)  # another process may have repaired it meanwhile
        except _CorruptEntry:
            self._remove(paths)

    @staticmethod
    def _remove(paths: dict[str, Path]) -> None:
        for name in ("sidecar", "image", "mask"):  # the commit marker first
            with contextlib.suppress(FileNotFoundError):
                paths[name].unlink()

    def _read_entry(self, key: str, paths: dict[str, Path], expect_mask: bool) -> CachedCase:
        try:
            sidecar = json.loads(paths["sidecar"].read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise _CorruptEntry(f"unreadable sidecar: {exc}") from None
        if sidecar.get("key") != key or sidecar.get("format") != CACHE_FORMAT_VERSION:
            raise _CorruptEntry("sidecar does not describe this entry")
        image = self._map_array(paths["image"], sidecar.get("image"))
        mask = None
        if sidecar.get("mask") is not None:
            mask = self._map_array(paths["mask"], sidecar["mask"])
        elif expect_mask:
            raise _CorruptEntry("the entry has no mask but one was requested")
        affine = np.asarray(sidecar["affine"], np.float64)
        return CachedCase(image, mask, affine, tuple(float(s) for s in sidecar["spacing"]),
                          str(sidecar["modality"]), key, sidecar)

    def _map_array(self, path: Path, record: dict[str, Any] | None) -> np.ndarray:
        if not record:
            raise _CorruptEntry(f"sidecar has no record for {path.name}")
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise _CorruptEntry(f"{path.name} is missing") from None
        if size != record["bytes"]:
            raise _CorruptEntry(f"{path.name} has {size} bytes, the sidecar says {record['bytes']} (truncated?)")
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise _CorruptEntry(f"{path.name} is not a valid .npy file ({exc})") from None
        if list(array.shape) != list(record["shape"]) or str(array.dtype) != record["dtype"]:
            raise _CorruptEntry(f"{path.name} holds {array.shape} {array.dtype}, "
                                f"the sidecar says {tuple(record['shape'])} {record['dtype']}")
        if self.verify == "checksum" and _data_checksum(array) != record["checksum"]:
            raise _CorruptEntry(f"{path.name} does not match its checksum")
        return array


def _ensure(cache: PreprocessedCache, request: CacheRequest) -> tuple[str | None, str, str, tuple[int, ...] | None]:
    """Compute (or find) one entry: ``(key, status, reason, spatial shape)``.

    Log records written meanwhile (the readers', pydicom's and nibabel's, preprocessing's) and the
    reason name the volume by :func:`request_name`, never by its location. A full disk is raised, not
    recorded: it is the cache's disk, not this volume (see ``PreprocessedCache._disk_full_is_fatal``).
    """
    from medssl.io.load import log_names

    name = request_name(request)
    try:
        with log_names(name), redacted_logs(request_locations(request, name)):
            case = cache.get_request(request)
        return case.key, "ok", "", case.spatial_shape
    except DiskFullError:
        raise
    except (MedsslError, OSError, ValueError) as exc:
        reason = redacted_reason(request, exc)
        logger.warning("cannot preprocess %s: %s", name, reason)
        return None, "error", reason, None


def cached_case(cache: PreprocessedCache, request: CacheRequest) -> CachedCase:
    """The cached case of ``request`` for a dataset item; a failure names the volume by its
    pseudonymous key, never its location (a volume that changed or vanished after the cache was
    warmed), a full disk stays one."""
    try:
        return cache.get_request(request)
    except DiskFullError:
        raise
    except (MedsslError, OSError, ValueError) as exc:
        raise DataError(f"volume {request_name(request)} cannot be loaded from the preprocessing cache: "
                        f"{redacted_reason(request, exc)}") from None


_WARM_CACHE: PreprocessedCache | None = None


def _warm_worker_init(cache_dir: str, cfg: dict[str, Any], fingerprint: str, loader: Loader | None) -> None:
    global _WARM_CACHE
    import torch

    torch.set_num_threads(1)
    _WARM_CACHE = PreprocessedCache(cache_dir, PreprocessConfig(**cfg), loader=loader, max_open=1,
                                    fingerprint=fingerprint)  # type: ignore[arg-type]


def _warm_one(request: CacheRequest) -> tuple[str | None, str, str, tuple[int, ...] | None]:
    assert _WARM_CACHE is not None
    result = _ensure(_WARM_CACHE, request)
    _WARM_CACHE.close()
    return result


def iter_cases(cache: PreprocessedCache, requests: Iterable[CacheRequest]) -> Iterator[CachedCase]:
    """The cached case of each request, in order (computing missing ones)."""
    for request in requests:
        yield cache.get_request(request)
