"""``load_volume``: one entry point for every image file medssl reads.

Dispatch: a path ending in ``.nii``/``.nii.gz`` -> :func:`medssl.io.nifti.load_nifti`; any other
file, a folder or a list of files -> :func:`medssl.io.dicom.load_dicom`. Both return a
:class:`~medssl.io.Volume` in RAS+ voxel order with a de-identified ``meta``, and apply the same
NaN/inf policy (``nonfinite``, see :mod:`medssl.io.nifti`).

Example:
    >>> import numpy as np, tempfile, os
    >>> from medssl.io.nifti import save_volume
    >>> path = os.path.join(tempfile.mkdtemp(), "ct.nii.gz")
    >>> _ = save_volume(Volume(np.zeros((1, 4, 4, 3), np.float32), np.diag([0.8, 0.8, 2.0, 1])), path)
    >>> load_volume(path, modality="CT")
    Volume(modality='CT', shape=(1, 4, 4, 3), spacing=(0.8, 0.8, 2), orientation='RAS')
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
from typing import Iterator, Literal, Sequence

from medssl.errors import VolumeReadError
from medssl.io import deid
from medssl.io.dicom import load_dicom
from medssl.io.limits import ReadLimits
from medssl.io.nifti import NonFinitePolicy, handle_nonfinite, is_nifti_path, load_nifti
from medssl.io.redaction import redacted_logs
from medssl.io.volume import Volume

logger = logging.getLogger(__name__)


def _log_name(path: str | os.PathLike | Sequence[str | os.PathLike], salt: bytes) -> str:
    """How log records written during a load name its source: a salted pseudonym of the path
    (``<file-...>``), never the path (export folders carry patient names)."""
    if isinstance(path, (str, os.PathLike)):
        source = os.path.abspath(os.fspath(path))
    else:
        source = "\n".join(sorted(os.path.abspath(os.fspath(p)) for p in path))
    return "<" + deid.pseudonymize(source, "file", salt) + ">"


def _source_text(path: str | os.PathLike | Sequence[str | os.PathLike]) -> str:
    if isinstance(path, (str, os.PathLike)):
        return os.fspath(path)
    paths = [os.fspath(p) for p in path]
    return os.path.commonpath(paths) if len(paths) > 1 else paths[0]


def _log_locations(path: str | os.PathLike | Sequence[str | os.PathLike], token: str) -> dict[str, str]:
    """The locations a log record might quote during a load (file, folder, files of a list)."""
    paths = [os.fspath(path)] if isinstance(path, (str, os.PathLike)) else [os.fspath(p) for p in path]
    locations: dict[str, str] = {}
    if len(paths) == 1 and os.path.isdir(paths[0]):  # a folder: its sub-folders name series (and patients)
        for folder, _, _ in os.walk(paths[0]):
            if folder != paths[0]:
                locations[folder] = locations[os.path.abspath(folder)] = token
    for item in paths:
        locations[item] = token
        locations[os.path.abspath(item)] = token
    if len(paths) > 1:
        common = os.path.commonpath(paths)
        locations.setdefault(common, token)
    for item in list(locations):
        folder = os.path.dirname(item)
        if folder and folder not in (os.sep, "."):
            locations.setdefault(folder, token + "/..")
    return locations


_LOG_NAME: contextvars.ContextVar[str | None] = contextvars.ContextVar("medssl_log_name", default=None)


@contextlib.contextmanager
def log_names(name: str | None) -> Iterator[None]:
    """Within the block, :func:`load_volume` names its source ``name`` in log records (a manifest's
    ``volume_id``) unless a call passes ``log_name``; for callers that load through a loader
    function of their own (the preprocessing cache)."""
    token = _LOG_NAME.set(name)
    try:
        yield
    finally:
        _LOG_NAME.reset(token)


def load_volume(
    path: str | os.PathLike | Sequence[str | os.PathLike],
    series_uid: str | None = None,
    *,
    on_uneven: Literal["error", "resample"] = "error",
    nonfinite: NonFinitePolicy = "replace",
    modality: str | None = None,
    reorient: bool = True,
    salt: str | bytes | None = None,
    limits: ReadLimits | None = None,
    log_name: str | None = None,
) -> Volume:
    """Load a NIfTI file, a DICOM file, a folder of DICOM series or a list of one series' files.

    Args:
        path: the file, folder or list of DICOM files.
        series_uid: which series to load when a folder or list holds several (DICOM only).
        on_uneven: DICOM series with missing slices or uneven spacing: ``"error"`` or ``"resample"``
            (linear interpolation onto a regular grid; ``meta["resampled_slices"]`` is then set).
        nonfinite: NaN/inf voxels: ``"replace"`` (recorded in ``meta["nonfinite_replaced"]``),
            ``"error"`` or ``"keep"``.
        modality: overrides the modality (NIfTI files do not store one).
        reorient: ``False`` keeps the file's voxel order (DICOM: column, row, slice).
        salt: pseudonymisation salt for the keys in ``meta`` (default: ``$MEDSSL_DEID_SALT``).
        limits: the size guard checked from the headers before any pixel is read
            (:class:`medssl.io.limits.ReadLimits`; default ``$MEDSSL_MAX_VOXELS``/``$MEDSSL_MAX_BYTES``,
            else 2^31 voxels and 8 GiB of pixel data).
        log_name: how log records name this volume (a manifest's ``volume_id``); default a salted
            pseudonym of the path, ``<file-...>``. No log record names the path.

    Returns:
        a :class:`Volume` ``(C, X, Y, Z)`` float32, RAS+ affine in mm, CT in HU. ``meta["spacing_known"]``
        is false when the pixel spacing was unknown (``PixelSpacing`` of 0, no other source) and 1 mm
        was assumed; a warning says so.

    Raises:
        NotAnImageError: a DICOM object that holds no image (SR, RTSTRUCT, presentation state).
        VolumeReadError: anything that cannot be read into a trustworthy volume, naming the file and
            the reason (whatever the library underneath raised: no raw pydicom, nibabel or OS error).
    """
    if not isinstance(path, (str, os.PathLike)) and not path:
        raise VolumeReadError("<empty list>", "no files given")
    name = log_name or _LOG_NAME.get() or _log_name(path, deid.get_salt(salt))
    with redacted_logs(_log_locations(path, name)):
        try:
            volume = _load(path, series_uid, on_uneven, nonfinite, modality, reorient, salt, limits, name)
        except (VolumeReadError, KeyboardInterrupt, SystemExit, GeneratorExit):
            raise
        except BaseException as exc:  # a reader's own exception (a codec's Rust panic too): VolumeReadError, naming the file
            cause = " ".join(str(exc).split())
            raise VolumeReadError(_source_text(path), f"unexpected {type(exc).__name__}" + (f": {cause}" if cause else "")) from exc
    if volume.meta.get("spacing_known") is False:
        logger.warning("%s: pixel spacing unknown (%s); 1 mm assumed, meta['spacing_known'] is False",
                       name, volume.meta.get("spacing_issue", "no PixelSpacing"))
    return volume


def _load(path, series_uid, on_uneven, nonfinite, modality, reorient, salt, limits, name) -> Volume:
    if isinstance(path, (str, os.PathLike)):
        if not os.path.exists(path):
            raise VolumeReadError(path, "no such file or folder")
        if is_nifti_path(path):
            if series_uid is not None:
                raise VolumeReadError(path, "series_uid applies to DICOM, not to a NIfTI file")
            return load_nifti(path, modality, nonfinite=nonfinite, reorient=reorient, limits=limits, log_name=name)
    volume = load_dicom(path, series_uid, on_uneven=on_uneven, reorient=reorient, salt=salt, limits=limits)
    volume.array, replaced = handle_nonfinite(volume.array, nonfinite, _source_text(path), log_name=name)
    if replaced:
        volume.meta["nonfinite_replaced"] = replaced
    if modality:
        volume.modality = modality.upper()
    return volume
