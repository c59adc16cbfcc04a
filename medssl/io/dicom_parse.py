"""Read the raw bytes of a few top-level DICOM attributes, fast, stopping before the pixel data.

A manifest scan reads the header of every file of an archive. ``pydicom.dcmread(...,
stop_before_pixels=True)`` builds a full :class:`~pydicom.dataset.Dataset` for each file, about a
millisecond per file in pure Python, which dominates a scan of thousands of slices. The gap filled
here: a minimal element walker (DICOM PS3.5 section 7) over the file meta group and the top-level
data set that keeps the raw value bytes of the tags asked for, skips everything else by length
(sequences of undefined length item by item, PS3.5 7.5), records where the pixel data element
starts and how long it is (for the truncation check), and stops there. It reads about 20 times
faster than ``dcmread`` on typical headers.

It handles the encodings of nearly every archive file: a 128-byte preamble and ``DICM``, then
little-endian explicit VR (uncompressed and every encapsulated transfer syntax) or implicit VR.
Anything else (no preamble, big endian, deflate, a malformed element) returns ``None`` and the
caller falls back to pydicom, which is the reference: tests compare both on pydicom's own files.

Example:
    >>> from pydicom.data import get_testdata_file
    >>> raw = scan_raw_header(get_testdata_file("CT_small.dcm", download=False), {0x00280010})
    >>> int.from_bytes(raw.elements[0x00280010], "little")  # Rows
    128
"""

from __future__ import annotations

import functools
import os
import struct
from dataclasses import dataclass, field

from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian

#: Explicit-VR value representations whose length field is 4 bytes (after 2 reserved bytes).
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_UNDEFINED = 0xFFFFFFFF
_ITEM = 0xFFFEE000
_ITEM_END = 0xFFFEE00D
_SEQUENCE_END = 0xFFFEE0DD
#: FloatPixelData, DoubleFloatPixelData, PixelData: the walk stops at the first of these.
PIXEL_TAGS = (0x7FE00008, 0x7FE00009, 0x7FE00010)
_CHUNK = 1 << 14  # most headers fit in 16 KB; longer ones are read on demand


class _Malformed(Exception):
    """The walker met something it does not handle; the caller falls back to pydicom."""


@dataclass
class RawHeader:
    """Raw top-level attributes of one DICOM file and where its pixel data lies.

    ``elements`` maps a tag (as an int) to its value bytes, exactly as stored (padding included).
    ``sequences`` holds the requested sequence tags that are present (their content is skipped).
    ``pixel_offset`` is the file offset of the pixel data element's tag, ``pixel_header`` the
    size of its tag + VR + length fields and ``pixel_length`` its value length (``None`` when
    encapsulated, that is of undefined length). ``truncated_at`` is set when the file ends inside an
    element before the pixel data (a truncated copy); ``elements`` then holds what came before.
    """

    path: str
    transfer_syntax: str | None
    implicit_vr: bool
    little_endian: bool
    elements: dict[int, bytes] = field(default_factory=dict)
    sequences: set[int] = field(default_factory=set)
    pixel_tag: int | None = None
    pixel_offset: int | None = None
    pixel_header: int = 0
    pixel_length: int | None = None
    file_size: int = 0
    truncated_at: int | None = None


class _Reader:
    """Buffered forward reader that knows its absolute file offset and can skip by seeking."""

    def __init__(self, handle, size: int):
        self.handle = handle
        self.size = size
        self.buffer = b""
        self.start = 0  # file offset of buffer[0]
        self.pos = 0  # absolute offset of the next byte to read

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > self.size:
            raise EOFError
        if self.pos < self.start or end > self.start + len(self.buffer):
            self.handle.seek(self.pos)
            self.buffer = self.handle.read(max(n, _CHUNK))
            self.start = self.pos
        offset = self.pos - self.start
        self.pos = end
        return self.buffer[offset : offset + n]

    def skip(self, n: int) -> None:
        if self.pos + n > self.size:
            raise EOFError
        self.pos += n


def _element_header(reader: _Reader, implicit: bool) -> tuple[int, bytes | None, int, int]:
    """Read one element header: ``(tag, vr or None, length, header size)`` (little endian)."""
    group, element = struct.unpack("<HH", reader.take(4))
    tag = (group << 16) | element
    if group == 0xFFFE:  # items and delimiters have no VR in either encoding
        (length,) = struct.unpack("<I", reader.take(4))
        return tag, None, length, 8
    if implicit:
        (length,) = struct.unpack("<I", reader.take(4))
        return tag, None, length, 8
    vr = reader.take(2)
    if not (65 <= vr[0] <= 90 and 65 <= vr[1] <= 90):
        raise _Malformed(f"invalid VR {vr!r} at offset {reader.pos - 2}")
    if vr in _LONG_VRS:
        (length,) = struct.unpack("<2xI", reader.take(6))
        return tag, vr, length, 12
    (length,) = struct.unpack("<H", reader.take(2))
    return tag, vr, length, 8


def _skip_sequence(reader: _Reader, implicit: bool) -> None:
    """Skip the items of a sequence of undefined length, up to and including its delimiter."""
    while True:
        tag, _, length, _ = _element_header(reader, implicit)
        if tag == _SEQUENCE_END:
            return
        if tag != _ITEM:
            raise _Malformed(f"expected an item, found tag {tag:08X}")
        if length != _UNDEFINED:
            reader.skip(length)
            continue
        while True:  # an item of undefined length: its elements, then the item delimiter
            tag, vr, length, _ = _element_header(reader, implicit)
            if tag == _ITEM_END:
                break
            _skip_value(reader, vr, length, implicit)


def _skip_value(reader: _Reader, vr: bytes | None, length: int, implicit: bool) -> None:
    if length != _UNDEFINED:
        reader.skip(length)
    else:  # SQ, or UN holding an implicit-VR sequence (PS3.5 6.2.2)
        _skip_sequence(reader, implicit or vr == b"UN")


_I = struct.Struct("<I").unpack_from
_EXPLICIT = struct.Struct("<HH2sH").unpack_from  # group, element, VR, short length
_IMPLICIT = struct.Struct("<HHI").unpack_from  # group, element, length
_FIRST_PIXEL_TAG = PIXEL_TAGS[0]
_VALID_VRS = {
    vr.encode() for vr in (
        "AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN UR US UT UV"
    ).split()
}


def _walk(
    reader: _Reader,
    raw: RawHeader,
    implicit: bool,
    wanted: set[int] | None,
    sequences: set[int],
    *,
    meta_group: bool = False,
) -> dict[int, bytes]:
    """The hot loop: each element header parsed with one ``unpack_from`` straight from the buffer,
    values of unwanted elements skipped by offset. Fills ``raw`` (sets ``truncated_at`` at an early
    EOF).

    With ``meta_group`` it reads the file meta group instead: every (0002,xxxx) element is kept and
    the walk stops, rewound, at the first element of another group; returns those elements.
    """
    size = reader.size
    kept: dict[int, bytes] = {}
    pos, base, buffer = reader.pos, reader.start, reader.buffer
    length_of_buffer = len(buffer)

    def stop_truncated(at: int) -> dict[int, bytes]:
        if meta_group:
            raise EOFError
        raw.truncated_at = at
        return kept

    while pos < size:
        offset = pos - base
        if offset < 0 or offset + 12 > length_of_buffer:
            reader.handle.seek(pos)
            buffer = reader.handle.read(_CHUNK)
            base, offset, length_of_buffer = pos, 0, len(buffer)
            reader.buffer, reader.start = buffer, base
        if offset + 8 > length_of_buffer:
            reader.pos = pos
            return stop_truncated(pos)
        vr = None
        if implicit:
            group, element, length = _IMPLICIT(buffer, offset)
            header_size = 8
        else:
            group, element, vr, length = _EXPLICIT(buffer, offset)
            if group == 0xFFFE:  # item or delimiter: no VR, 4-byte length
                (length,) = _I(buffer, offset + 4)
                vr = None
            elif vr in _LONG_VRS:
                if offset + 12 > length_of_buffer:
                    reader.pos = pos
                    return stop_truncated(pos)
                (length,) = _I(buffer, offset + 8)
                header_size = 12
            elif vr not in _VALID_VRS:
                raise _Malformed(f"invalid VR {vr!r} at offset {pos + 4}")
            else:
                header_size = 8
            if vr is None:
                header_size = 8
        if meta_group and group != 0x0002:
            reader.pos = pos
            return kept
        tag = (group << 16) | element
        if tag >= _FIRST_PIXEL_TAG:
            reader.pos = pos
            if tag in PIXEL_TAGS:
                raw.pixel_tag = tag
                raw.pixel_offset = pos
                raw.pixel_header = header_size
                raw.pixel_length = None if length == _UNDEFINED else length
            return kept
        value_start = pos + header_size
        if length == _UNDEFINED:
            if meta_group:
                raise _Malformed("undefined length in the file meta group")
            if tag in sequences:
                raw.sequences.add(tag)
            reader.pos = value_start
            try:
                _skip_sequence(reader, implicit or vr == b"UN")
            except EOFError:
                return stop_truncated(pos)
            pos, base, buffer = reader.pos, reader.start, reader.buffer
            length_of_buffer = len(buffer)
            continue
        end = value_start + length
        if end > size:
            reader.pos = pos
            return stop_truncated(pos)
        if meta_group or tag in wanted:  # type: ignore[operator]
            local = offset + header_size
            if local + length <= length_of_buffer:
                value = buffer[local : local + length]
            else:
                reader.pos = value_start
                value = reader.take(length)
                base, buffer = reader.start, reader.buffer
                length_of_buffer = len(buffer)
            if meta_group:
                kept[tag] = value
            else:
                raw.elements[tag] = value
        elif tag in sequences:
            raw.sequences.add(tag)
        pos = end
    reader.pos = pos
    return kept


def names_transfer_syntax(uid: str) -> bool:
    """Whether ``uid`` is a transfer syntax of the standard (pydicom raises for private UIDs)."""
    try:
        return bool(UID(uid).is_transfer_syntax)
    except ValueError:
        return False


@functools.lru_cache(maxsize=256)
def is_damaged_syntax(uid: str | None) -> bool:
    """A transfer syntax UID that is neither a standard one nor private (a damaged file meta group)."""
    if not uid:
        return False
    try:
        return not UID(uid).is_transfer_syntax
    except ValueError:  # private UIDs: pydicom cannot tell; leave them to the decoder
        return False


@functools.lru_cache(maxsize=64)
def _syntax(value: bytes) -> tuple[str, bool, bool]:
    """``(transfer syntax UID, walkable little-endian encoding?, implicit VR?)``."""
    syntax = UID(value.decode("ascii", "replace").strip(" \x00"))
    if not names_transfer_syntax(syntax):  # damaged or private: pydicom guesses, read_header reports it
        return str(syntax), False, False
    if syntax in (ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian):
        return str(syntax), False, False
    implicit = syntax == ImplicitVRLittleEndian
    return str(syntax), bool(implicit or syntax.is_little_endian or syntax.is_compressed), bool(implicit)


def scan_raw_header(
    path: str | os.PathLike, wanted: set[int], sequences: set[int] = frozenset()  # type: ignore[assignment]
) -> RawHeader | None:
    """Raw values of the ``wanted`` top-level tags of ``path``, or ``None`` to fall back to pydicom.

    Returns ``None`` for files without the ``DICM`` preamble, big-endian or deflated data sets and
    anything the walker does not understand. Raises ``OSError`` when the file cannot be opened.
    """
    path = os.fspath(path)
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        reader = _Reader(handle, size)
        try:
            if size < 132 or reader.take(132)[128:] != b"DICM":
                return None
            meta = _walk(reader, RawHeader(path, None, False, True), False, None, set(), meta_group=True)
            syntax_bytes = meta.get(0x00020010)
            if syntax_bytes is None:
                return None
            syntax, walkable, implicit = _syntax(syntax_bytes)
            if not walkable:
                return None
        except (_Malformed, EOFError, struct.error, UnicodeDecodeError):
            return None
        raw = RawHeader(path, syntax, implicit, True, file_size=size)
        try:
            _walk(reader, raw, implicit, wanted, sequences)
        except (_Malformed, struct.error):
            return None
        return raw
