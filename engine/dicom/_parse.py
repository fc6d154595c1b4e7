"""Parsing a received data set or Part-10 file into header bytes, pixel bytes and the values we index."""

from __future__ import annotations

import logging
import struct
import zlib
from dataclasses import dataclass

from engine.errors import InvalidDicomError, InvalidUIDError, PixelDataError
from engine.types import EXPLICIT_VR_LE, IMPLICIT_VR_LE, Encapsulation, PixelDescription

from ._encapsulation import map_frames
from ._pixel import check_native_length, describe_pixels
from ._scan import PixelElement, looks_explicit, scan_dataset
from ._syntax import SyntaxInfo, syntax_info
from ._uid import validate_uid
from ._values import PIXEL_ELEMENTS, QUERY_ELEMENTS, WANTED_TAGS, ValueReader, query_values

LOGGER = logging.getLogger(__name__)

MAX_INFLATED_BYTES = 2**32  # a deflated data set inflating past 4 GiB is a zip bomb, not an image
_META_ELEMENT = struct.Struct("<HH2sH")
_U32_LE = struct.Struct("<L")


@dataclass(frozen=True, slots=True)
class ParsedInstance:
    """One instance taken apart: the exact header bytes around its pixel element, and what we index.

    header_prefix + pixel_element_header + pixel_value + header_suffix is the data set exactly as
    received (inflated, for a deflated transfer syntax).
    """

    transfer_syntax_uid: str  # the syntax the data set bytes are in (see parse_dataset)
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    instance_number: int | None
    pixel: PixelDescription | None  # None without a top-level (Float/Double Float) Pixel Data
    header_prefix: bytes
    header_suffix: bytes
    pixel_element_header: bytes
    pixel_value: memoryview | bytes
    encapsulated: bool
    query: dict[str, str]
    pixel_tag: int = 0  # 0x7FE00010, 0x7FE00008 or 0x7FE00009; 0 without pixel data
    pixel_vr: str = ""  # VR of the pixel element as encoded (dictionary VR for implicit VR)
    encapsulation: Encapsulation | None = None  # layout of encapsulated pixel data (no codestreams)
    extended_offset_table: bytes = b""  # (7FE0,0001) value, if present


def parse_part10(data: bytes | memoryview) -> ParsedInstance:
    """Parse a Part-10 file: 128-byte preamble, 'DICM', file meta information, data set.

    The transfer syntax comes from (0002,0010). Raises InvalidDicomError when the preamble, 'DICM' or
    the transfer syntax is missing, plus everything parse_dataset raises.
    """
    view = memoryview(data).cast("B")
    if len(view) < 132 or bytes(view[128:132]) != b"DICM":
        raise InvalidDicomError(
            "not a DICOM Part-10 file: no 'DICM' marker after a 128-byte preamble "
            "(a bare data set needs its transfer syntax from elsewhere)"
        )
    meta, end = _read_file_meta(view)
    raw_syntax = meta.get(0x00020010)
    if raw_syntax is None:
        raise InvalidDicomError("file meta information has no Transfer Syntax UID (0002,0010)")
    syntax = raw_syntax.decode("latin-1").rstrip("\x00 ")
    validate_uid(syntax, "Transfer Syntax UID (0002,0010)")
    parsed = parse_dataset(view[end:], syntax)
    stored = meta.get(0x00020003, b"").decode("latin-1").rstrip("\x00 ")
    if stored and stored != parsed.sop_instance_uid:
        LOGGER.warning(
            "file meta Media Storage SOP Instance UID %s differs from SOP Instance UID %s; using the latter",
            stored[:64],
            parsed.sop_instance_uid,
        )
    return parsed


def _read_file_meta(view: memoryview) -> tuple[dict[int, bytes], int]:
    """Group 0002 elements (explicit VR little endian) from offset 132, and the offset after them."""
    pos, end = 132, len(view)
    implicit = not looks_explicit(view, pos) if end - pos >= 6 else False
    meta: dict[int, bytes] = {}
    while end - pos >= 8:
        group, element, vr, length = _META_ELEMENT.unpack_from(view, pos)
        if group != 0x0002:
            break
        if implicit:
            length, header = _U32_LE.unpack_from(view, pos + 4)[0], 8
        elif vr in (b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT"):
            if end - pos < 12:
                raise InvalidDicomError(f"file meta information truncated at offset {pos}")
            length, header = _U32_LE.unpack_from(view, pos + 8)[0], 12
        else:
            header = 8
        if length > end - pos - header:
            raise InvalidDicomError(
                f"file meta element (0002,{element:04X}) at offset {pos} declares {length} bytes, "
                f"{end - pos - header} remain"
            )
        tag = (group << 16) | element
        if tag in meta:  # which one would a reader take? (DCMTK takes the first, pydicom the second)
            raise InvalidDicomError(f"file meta element (0002,{element:04X}) at offset {pos} is there twice")
        meta[tag] = bytes(view[pos + header : pos + header + length])
        pos += header + length
    return meta, pos


def _inflate(view: memoryview) -> memoryview:
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        inflated = inflater.decompress(view, MAX_INFLATED_BYTES)
    except zlib.error as exc:
        raise InvalidDicomError(f"deflated data set does not inflate: {exc}") from None
    if inflater.unconsumed_tail:
        raise InvalidDicomError(f"deflated data set inflates to more than {MAX_INFLATED_BYTES} bytes")
    if not inflater.eof:
        raise InvalidDicomError("deflated data set truncated: the deflate stream does not end")
    return memoryview(inflated)


def _actual_syntax(view: memoryview, info: SyntaxInfo) -> SyntaxInfo:
    """The syntax the bytes are in when they contradict the declared VR encoding.

    Some writers label an Implicit VR LE data set Explicit VR LE (or the reverse). The bytes are then a
    valid data set of the other syntax, so we read and record them as that: nothing is lost and the
    instance is served back under a syntax that describes its bytes. Any other contradiction (an
    encapsulated, big endian or deflated syntax over implicit VR bytes) has no valid reading: refused.
    """
    if len(view) < 6:
        return info
    explicit = looks_explicit(view, 0)
    if explicit != info.implicit_vr:
        return info
    if info.uid == EXPLICIT_VR_LE:
        LOGGER.warning("data set declared Explicit VR Little Endian is Implicit VR: read as Implicit VR")
        return syntax_info(IMPLICIT_VR_LE)
    if info.uid == IMPLICIT_VR_LE:
        LOGGER.warning("data set declared Implicit VR Little Endian is Explicit VR: read as Explicit VR")
        return syntax_info(EXPLICIT_VR_LE)
    raise InvalidDicomError(
        f"transfer syntax {info.name} requires explicit VR but the data set is encoded with implicit VR"
    )


def parse_dataset(data: bytes | memoryview, transfer_syntax_uid: str) -> ParsedInstance:
    """Parse a bare data set (no preamble, no file meta) encoded in `transfer_syntax_uid`.

    Pixel data is neither decoded nor copied: pixel_value is a view of `data` (of the inflated bytes
    for a deflated syntax). A data set declared Explicit VR LE whose bytes are Implicit VR LE (or the
    reverse) is read as what it is, and transfer_syntax_uid says so.

    Raises UnsupportedTransferSyntaxError for a syntax we do not read; InvalidDicomError for empty,
    truncated or malformed data; InvalidUIDError for a missing or malformed SOP Class, SOP Instance,
    Study or Series Instance UID; PixelDataError when the pixel attributes and data disagree.
    """
    info = syntax_info(transfer_syntax_uid)
    view = memoryview(data).cast("B")
    if info.deflated:
        view = _inflate(view)
    if not view:
        raise InvalidDicomError("empty data set")
    info = _actual_syntax(view, info)
    scan = scan_dataset(view, info.implicit_vr, info.little_endian, WANTED_TAGS)
    reader = ValueReader(view, scan, info.implicit_vr, info.little_endian)
    uids = [
        _uid(reader, keyword)
        for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
    ]
    number = _instance_number(reader)
    pixel = scan.pixel
    desc: PixelDescription | None = None
    encapsulation: Encapsulation | None = None
    eot = reader.raw(PIXEL_ELEMENTS["ExtendedOffsetTable"][0]) or b""
    if pixel is not None:
        desc = describe_pixels(reader, pixel)
        encapsulation = _check_pixel_value(view, pixel, desc, info, eot)
    return ParsedInstance(
        transfer_syntax_uid=info.uid,
        sop_class_uid=uids[0],
        sop_instance_uid=uids[1],
        study_instance_uid=uids[2],
        series_instance_uid=uids[3],
        instance_number=number,
        pixel=desc,
        header_prefix=bytes(view[: pixel.header_offset if pixel else len(view)]),
        header_suffix=bytes(view[pixel.end :]) if pixel else b"",
        pixel_element_header=bytes(view[pixel.header_offset : pixel.value_offset]) if pixel else b"",
        pixel_value=view[pixel.value_offset : pixel.end] if pixel else b"",
        encapsulated=pixel is not None and pixel.fragments is not None,
        query=query_values(reader),
        pixel_tag=pixel.tag if pixel else 0,
        pixel_vr=pixel.vr if pixel else "",
        encapsulation=encapsulation,
        extended_offset_table=eot,
    )


def _uid(reader: ValueReader, keyword: str) -> str:
    tag = QUERY_ELEMENTS[keyword][0]
    what = f"{keyword} ({tag >> 16:04X},{tag & 0xFFFF:04X})"
    value = reader.text(tag)
    if value is None:
        raise InvalidUIDError(f"{what} is missing")
    return validate_uid(value, what)


def _instance_number(reader: ValueReader) -> int | None:
    text = reader.text(QUERY_ELEMENTS["InstanceNumber"][0])
    try:
        return int(text) if text else None
    except ValueError:
        # A malformed Instance Number only costs ordering; it is no reason to refuse an instance.
        LOGGER.warning("Instance Number %r is not an integer; ignored", text[:40] if text else text)
        return None


def _check_pixel_value(
    view: memoryview, pixel: PixelElement, desc: PixelDescription, info: SyntaxInfo, eot: bytes
) -> Encapsulation | None:
    if pixel.fragments is None:
        if info.encapsulated:
            raise PixelDataError(
                f"transfer syntax {info.name} requires encapsulated Pixel Data, found native"
            )
        check_native_length(desc, pixel.end - pixel.value_offset)
        return None
    if not info.encapsulated:
        raise PixelDataError(f"transfer syntax {info.name} requires native Pixel Data, found encapsulated")
    frames = 1 if info.video else desc.frames  # a video stream is one unit, whatever its frame count
    counts = map_frames(view, pixel.fragments, frames, eot)
    layout: list[tuple[int, ...]] = []
    index = 0
    for count in counts:
        layout.append(tuple(length for _, length in pixel.fragments.items[index : index + count]))
        index += count
    bot_offset, bot_length = pixel.fragments.bot
    return Encapsulation(
        basic_offset_table=bytes(view[bot_offset : bot_offset + bot_length]),
        fragments_per_frame=tuple(layout),
        extended_offset_table=eot,
    )
