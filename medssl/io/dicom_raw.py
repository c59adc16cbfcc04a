"""Raw top-level attributes of a DICOM file and their values, by the fast walker or by pydicom.

:func:`read_raw` returns a :class:`~medssl.io.dicom_parse.RawHeader` (value bytes of the tags asked
for, pixel data offset and length) from :func:`~medssl.io.dicom_parse.scan_raw_header` when it can,
else from ``pydicom.dcmread(stop_before_pixels=True)`` re-expressed as raw bytes, so that both paths
feed the same decoding: identifiers are then hashed from identical bytes whichever path read them.
:class:`RawValues` decodes those bytes by their dictionary VR (PS3.5 6.2) with the data set's
SpecificCharacterSet (through :mod:`pydicom.charset`).

Gap filled here: pydicom converts values when they are accessed (slow for thousands of files) and
keeps no raw bytes once converted; this module needs both speed and the exact stored bytes.

Example:
    >>> from pydicom.data import get_testdata_file
    >>> from pydicom.datadict import tag_for_keyword
    >>> raw, _ = read_raw(get_testdata_file("MR_small_bigendian.dcm", download=False), {tag_for_keyword("PixelSpacing")})
    >>> RawValues(raw.elements, raw.little_endian)("PixelSpacing")  # big endian: the pydicom path
    [0.3125, 0.3125]
"""

from __future__ import annotations

import functools
import os
import struct
from typing import Any

import pydicom
from pydicom.charset import convert_encodings, decode_bytes
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from medssl.errors import VolumeReadError
from medssl.io.dicom_parse import PIXEL_TAGS, RawHeader, scan_raw_header

_TEXT_VRS = {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
_SINGLE_TEXT_VRS = {"LT", "ST", "UT", "UR"}
_CHARSET_VRS = {"LO", "LT", "PN", "SH", "ST", "UC", "UT"}
_BINARY = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d", "SV": "q", "UV": "Q"}
_PIXEL_VRS = (b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN")


class NotDicomError(VolumeReadError):
    """A file that is not DICOM at all (a README, a thumbnail); archives skip it quietly."""


class EmptyFileError(NotDicomError):
    """A file of 0 bytes (an interrupted copy): not DICOM, but worth saying why."""


@functools.lru_cache(maxsize=None)
def keyword_tag(keyword: str) -> int:
    """The tag of a DICOM keyword, as an int."""
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(f"unknown DICOM keyword {keyword!r}")
    return int(tag)


@functools.lru_cache(maxsize=None)
def _dictionary_vr(tag: int) -> str:
    return dictionary_VR(tag)


class RawValues:
    """Decode raw attribute bytes by their dictionary VR, with the data set's character set.

    ``values(keyword)`` gives ``None``, a value, or a list for multi-valued attributes (DS as
    float, IS as int, binary VRs unpacked with the data set's byte order); ``values.raw(keyword)``
    the stored bytes.
    """

    def __init__(self, elements: dict[int, bytes], little_endian: bool):
        self.elements = elements
        self.little_endian = little_endian
        charset = self._text(elements.get(keyword_tag("SpecificCharacterSet")), "CS", ["iso8859"])
        codes = charset if isinstance(charset, list) else ([charset] if charset else None)
        try:
            self.encodings = convert_encodings(codes)  # type: ignore[arg-type]
        except Exception:  # an unknown character set: decode as Latin-1 rather than fail
            self.encodings = ["iso8859"]

    def raw(self, keyword: str) -> bytes | None:
        return self.elements.get(keyword_tag(keyword))

    @staticmethod
    def _text(data: bytes | None, vr: str, encodings: list[str]) -> Any:
        if data is None:
            return None
        text = decode_bytes(data, encodings, {0x5C}) if vr in _CHARSET_VRS else data.decode("ascii", "replace")
        text = text.rstrip(" \x00")
        if vr in _SINGLE_TEXT_VRS:
            return text.strip() or None
        parts = [part.strip(" \x00") for part in text.split("\\")]
        if vr in ("DS", "IS"):
            try:
                numbers = [float(part) if vr == "DS" else int(float(part)) for part in parts if part]
            except ValueError:
                return None
            return numbers[0] if len(numbers) == 1 else (numbers or None)
        if not any(parts):
            return None
        return parts[0] if len(parts) == 1 else parts

    def __call__(self, keyword: str) -> Any:
        tag = keyword_tag(keyword)
        data = self.elements.get(tag)
        if data is None:
            return None
        vr = _dictionary_vr(tag)
        if vr in _TEXT_VRS:
            return self._text(data, vr, self.encodings)
        code = _BINARY.get(vr)
        if code is None:
            return None
        size = struct.calcsize(code)
        count = len(data) // size
        if count == 0:
            return None
        numbers = list(struct.unpack(("<" if self.little_endian else ">") + code * count, data[: count * size]))
        return numbers[0] if count == 1 else numbers

    def number(self, keyword: str, default: Any = None) -> Any:
        """The first value of an attribute, or ``default``."""
        value = self(keyword)
        if isinstance(value, list):
            value = value[0] if value else None
        return default if value is None else value

    def floats(self, keyword: str, count: int) -> tuple[float, ...] | None:
        """Exactly ``count`` floats, or ``None``."""
        value = self(keyword)
        if value is None:
            return None
        values = value if isinstance(value, list) else [value]
        try:
            out = tuple(float(v) for v in values)
        except (TypeError, ValueError):
            return None
        return out if len(out) == count else None


def looks_like_raw_dataset(head: bytes) -> bool:
    """A file without preamble that starts with a group 0002 or 0008 element (either byte order)."""
    if len(head) < 8:
        return False
    little = struct.unpack("<HH", head[:4])
    big = struct.unpack(">HH", head[:4])
    return (little[0] in (0x0002, 0x0008) and little[1] < 0x0100) or (big[0] == 0x0008 and big[1] < 0x0100)


def _element_bytes(element: Any) -> bytes | None:
    """Raw value bytes of a pydicom element (re-encoded when pydicom already converted it)."""
    if isinstance(element, RawDataElement):
        return bytes(element.value) if element.value is not None else None
    if isinstance(element, DataElement):
        value = element.value
        if value is None or isinstance(value, bytes):
            return value
        values = value if isinstance(value, (list, MultiValue)) else [value]
        if element.VR in _BINARY:
            return struct.pack("<" + _BINARY[element.VR] * len(values), *values)
        return "\\".join(str(v) for v in values).encode("utf-8")
    return None


def _pixel_element(handle, raw: RawHeader, offset: int, little: bool) -> None:
    """Record the pixel data element found at ``offset`` (where pydicom stopped), if it is one."""
    handle.seek(offset)
    head = handle.read(12)
    if len(head) < 8:
        return
    order = "<" if little else ">"
    group, element = struct.unpack(order + "HH", head[:4])
    tag = (group << 16) | element
    if tag not in PIXEL_TAGS:
        return
    raw.pixel_tag, raw.pixel_offset = tag, offset
    # Pixel data VRs are all long-form; anything else in bytes 4-6 means implicit VR, whatever the
    # transfer syntax claims (some exports write implicit data sets under an explicit syntax).
    if head[4:6] in _PIXEL_VRS and len(head) == 12:
        (length,) = struct.unpack(order + "I", head[8:12])
        raw.pixel_header = 12
    else:
        (length,) = struct.unpack(order + "I", head[4:8])
        raw.pixel_header = 8
    raw.pixel_length = None if length == 0xFFFFFFFF else length


def _pydicom_raw(path: str, wanted: set[int], sequences: set[int]) -> tuple[RawHeader, pydicom.Dataset]:
    """Read with pydicom (stop before pixels) and express the result as a :class:`RawHeader`."""
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size == 0:  # the fast walker returned None for it (shorter than a preamble)
            raise EmptyFileError(path, "empty file (0 bytes)", hint="an interrupted copy? copy it again")
        head = handle.read(132)
        handle.seek(0)
        has_preamble = head[128:132] == b"DICM"
        if not has_preamble and not looks_like_raw_dataset(head):
            raise NotDicomError(path, "not a DICOM file (no DICM prefix and no DICOM element at the start)")
        try:
            dataset = pydicom.dcmread(handle, stop_before_pixels=True, force=not has_preamble)
        except InvalidDicomError as exc:
            raise NotDicomError(path, f"not a DICOM file ({exc})") from exc
        except (KeyboardInterrupt, MemoryError):
            raise
        except Exception as exc:  # truncated or corrupt header: pydicom raises many kinds
            raise VolumeReadError(path, f"DICOM header cannot be parsed ({type(exc).__name__}: {exc})") from exc
        stop = handle.tell()
        if not has_preamble and "SOPClassUID" not in dataset:
            raise NotDicomError(path, "not a DICOM file (no preamble and no SOP Class UID)")
        implicit, little = dataset.original_encoding
        syntax = dataset.file_meta.get("TransferSyntaxUID")
        raw = RawHeader(path, str(syntax) if syntax else None, bool(implicit), bool(little), file_size=size)
        for tag in wanted:
            element = dataset.get_item(tag)
            if element is not None:
                value = _element_bytes(element)
                if value is not None:
                    raw.elements[tag] = value
        raw.sequences = {tag for tag in sequences if tag in dataset}
        if syntax is not None and UID(syntax) == DeflatedExplicitVRLittleEndian:
            raw.pixel_offset = -1  # no file offset inside a deflated stream: checked when decoded
        else:
            _pixel_element(handle, raw, stop, bool(little))
    return raw, dataset


def read_raw(path: str, wanted: set[int], sequences: set[int] = frozenset()) -> tuple[RawHeader, pydicom.Dataset | None]:  # type: ignore[assignment]
    """Raw values of ``wanted`` tags; the pydicom :class:`~pydicom.dataset.Dataset` too when pydicom
    read the file (no preamble, big endian, deflate, malformed for the walker) or when one of the
    ``sequences`` (whose content the walker skips) is present.

    Raises:
        NotDicomError: not a DICOM file.
        VolumeReadError: the file cannot be opened, or its header cannot be parsed.
    """
    try:
        raw = scan_raw_header(path, wanted, sequences)
        if raw is not None and not raw.sequences:
            return raw, None
        return _pydicom_raw(path, wanted, sequences)
    except OSError as exc:
        raise VolumeReadError(path, f"cannot open the file ({exc.strerror or exc})") from exc
