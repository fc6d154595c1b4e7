"""A fast walk over the top-level elements of an encoded data set, recording offsets, decoding nothing."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from engine.errors import InvalidDicomError, PixelDataError

from ._encapsulation import Fragments, scan_fragments

UNDEFINED = 0xFFFFFFFF
PIXEL_DATA = 0x7FE00010
FLOAT_PIXEL_DATA = 0x7FE00008
DOUBLE_FLOAT_PIXEL_DATA = 0x7FE00009
PIXEL_TAGS = frozenset({PIXEL_DATA, FLOAT_PIXEL_DATA, DOUBLE_FLOAT_PIXEL_DATA})
_MAX_DEPTH = 32  # sequences nested deeper than any IOD defines are hostile input, not data
_ITEM = {True: b"\xfe\xff\x00\xe0", False: b"\xff\xfe\xe0\x00"}  # (FFFE,E000) by byte order
_SQ = {True: struct.unpack("<H", b"SQ")[0], False: struct.unpack(">H", b"SQ")[0]}  # VR "SQ" as the hot loop reads it

# VRs whose explicit encoding has 2 reserved bytes and a 4-byte length (PS3.5 7.1.2).
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_SHORT_VRS = frozenset(
    {
        b"AE",
        b"AS",
        b"AT",
        b"CS",
        b"DA",
        b"DS",
        b"DT",
        b"FL",
        b"FD",
        b"IS",
        b"LO",
        b"LT",
        b"PN",
        b"SH",
        b"SL",
        b"SS",
        b"ST",
        b"TM",
        b"UI",
        b"UL",
        b"US",
    }
)
VALID_VRS = _LONG_VRS | _SHORT_VRS


@dataclass(frozen=True, slots=True)
class PixelElement:
    """Where the top-level pixel element lies: [header_offset, value_offset) header, value up to end."""

    tag: int
    vr: str  # as encoded, or the dictionary VR ("OW", "OF", "OD") for implicit VR
    header_offset: int
    value_offset: int
    end: int
    fragments: Fragments | None  # set for undefined-length (encapsulated) Pixel Data


@dataclass(frozen=True, slots=True)
class ScanResult:
    """Top-level elements of interest: tag -> (VR as encoded or "", value offset, value length)."""

    elements: dict[int, tuple[str, int, int]]
    pixel: PixelElement | None


class _Codec:
    """Struct layouts for one VR encoding / byte order."""

    __slots__ = (
        "implicit",
        "little",
        "explicit",
        "explicit_int",
        "tag_length",
        "u32",
        "long_vrs",
        "short_vrs",
    )

    def __init__(self, implicit: bool, little: bool) -> None:
        order = "<" if little else ">"
        self.implicit = implicit
        self.little = little
        self.explicit = struct.Struct(order + "HH2sH")
        self.tag_length = struct.Struct(order + "HHL")
        self.u32 = struct.Struct(order + "L")
        # The hot loop reads the VR as an integer (no bytes object per element): VR sets as integers.
        self.explicit_int = struct.Struct(order + "HHHH")
        as_int = struct.Struct(order + "H").unpack
        self.long_vrs = frozenset(as_int(vr)[0] for vr in _LONG_VRS)
        self.short_vrs = frozenset(as_int(vr)[0] for vr in _SHORT_VRS)


_CODECS = {(i, le): _Codec(i, le) for i in (True, False) for le in (True, False)}


def looks_explicit(buf: bytes | memoryview, offset: int) -> bool:
    """True if the element at `offset` carries a valid explicit VR (the heuristic every reader uses)."""
    return bytes(buf[offset + 4 : offset + 6]) in VALID_VRS


class _TooDeep(InvalidDicomError):
    """Sequences nested past _MAX_DEPTH: kept apart from misreadings so a tentative walk can tell them."""


def _check_items(buf: bytes | memoryview, start: int, stop: int, codec: _Codec, depth: int) -> None:
    """Refuse sequences nested past _MAX_DEPTH inside the defined-length value buf[start:stop].

    The value is a sequence by its VR, or (implicit VR) only looks like one. Either way only the depth
    is judged here: a value that does not read as items is left to the readers of that value, as the
    scan has always left defined-length values alone. Deep nesting would otherwise be stored and then
    break every reader that recurses (DICOM JSON, rendering) for the whole series.
    """
    if depth > _MAX_DEPTH:
        raise _TooDeep(f"sequences nested more than {_MAX_DEPTH} deep at offset {start}")
    try:
        pos = start
        while stop - pos >= 8:
            group, element, length = codec.tag_length.unpack_from(buf, pos)
            if group != 0xFFFE or element != 0xE000:
                return
            if length == UNDEFINED:
                pos = _skip_elements(buf, pos + 8, stop, codec, depth)
                continue
            item_end = pos + 8 + length
            if item_end > stop:
                return
            pos += 8
            while pos < item_end:
                tag, vr, value_offset, value_length = _header(buf, pos, item_end, codec)
                pos = _value_end(buf, tag, vr, value_offset, value_length, item_end, codec, depth)
    except _TooDeep:
        raise
    except InvalidDicomError:
        return


def _looks_like_sequence(buf: bytes | memoryview, vr: str, value_offset: int, length: int, codec: _Codec) -> bool:
    if vr == "SQ":
        return True
    return not vr and length >= 8 and buf[value_offset : value_offset + 4] == _ITEM[codec.little]


def _truncated(what: str, pos: int, need: int, have: int) -> InvalidDicomError:
    return InvalidDicomError(f"data set truncated: {what} at offset {pos} needs {need} bytes, {have} remain")


def _header(buf: bytes | memoryview, pos: int, end: int, codec: _Codec) -> tuple[int, str, int, int]:
    """(tag, VR or "", value offset, length) of the element whose header starts at `pos`."""
    if end - pos < 8:
        raise _truncated("element header", pos, 8, end - pos)
    if codec.implicit:
        group, element, length = codec.tag_length.unpack_from(buf, pos)
        return (group << 16) | element, "", pos + 8, length
    group, element, vr, length = codec.explicit.unpack_from(buf, pos)
    if group == 0xFFFE:  # item and delimiter tags carry no VR in any encoding
        length = codec.u32.unpack_from(buf, pos + 4)[0]
        return (group << 16) | element, "", pos + 8, length
    if vr in _LONG_VRS:
        if end - pos < 12:
            raise _truncated("element header", pos, 12, end - pos)
        return (group << 16) | element, vr.decode(), pos + 12, codec.u32.unpack_from(buf, pos + 8)[0]
    if vr in _SHORT_VRS:
        return (group << 16) | element, vr.decode(), pos + 8, length
    raise InvalidDicomError(
        f"element ({group:04X},{element:04X}) at offset {pos} has an invalid VR {bytes(vr)!r}"
    )


def _skip_items(buf: bytes | memoryview, pos: int, end: int, codec: _Codec, depth: int) -> int:
    """Offset after the Sequence Delimitation Item closing an undefined-length value at `pos`."""
    if depth > _MAX_DEPTH:
        raise InvalidDicomError(f"sequences nested more than {_MAX_DEPTH} deep at offset {pos}")
    while True:
        if end - pos < 8:
            raise _truncated("sequence item", pos, 8, end - pos)
        group, element, length = codec.tag_length.unpack_from(buf, pos)
        if group == 0xFFFE and element == 0xE0DD:
            return pos + 8
        if group != 0xFFFE or element != 0xE000:
            raise InvalidDicomError(
                f"expected a sequence item at offset {pos}, found ({group:04X},{element:04X})"
            )
        if length == UNDEFINED:
            pos = _skip_elements(buf, pos + 8, end, codec, depth + 1)
        elif length > end - pos - 8:
            raise _truncated("sequence item value", pos, length, end - pos - 8)
        else:
            pos += 8 + length


def _skip_elements(buf: bytes | memoryview, pos: int, end: int, codec: _Codec, depth: int) -> int:
    """Offset after the Item Delimitation Item closing an undefined-length item at `pos`."""
    while True:
        tag, vr, value_offset, length = _header(buf, pos, end, codec)
        if tag == 0xFFFEE00D:
            return value_offset
        pos = _value_end(buf, tag, vr, value_offset, length, end, codec, depth)


def _value_end(
    buf: bytes | memoryview,
    tag: int,
    vr: str,
    value_offset: int,
    length: int,
    end: int,
    codec: _Codec,
    depth: int,
) -> int:
    if length != UNDEFINED:
        if length > end - value_offset:
            raise _truncated(
                f"value of ({tag >> 16:04X},{tag & 0xFFFF:04X})", value_offset, length, end - value_offset
            )
        if _looks_like_sequence(buf, vr, value_offset, length, codec):
            _check_items(buf, value_offset, value_offset + length, codec, depth + 1)
        return value_offset + length
    if tag >> 16 == 0xFFFE:
        raise InvalidDicomError(
            f"unexpected delimiter ({tag >> 16:04X},{tag & 0xFFFF:04X}) at offset {value_offset - 8}"
        )
    # An undefined-length UN holds an implicit VR little endian sequence (PS3.5 6.2.2 note 4).
    inner = _CODECS[(True, True)] if vr == "UN" else codec
    return _skip_items(buf, value_offset, end, inner, depth + 1)


def scan_dataset(buf: bytes | memoryview, implicit: bool, little: bool, wanted: frozenset[int]) -> ScanResult:
    """Walk the top-level elements of the data set in `buf`, keeping the offsets of `wanted` tags.

    Raises InvalidDicomError for truncation or malformed elements, PixelDataError for more than one
    top-level pixel element or a malformed encapsulated value.
    """
    codec = _CODECS[(implicit, little)]
    explicit_header = codec.explicit_int.unpack_from
    long_vrs, short_vrs = codec.long_vrs, codec.short_vrs
    implicit_header = codec.tag_length.unpack_from
    u32 = codec.u32.unpack_from
    sq = -1 if implicit else _SQ[little]
    item = _ITEM[little]
    end = len(buf)
    pos = 0
    elements: dict[int, tuple[str, int, int]] = {}
    pixel: PixelElement | None = None
    previous = -1
    # The loop is inlined (rather than calling _header) because it runs for every element of every
    # instance received: this is the hot path of ingest.
    while pos < end:
        if end - pos < 8:
            raise _truncated("element header", pos, 8, end - pos)
        if implicit:
            group, element, length = implicit_header(buf, pos)
            vr = 0
            value_offset = pos + 8
        else:
            group, element, vr, length = explicit_header(buf, pos)
            if vr in long_vrs:
                if end - pos < 12:
                    raise _truncated("element header", pos, 12, end - pos)
                length = u32(buf, pos + 8)[0]
                value_offset = pos + 12
            elif vr in short_vrs or group == 0xFFFE:
                value_offset = pos + 8
            else:
                raise InvalidDicomError(
                    f"element ({group:04X},{element:04X}) at offset {pos} has an invalid VR "
                    f"{bytes(buf[pos + 4 : pos + 6])!r}"
                )
        tag = (group << 16) | element
        if group == 0xFFFE:
            raise InvalidDicomError(
                f"item or delimiter tag ({group:04X},{element:04X}) at top level, offset {pos}"
            )
        if tag <= previous:
            # A second SOP Instance UID, say, would make readers disagree on which instance this is.
            raise InvalidDicomError(
                f"element ({group:04X},{element:04X}) at offset {pos} comes after ({previous >> 16:04X},"
                f"{previous & 0xFFFF:04X}): PS3.5 7.1 wants each element once, in ascending order"
            )
        previous = tag
        if group == 0x0002:
            raise InvalidDicomError(
                f"file meta element ({group:04X},{element:04X}) at offset {pos} of the data set: PS3.10 7.1 "
                "keeps group 0002 in the file meta information"
            )
        if tag in PIXEL_TAGS:
            if pixel is not None:
                raise PixelDataError(
                    f"two top-level pixel data elements: ({pixel.tag >> 16:04X},{pixel.tag & 0xFFFF:04X}) "
                    f"and ({group:04X},{element:04X})"
                )
            pixel = _pixel_element(buf, tag, _vr_text(buf, pos, vr), pos, value_offset, length, end)
            pos = pixel.end
            continue
        if tag in wanted:
            elements[tag] = (_vr_text(buf, pos, vr), value_offset, length)
        if length != UNDEFINED and length <= end - value_offset:
            if vr == sq or (implicit and length >= 8 and buf[value_offset : value_offset + 4] == item):
                _check_items(buf, value_offset, value_offset + length, codec, 1)
            pos = value_offset + length
        else:
            pos = _value_end(buf, tag, _vr_text(buf, pos, vr), value_offset, length, end, codec, 0)
    return ScanResult(elements, pixel)


def _vr_text(buf: bytes | memoryview, pos: int, vr: int) -> str:
    return bytes(buf[pos + 4 : pos + 6]).decode("ascii") if vr else ""


def _pixel_element(
    buf: bytes | memoryview, tag: int, vr: str, pos: int, value_offset: int, length: int, end: int
) -> PixelElement:
    if not vr:
        vr = {PIXEL_DATA: "OW", FLOAT_PIXEL_DATA: "OF", DOUBLE_FLOAT_PIXEL_DATA: "OD"}[tag]
    if length == UNDEFINED:
        if tag != PIXEL_DATA:
            raise PixelDataError(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) has undefined length")
        fragments = scan_fragments(buf, value_offset, end)
        return PixelElement(tag, vr, pos, value_offset, fragments.end, fragments)
    if length > end - value_offset:
        raise _truncated("Pixel Data value", value_offset, length, end - value_offset)
    if length % 2:
        # Served back as it came, every reader would meet an odd length: DCMTK reports the file broken.
        raise PixelDataError(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) has an odd length of {length} bytes: "
                             "PS3.5 7.1.1 wants every value of even length")
    return PixelElement(tag, vr, pos, value_offset, value_offset + length, None)
