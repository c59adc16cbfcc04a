"""Decode a DICOM file's pixel data into physical values: frames ``(F, rows, columns, channels)`` float32.

Steps, in the order of the DICOM grayscale pipeline (PS3.4 N.2):

1. **Decode** with pydicom, which handles every transfer syntax its installed plugins cover
   (uncompressed little and big endian, deflate, RLE, JPEG baseline/extended/lossless, JPEG-LS,
   JPEG 2000 with pylibjpeg-libjpeg / -openjpeg / -rle). YBR colour data comes back as RGB. A
   failure becomes :class:`~medssl.errors.VolumeReadError` naming the file, the transfer syntax,
   pydicom's cause and, where a plugin is missing, which one to install.
2. **Modality LUT**: ``value = stored * RescaleSlope + RescaleIntercept`` (CT in Hounsfield units) or
   the Modality LUT Sequence, through :func:`pydicom.pixels.apply_modality_lut`; enhanced multi-frame
   files carry slope and intercept per frame in their functional groups (pydicom applies only the
   file-level ones, the gap filled here). RT dose grids are multiplied by DoseGridScaling (Gy).
3. **MONOCHROME1** (bright = low value, common in CR/DX) is inverted to MONOCHROME2 within the
   range the modality LUT can produce: ``v' = lo + hi - v`` where ``lo, hi`` are the modality LUT of
   the smallest and largest stored values BitsStored allows.
4. **Colour**: RGB/YBR give 3 channels; PALETTE COLOR is expanded through its lookup table
   (:func:`pydicom.pixels.apply_color_lut`). No VOI window is applied: windows are for display.

Example:
    >>> from pydicom.data import get_testdata_file
    >>> dataset = read_dataset(get_testdata_file("CT_small.dcm", download=False))
    >>> frames = decode_frames(dataset)
    >>> frames.shape, frames.dtype
    ((1, 128, 128, 1), dtype('float32'))
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import pydicom
from pydicom.pixels import apply_color_lut, apply_modality_lut, get_decoder
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from medssl.errors import VolumeReadError
from medssl.io.dicom_parse import is_damaged_syntax
from medssl.io.dicom_raw import NotDicomError, looks_like_raw_dataset


def read_dataset(path: str | os.PathLike) -> pydicom.Dataset:
    """Read a whole DICOM file (pixel data included) with the same acceptance rules as headers.

    Files without a preamble are read when they start with a plausible DICOM element; their
    missing transfer syntax is set from the encoding pydicom detected, so their pixels decode.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
            handle.seek(0)
            has_preamble = head[128:132] == b"DICM"
            if not has_preamble and not looks_like_raw_dataset(head):
                raise NotDicomError(path, "not a DICOM file (no DICM prefix and no DICOM element at the start)")
            dataset = pydicom.dcmread(handle, force=not has_preamble)
    except VolumeReadError:
        raise
    except OSError as exc:
        raise VolumeReadError(path, f"cannot open the file ({exc.strerror or exc})") from exc
    except Exception as exc:
        raise VolumeReadError(path, f"DICOM file cannot be parsed ({type(exc).__name__}: {exc})") from exc
    if "TransferSyntaxUID" not in dataset.file_meta:
        implicit, little = dataset.original_encoding
        dataset.file_meta.TransferSyntaxUID = (
            ImplicitVRLittleEndian if implicit else (ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
        )
    return dataset


def _decode_error(dataset: pydicom.Dataset, path: str, exc: Exception) -> VolumeReadError:
    syntax = UID(dataset.file_meta.get("TransferSyntaxUID", ""))
    name = syntax.name or str(syntax)
    hint = None
    if is_damaged_syntax(syntax):
        return VolumeReadError(path, f"pixel data cannot be decoded: the transfer syntax UID {str(syntax)!r} names no "
                               "transfer syntax", hint="the file meta information is damaged; export the file again")
    try:
        decoder = get_decoder(syntax)
        if not decoder.is_available:
            hint = "install one of: " + "; ".join(decoder.missing_dependencies)
    except NotImplementedError:
        hint = "pydicom has no decoder for this transfer syntax; convert the file (e.g. dcmdjpeg, gdcmconv)"
    except Exception:  # pydicom raises ValueError for some UIDs it does not know
        hint = None
    cause = " ".join(str(exc).split())
    return VolumeReadError(path, f"pixel data cannot be decoded ({name}): {cause}", hint=hint)


def _stored_range(dataset: pydicom.Dataset) -> tuple[float, float]:
    bits = int(dataset.get("BitsStored", dataset.get("BitsAllocated", 16)))
    if int(dataset.get("PixelRepresentation", 0)) == 1:
        return float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    return 0.0, float(2**bits - 1)


def _as_frames(array: np.ndarray, n_frames: int, samples: int) -> np.ndarray:
    """pydicom's ``(R, C)``, ``(R, C, S)``, ``(F, R, C)`` or ``(F, R, C, S)`` as ``(F, R, C, S)``."""
    if samples == 1:
        array = array[..., None]
    if array.ndim == 3:
        array = array[None]
    if array.shape[0] != n_frames:
        raise ValueError(f"decoded {array.shape[0]} frames, NumberOfFrames says {n_frames}")
    return array


def decode_frames(
    dataset: pydicom.Dataset,
    path: str | os.PathLike | None = None,
    *,
    frame_rescale: Sequence[tuple[float, float]] | None = None,
) -> np.ndarray:
    """Pixel values of every frame after the modality LUT, MONOCHROME1 inverted, float32.

    Args:
        dataset: a fully read data set (:func:`read_dataset`).
        path: the file, for error messages (defaults to ``dataset.filename``).
        frame_rescale: per-frame ``(slope, intercept)`` of an enhanced multi-frame file; when given
            it replaces the file-level modality LUT.

    Returns:
        ``(frames, rows, columns, channels)`` float32; channels is 3 for colour images.

    Raises:
        VolumeReadError: no pixel data, or pixel data that cannot be decoded.
    """
    name = os.fspath(path) if path is not None else str(getattr(dataset, "filename", "") or "<dataset>")
    if not any(tag in dataset for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise VolumeReadError(name, "the file has no pixel data")
    try:
        stored = dataset.pixel_array
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as exc:  # pydicom raises RuntimeError, ValueError...; a Rust codec panics (pyo3 PanicException)
        raise _decode_error(dataset, name, exc) from exc
    photometric = str(dataset.get("PhotometricInterpretation", "")).upper()
    n_frames = int(dataset.get("NumberOfFrames", 1) or 1)
    try:
        if photometric == "PALETTE COLOR":
            stored = apply_color_lut(stored, dataset)
            frames = _as_frames(np.asarray(stored), n_frames, 3).astype(np.float32)
            return frames
        samples = int(dataset.get("SamplesPerPixel", 1))
        frames = _as_frames(np.asarray(stored), n_frames, samples)
    except Exception as exc:
        raise VolumeReadError(name, f"pixel data has an unexpected layout ({exc})") from exc
    if samples != 1:
        return frames.astype(np.float32)  # colour: no modality LUT (PS3.3 C.7.6.3.1.2)

    lo, hi = _stored_range(dataset)
    if frame_rescale is not None:
        slopes = np.array([s for s, _ in frame_rescale], dtype=np.float64)[:, None, None, None]
        intercepts = np.array([i for _, i in frame_rescale], dtype=np.float64)[:, None, None, None]
        values = frames.astype(np.float64) * slopes + intercepts
        lo_values, hi_values = lo * slopes + intercepts, hi * slopes + intercepts
    else:
        values = np.asarray(apply_modality_lut(frames, dataset), dtype=np.float64)
        ends = np.asarray(apply_modality_lut(np.array([lo, hi]).astype(frames.dtype), dataset), dtype=np.float64)
        if dataset.get("ModalityLUTSequence"):
            lut = np.asarray(apply_modality_lut(np.arange(int(lo), int(hi) + 1, dtype=np.int64), dataset), dtype=np.float64)
            ends = np.array([lut.min(), lut.max()])
        lo_values, hi_values = float(ends.min()), float(ends.max())
    if photometric == "MONOCHROME1":
        values = (lo_values + hi_values) - values
    scaling = dataset.get("DoseGridScaling")
    if str(dataset.get("Modality", "")).upper() == "RTDOSE" and scaling:
        values = values * float(scaling)
    return values.astype(np.float32)
