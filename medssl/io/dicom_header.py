"""What medssl needs from one DICOM file's header, read without touching the pixel data.

:func:`read_header` returns a :class:`DicomHeader`: whether the file is an image, why not, its plane
geometry (one :class:`~medssl.io.dicom_geometry.PlaneGeometry` per frame, per-frame functional
groups of enhanced CT/MR and RT dose grids included), the pixel description, pseudonymous keys and
the allow-listed acquisition fields (:mod:`medssl.io.deid`). The same function serves
:func:`medssl.io.load_volume` and the manifest, so both see the same series and geometry.

Reading (:func:`medssl.io.dicom_raw.read_raw`): the fast element walker of
:mod:`medssl.io.dicom_parse` for ordinary files, pydicom (``dcmread(stop_before_pixels=True)``) for
the rest and for enhanced multi-frame files, whose functional-group sequences it parses. Files
without the 128-byte preamble are accepted when their first element is a plausible group 0002 or
0008 element and they name a SOP class (old exports); anything else is :class:`NotDicomError`.

Checks that need no pixel decoding: the pixel data element exists and is as long as Rows x Columns
x frames x samples needs and the file holds it (a truncated copy is caught by a header scan);
compressed (encapsulated) pixel data ends with its sequence delimiter.

Example:
    >>> from pydicom.data import get_testdata_file
    >>> header = read_header(get_testdata_file("CT_small.dcm", download=False), salt="demo")
    >>> header.is_image, header.modality, header.rows, header.frames[0].pixel_spacing
    (True, 'CT', 128, (0.661468, 0.661468))
"""

from __future__ import annotations

import functools
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any, Container

import numpy as np
import pydicom
from pydicom.multival import MultiValue
from pydicom.uid import UID

from medssl.errors import VolumeReadError
from medssl.io import deid
from medssl.io.dicom_geometry import PlaneGeometry, orientation_axes
from medssl.io.dicom_mosaic import is_mosaic, mosaic_info, mosaic_planes
from medssl.io.dicom_parse import RawHeader, is_damaged_syntax
from medssl.io.limits import ReadLimits, as_limits
from medssl.io.dicom_raw import NotDicomError, RawValues, keyword_tag, read_raw

__all__ = ["DicomHeader", "NotDicomError", "read_header", "DERIVED_SOP_CLASSES", "NON_IMAGE_SOP_PREFIXES"]

logger = logging.getLogger(__name__)


_STRUCTURE_KEYWORDS = (
    "SOPClassUID",
    "Modality",
    "SpecificCharacterSet",
    "Rows",
    "Columns",
    "SamplesPerPixel",
    "BitsAllocated",
    "BitsStored",
    "PixelRepresentation",
    "PhotometricInterpretation",
    "NumberOfFrames",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "ImagerPixelSpacing",
    "PatientOrientation",
    "SliceThickness",
    "SpacingBetweenSlices",
    "RescaleSlope",
    "RescaleIntercept",
    "GridFrameOffsetVector",
    "DoseGridScaling",
    "InstanceNumber",
    "SeriesNumber",
    "SeriesDescription",
    "BodyPartExamined",
    "Manufacturer",
    "ImageType",
    "EchoNumbers",
    "EchoTime",
)
_KEYWORDS = tuple(dict.fromkeys(_STRUCTURE_KEYWORDS + deid.ACQUISITION_FIELDS + deid.IDENTIFIER_FIELDS))
_WANTED = {keyword_tag(keyword) for keyword in _KEYWORDS}
#: Top-level sequences whose content the header needs; their presence switches to pydicom.
_SEQUENCE_TAGS = {
    keyword_tag("SharedFunctionalGroupsSequence"),
    keyword_tag("PerFrameFunctionalGroupsSequence"),
    keyword_tag("SequenceOfUltrasoundRegions"),
}

#: SOP classes that hold no image (PS3.4 B.5); a prefix ending in "." covers a family.
NON_IMAGE_SOP_PREFIXES = (
    "1.2.840.10008.1.3.10",  # Media Storage Directory (DICOMDIR)
    "1.2.840.10008.5.1.4.1.1.88.",  # structured reports, key object selection
    "1.2.840.10008.5.1.4.1.1.11.",  # presentation states
    "1.2.840.10008.5.1.4.1.1.9.",  # waveforms
    "1.2.840.10008.5.1.4.1.1.104.",  # encapsulated PDF, CDA, STL...
    "1.2.840.10008.5.1.4.1.1.481.3",  # RT structure set
    "1.2.840.10008.5.1.4.1.1.481.4",  # RT beams treatment record
    "1.2.840.10008.5.1.4.1.1.481.5",  # RT plan
    "1.2.840.10008.5.1.4.1.1.481.6",  # RT brachy treatment record
    "1.2.840.10008.5.1.4.1.1.481.7",  # RT treatment summary record
    "1.2.840.10008.5.1.4.1.1.481.8",  # RT ion plan
    "1.2.840.10008.5.1.4.1.1.481.9",  # RT ion beams treatment record
    "1.2.840.10008.5.1.4.1.1.66",  # raw data, registrations, fiducials, surface segmentation
    "1.2.840.10008.5.1.4.1.1.67",  # real world value mapping
    "1.2.840.10008.5.1.4.1.1.68.",  # surfaces
)
#: Image-like SOP classes that are derived objects, not acquisitions (loadable, skipped by manifests).
DERIVED_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.66.4": "segmentation (SEG) label map",
    "1.2.840.10008.5.1.4.1.1.481.2": "RT dose grid",
}


@functools.lru_cache(maxsize=256)
def _is_non_image_class(sop_class: str) -> bool:
    if sop_class in DERIVED_SOP_CLASSES:
        return False
    for prefix in NON_IMAGE_SOP_PREFIXES:
        if prefix.endswith("."):
            if sop_class.startswith(prefix):
                return True
        elif sop_class == prefix or sop_class.startswith(prefix + "."):
            return True
    return False


@dataclass(slots=True)
class DicomHeader:
    """One file's header, reduced to what loading and manifests need (picklable, no pixel data).

    ``status`` is ``"image"``, ``"non-image"`` (SR, RTSTRUCT, presentation states... with
    ``reason``) or ``"error"`` (readable header but unusable pixel data, with ``reason``).
    ``series_uid`` is the raw SeriesInstanceUID, used only to select a series by UID; the manifest
    blanks it. ``frames`` holds one plane per frame; ``frame_rescale`` the per-frame
    ``(slope, intercept)`` of enhanced multi-frame files (``None``: the file-level modality LUT).
    ``meta`` holds the allow-listed acquisition fields, or ``None`` when not asked for.
    ``echo_number``/``echo_time`` (EchoNumbers, EchoTime) tell the echoes of a multi-echo series
    apart; ``mosaic`` is ``(slices, tile rows, tile columns)`` of a Siemens mosaic, whose ``rows``,
    ``columns`` and ``frames`` then describe its slices (:mod:`medssl.io.dicom_mosaic`).
    """

    path: str
    file_size: int
    status: str
    reason: str | None = None
    sop_class: str = ""
    transfer_syntax: str | None = None
    modality: str = "OT"
    series_uid: str | None = None
    patient_key: str | None = None
    study_key: str | None = None
    series_key: str | None = None
    instance_key: str | None = None
    series_number: int | None = None
    series_description: str | None = None
    rows: int = 0
    columns: int = 0
    samples_per_pixel: int = 1
    bits_allocated: int = 0
    photometric: str = ""
    n_frames: int = 1
    frames: list[PlaneGeometry] = field(default_factory=list)
    frame_rescale: list[tuple[float, float]] | None = None
    patient_orientation: tuple[str, ...] | None = None
    slice_spacing: float | None = None
    spacing_issue: str | None = None
    echo_number: int | None = None
    echo_time: float | None = None
    mosaic: tuple[int, int, int] | None = None
    enhanced: bool = False
    meta: dict[str, Any] | None = field(default_factory=dict)

    @property
    def is_image(self) -> bool:
        return self.status == "image"

    @property
    def positioned(self) -> bool:
        """Every frame has ImagePositionPatient and ImageOrientationPatient."""
        return bool(self.frames) and all(f.position is not None and f.orientation is not None for f in self.frames)

    @property
    def sop_class_name(self) -> str:
        return UID(self.sop_class).name if self.sop_class else ""


# ---------------------------------------------------------------------------------------------
# Geometry and checks


def _expected_pixel_bytes(raw: RawHeader, rows: int, columns: int, frames: int, samples: int, bits: int, photometric: str) -> int:
    if raw.pixel_tag == 0x7FE00008:
        bits = 32
    elif raw.pixel_tag == 0x7FE00009:
        bits = 64
    pixels = rows * columns * frames * samples
    if bits == 1:
        return (pixels + 7) // 8
    count = pixels * (bits // 8)
    if photometric == "YBR_FULL_422" and samples == 3:
        count = count * 2 // 3
    return count


def _pixel_problem(raw: RawHeader, expected: int) -> str | None:
    if raw.pixel_offset == -1:
        return None
    if raw.pixel_offset is None:
        return "the file has no pixel data element (truncated before the pixel data?)"
    start = raw.pixel_offset + raw.pixel_header
    if raw.pixel_length is not None:
        present = raw.file_size - start
        if raw.pixel_length > present:
            return f"file truncated: the pixel data needs {raw.pixel_length} bytes, {present} are present"
        if raw.pixel_length < expected:
            return f"the pixel data holds {raw.pixel_length} bytes, {expected} are needed for its Rows x Columns x frames"
        return None
    with open(raw.path, "rb") as handle:
        tail_size = min(4096, raw.file_size - start)
        handle.seek(raw.file_size - tail_size)
        tail = handle.read(tail_size)
    if b"\xfe\xff\xdd\xe0" not in tail:
        return "file truncated: the compressed pixel data has no end delimiter"
    return None


def _functional(dataset: pydicom.Dataset, frame: int, sequence: str, attribute: str) -> Any:
    """An attribute from a frame's functional groups, else from the shared ones (PS3.3 C.7.6.16)."""
    for groups_name, index in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        groups = dataset.get(groups_name)
        if not groups or index >= len(groups):
            continue
        items = groups[index].get(sequence)
        if items:
            value = items[0].get(attribute)
            if value is not None and value != "":
                return value
    return None


def _tuple(value: Any, count: int) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        values = tuple(float(v) for v in (value if isinstance(value, (list, tuple, MultiValue)) else [value]))
    except (TypeError, ValueError):
        return None
    return values if len(values) == count else None


def _enhanced_frames(dataset: pydicom.Dataset, n_frames: int, rows: int, columns: int):
    planes, rescale = [], []
    any_rescale = False
    for frame in range(n_frames):
        position = _tuple(_functional(dataset, frame, "PlanePositionSequence", "ImagePositionPatient"), 3)
        orientation = _tuple(_functional(dataset, frame, "PlaneOrientationSequence", "ImageOrientationPatient"), 6)
        spacing = _tuple(_functional(dataset, frame, "PixelMeasuresSequence", "PixelSpacing"), 2)
        if spacing is not None and not all(math.isfinite(v) and v > 0 for v in spacing):
            spacing = None
        planes.append(PlaneGeometry(position, orientation, spacing, rows, columns))  # type: ignore[arg-type]
        slope = _functional(dataset, frame, "PixelValueTransformationSequence", "RescaleSlope")
        intercept = _functional(dataset, frame, "PixelValueTransformationSequence", "RescaleIntercept")
        any_rescale = any_rescale or slope is not None or intercept is not None
        rescale.append((float(slope) if slope is not None else 1.0, float(intercept) if intercept is not None else 0.0))
    thickness = _functional(dataset, 0, "PixelMeasuresSequence", "SpacingBetweenSlices") or _functional(
        dataset, 0, "PixelMeasuresSequence", "SliceThickness"
    )
    return planes, (rescale if any_rescale else None), (float(thickness) if thickness else None)


def _ultrasound_spacing(dataset: pydicom.Dataset) -> tuple[float, float] | None:
    """Pixel spacing (mm) of the first ultrasound region calibrated in cm (PS3.3 C.8.5.5)."""
    for region in dataset.get("SequenceOfUltrasoundRegions") or []:
        if region.get("PhysicalUnitsXDirection") == 3 and region.get("PhysicalUnitsYDirection") == 3:
            dx, dy = region.get("PhysicalDeltaX"), region.get("PhysicalDeltaY")
            if dx and dy:
                return (abs(float(dy)) * 10.0, abs(float(dx)) * 10.0)
    return None


def _usable_spacing(header: DicomHeader, keyword: str, spacing: tuple[float, ...] | None) -> tuple[float, float] | None:
    """``spacing`` when both values are positive and finite; else ``None``, and the header's
    ``spacing_issue`` says what was found (PixelSpacing ``0\\0`` is common in CR exports)."""
    if spacing is None:
        return None
    if all(math.isfinite(v) and v > 0 for v in spacing):
        return spacing  # type: ignore[return-value]
    shown = "\\".join(f"{v:g}" for v in spacing)
    header.spacing_issue = (header.spacing_issue + "; " if header.spacing_issue else "") + f"{keyword} is {shown}"
    return None


def _fill_mosaic(header: DicomHeader, values: RawValues, dataset: pydicom.Dataset | None) -> bool:
    """Unpack a Siemens mosaic's geometry into one plane per slice; ``False`` when the file does
    not say how many slices it holds (it then loads as the 2D tile image)."""
    try:
        info = mosaic_info(header.path, dataset)
    except Exception as exc:  # pydicom cannot re-read the header: treat the file as a plain image
        logger.debug("mosaic header unreadable (%s); loading the tile image", type(exc).__name__)
        return False
    if info is None:
        return False
    spacing = _usable_spacing(header, "PixelSpacing", values.floats("PixelSpacing", 2))
    planes, (tile_rows, tile_columns) = mosaic_planes(
        info, header.rows, header.columns, values.floats("ImagePositionPatient", 3),
        values.floats("ImageOrientationPatient", 6), spacing, header.slice_spacing, header.path,
    )
    header.mosaic = (info.n_images, tile_rows, tile_columns)
    header.rows, header.columns, header.n_frames, header.frames = tile_rows, tile_columns, info.n_images, planes
    if header.meta is not None and info.slice_normal is None:
        header.meta["mosaic_slice_normal_assumed"] = True
    return True


def _fill_frames(header: DicomHeader, values: RawValues, dataset: pydicom.Dataset | None) -> None:
    """One :class:`PlaneGeometry` per frame: enhanced functional groups, RT dose frame offsets,
    unpositioned frames (cine, NM), or the single plane of a classic file."""
    position = values.floats("ImagePositionPatient", 3)
    orientation = values.floats("ImageOrientationPatient", 6)
    spacing = _usable_spacing(header, "PixelSpacing", values.floats("PixelSpacing", 2))
    source = None
    if spacing is None:
        spacing = _usable_spacing(header, "ImagerPixelSpacing", values.floats("ImagerPixelSpacing", 2))
        source = "ImagerPixelSpacing" if spacing is not None else None
    if dataset is not None and "PerFrameFunctionalGroupsSequence" in dataset:
        header.enhanced = True
        header.frames, header.frame_rescale, thickness = _enhanced_frames(dataset, header.n_frames, header.rows, header.columns)
        header.slice_spacing = thickness or header.slice_spacing
        return
    if spacing is None and dataset is not None and "SequenceOfUltrasoundRegions" in dataset:
        spacing = _ultrasound_spacing(dataset)
        source = "SequenceOfUltrasoundRegions" if spacing is not None else None
    if source and header.meta is not None:
        header.meta["pixel_spacing_source"] = source
    rows, columns, n_frames = header.rows, header.columns, header.n_frames
    offsets = values("GridFrameOffsetVector")
    if n_frames > 1 and isinstance(offsets, list) and len(offsets) == n_frames and position and orientation:
        # RT dose (PS3.3 C.8.8.3.2): frame k lies at IPP + (offset_k - offset_0) along the normal
        normal = orientation_axes(orientation, header.path)[2]
        origin = np.asarray(position)
        header.frames = [
            PlaneGeometry(tuple(float(v) for v in origin + normal * (offset - offsets[0])), orientation, spacing, rows, columns)  # type: ignore[arg-type]
            for offset in offsets
        ]
    elif n_frames > 1:
        header.frames = [PlaneGeometry(None, orientation, spacing, rows, columns)] * n_frames  # type: ignore[arg-type]
    else:
        header.frames = [PlaneGeometry(position, orientation, spacing, rows, columns)]  # type: ignore[arg-type]


def read_header(
    path: str | os.PathLike,
    salt: str | bytes | None = None,
    *,
    with_meta: bool = True,
    known_series: Container[str] = (),
    limits: ReadLimits | None = None,
) -> DicomHeader:
    """Read and check the header of one DICOM file (no pixel decoding).

    ``with_meta=False``, or a series key in ``known_series``, skips decoding the allow-listed
    acquisition fields (``meta`` is then ``None``): a manifest needs them once per series, not once
    per slice. ``limits``: a file whose Rows x Columns x frames exceed the size guard is an ``error``
    header (:mod:`medssl.io.limits`), before any per-frame geometry is built.

    Raises:
        NotDicomError: the file is not DICOM.
        VolumeReadError: the file cannot be opened or its header cannot be parsed.
    """
    try:
        return _read_header(os.fspath(path), salt, with_meta, known_series, limits)
    except (VolumeReadError, KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as exc:  # pydicom raises many kinds on a damaged header (NotImplementedError for a bad VR...)
        cause = " ".join(str(exc).split())
        raise VolumeReadError(path, f"DICOM header cannot be parsed ({type(exc).__name__}{': ' + cause if cause else ''})") from exc


def _read_header(
    path: str, salt: str | bytes | None, with_meta: bool, known_series: Container[str], limits: ReadLimits | None
) -> DicomHeader:
    path = os.fspath(path)
    raw, dataset = read_raw(path, _WANTED, _SEQUENCE_TAGS)
    values = RawValues(raw.elements, raw.little_endian)
    keys = deid.identity_keys(values.raw, salt)
    sop_class = str(values.number("SOPClassUID", "") or "")
    modality = str(values.number("Modality", "") or "").upper() or "OT"
    series_uid = values.number("SeriesInstanceUID")
    header = DicomHeader(
        path=path,
        file_size=raw.file_size,
        status="image",
        sop_class=sop_class,
        transfer_syntax=raw.transfer_syntax,
        modality=modality,
        series_uid=str(series_uid) if series_uid else None,
        series_number=values.number("SeriesNumber"),
        series_description=values.number("SeriesDescription"),
        meta=deid.acquisition_meta(values) if with_meta and keys["series_key"] not in known_series else None,
        **keys,
    )
    if _is_non_image_class(sop_class):
        header.status, header.reason = "non-image", f"{UID(sop_class).name or sop_class} holds no image"
        return header
    if is_damaged_syntax(raw.transfer_syntax):
        header.status = "error"
        header.reason = (f"the transfer syntax UID {raw.transfer_syntax!r} names no transfer syntax "
                         "(damaged file meta information): its pixel data cannot be decoded")
        return header
    if raw.truncated_at is not None:
        header.status = "error"
        header.reason = f"file truncated inside the header (it ends at byte {raw.file_size}, within an element starting at byte {raw.truncated_at})"
        return header
    rows, columns = values.number("Rows"), values.number("Columns")
    if not rows or not columns:
        name = UID(sop_class).name if sop_class else "a DICOM object"
        header.status, header.reason = "non-image", f"{name} has no image pixel data (no Rows/Columns)"
        return header
    header.rows, header.columns = int(rows), int(columns)
    header.samples_per_pixel = int(values.number("SamplesPerPixel", 1))
    header.bits_allocated = int(values.number("BitsAllocated", 0))
    header.photometric = str(values.number("PhotometricInterpretation", "") or "").upper()
    header.n_frames = max(1, int(values.number("NumberOfFrames", 1) or 1))
    orientation_codes = values("PatientOrientation")
    if isinstance(orientation_codes, list):
        header.patient_orientation = tuple(str(c) for c in orientation_codes)
    header.slice_spacing = values.number("SpacingBetweenSlices") or values.number("SliceThickness")
    voxels = header.rows * header.columns * header.n_frames * max(1, header.samples_per_pixel)
    too_large = as_limits(limits).problem(
        voxels=voxels, stored_bytes=voxels * max(1, header.bits_allocated // 8),
        shape=(header.rows, header.columns, header.n_frames),
    )
    if too_large:
        header.status, header.reason = "error", f"the header promises {too_large}"
        return header

    problem = _pixel_problem(
        raw,
        _expected_pixel_bytes(
            raw, header.rows, header.columns, header.n_frames, header.samples_per_pixel, header.bits_allocated, header.photometric
        ),
    )
    if problem:
        header.status, header.reason = "error", problem
        return header

    echo_number, echo_time = values.number("EchoNumbers"), values.number("EchoTime")
    header.echo_number = int(echo_number) if isinstance(echo_number, (int, float)) else None
    header.echo_time = float(echo_time) if isinstance(echo_time, (int, float)) else None
    try:
        image_type = values.raw("ImageType") or b""
        if header.n_frames == 1 and b"MOSAIC" in image_type.upper() and is_mosaic(values("ImageType")) \
                and _fill_mosaic(header, values, dataset):
            return header
        _fill_frames(header, values, dataset)
    except VolumeReadError as exc:
        header.status, header.reason = "error", exc.reason
        return header
    except (ValueError, ArithmeticError) as exc:
        header.status, header.reason = "error", f"the geometry cannot be read ({type(exc).__name__}: {exc})"
        return header
    if sop_class in DERIVED_SOP_CLASSES and header.meta is not None:
        header.meta["derived_object"] = DERIVED_SOP_CLASSES[sop_class]
    return header
