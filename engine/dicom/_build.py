"""Rebuilding data sets and Part-10 files from stored header bytes and pixel values."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping
from io import BytesIO

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import correct_ambiguous_vr, write_dataset

from engine import __version__
from engine.errors import InvalidDicomError, PixelDataError

from ._syntax import SyntaxInfo, syntax_info
from ._uid import validate_uid

# pacs-engine's implementation class UID: a UUID-derived UID under the 2.25 root (PS3.5 B.2), which
# needs no registration. Fixed forever; the version name below tells releases apart.
IMPLEMENTATION_CLASS_UID = "2.25.124295124319001396049670434738574884693"
IMPLEMENTATION_VERSION_NAME = f"PACSENGINE_{__version__}"[:16]

_EXTENDED_OFFSET_TAGS = (0x7FE00001, 0x7FE00002)  # describe the old encapsulation: never carried over
_SWAP_WIDTH = {"OW": 2, "OL": 4, "OF": 4, "OD": 8, "OV": 8}  # binary VRs whose bytes follow byte order
_ITEM_TAG = b"\xfe\xff\x00\xe0"

PIXEL_DATA = 0x7FE00010
_TRAILING_PADDING = 0xFFFCFFFC
_FLOAT_PIXEL_VR = {0x7FE00008: b"OF", 0x7FE00009: b"OD"}


def deflate(data: bytes | bytearray) -> bytes:
    """Raw deflate (no zlib header), as the Deflated Explicit VR Little Endian syntax requires, padded to an
    even length with a NUL after the stream's end (PS3.5 A.5: a peer refuses an odd-length message)."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    out = compressor.compress(data) + compressor.flush()
    return out + b"\x00" if len(out) % 2 else out


def assemble_dataset(
    header_prefix: bytes,
    pixel_element_header: bytes,
    pixel_value: bytes | memoryview,
    header_suffix: bytes,
    transfer_syntax_uid: str,
) -> bytes:
    """The data set in the syntax it was received in, byte for byte (re-deflated for deflated syntaxes).

    The result is what travels on the wire for that syntax. Raises UnsupportedTransferSyntaxError.
    """
    info = syntax_info(transfer_syntax_uid)
    data = b"".join((header_prefix, pixel_element_header, pixel_value, header_suffix))
    return deflate(data) if info.deflated else data


DECODE_ERRORS = (ValueError, KeyError, TypeError, EOFError, NotImplementedError)  # pydicom's, on bad values


def read_header(
    header_prefix: bytes, header_suffix: bytes, transfer_syntax_uid: str, *, decode: bool = True
) -> tuple[Dataset, Dataset]:
    """The header bytes before and after the pixel element as pydicom data sets, every value decoded
    (with `decode=False`, values stay raw until read: the caller decodes them and handles the errors).

    Raises InvalidDicomError if pydicom cannot read them.
    """
    info = syntax_info(transfer_syntax_uid)
    try:
        before = read_dataset(BytesIO(header_prefix), info.implicit_vr, info.little_endian)
        charset = before.get("SpecificCharacterSet") or "ISO_IR 6"
        after = read_dataset(
            BytesIO(header_suffix), info.implicit_vr, info.little_endian, parent_encoding=charset
        )
        if decode:
            for dataset in (before, after):
                decode_all(dataset)
    except DECODE_ERRORS as exc:
        raise InvalidDicomError(f"header cannot be decoded: {exc}") from None
    return before, after


def header_content(header_prefix: bytes, header_suffix: bytes, transfer_syntax_uid: str) -> dict[int, object]:
    """The header as {tag: value}, a sequence as a list of such dicts: what two encodings of one data set
    (other transfer syntaxes, explicit or implicit VR) have in common. Group 7FE0 (the pixel elements and
    the offset tables of an encapsulation) and Data Set Trailing Padding (PS3.10 7.2: no meaning, any
    writer may drop it) are left out. Raises InvalidDicomError if pydicom cannot read it."""
    before, after = read_header(header_prefix, header_suffix, transfer_syntax_uid)
    return {**_content(before), **_content(after)}


def _content(dataset: Dataset) -> dict[int, object]:
    return {
        int(element.tag): [_content(item) for item in element.value] if element.VR == "SQ" else element.value
        for element in dataset
        if element.tag >> 16 != 0x7FE0 and element.tag != _TRAILING_PADDING
    }


def decode_all(dataset: Dataset) -> None:
    """Convert every raw element in place (pydicom's errors propagate), so later passes see the same objects."""
    for element in dataset:
        if element.VR == "SQ":
            for item in element.value:
                decode_all(item)


def swap_binary_values(dataset: Dataset) -> None:
    """Reverse the byte order of OW/OL/OF/OD/OV values, which pydicom keeps as raw bytes."""
    for element in dataset:
        if element.VR == "SQ":
            for item in element.value:
                swap_binary_values(item)
            continue
        width = _SWAP_WIDTH.get(element.VR)
        if width and isinstance(element.value, bytes) and len(element.value) % width == 0:
            raw = element.value
            element.value = b"".join(raw[i : i + width][::-1] for i in range(0, len(raw), width))


def _encode(dataset: Dataset, info: SyntaxInfo, charset: str | list[str]) -> bytes:
    out = DicomBytesIO()
    out.is_implicit_VR = info.implicit_vr
    out.is_little_endian = info.little_endian
    write_dataset(out, dataset, charset)
    return out.getvalue()


def _pixel_element_header(
    pixel_tag: int, bits_allocated: int, info: SyntaxInfo, length: int, encapsulated: bool
) -> bytes:
    order = "<" if info.little_endian else ">"
    tag = struct.pack(order + "HH", pixel_tag >> 16, pixel_tag & 0xFFFF)
    if encapsulated:
        return tag + b"OB\x00\x00\xff\xff\xff\xff"
    if info.implicit_vr:
        return tag + struct.pack(order + "L", length)
    vr = _FLOAT_PIXEL_VR.get(pixel_tag, b"OW" if bits_allocated > 8 else b"OB")
    return tag + vr + b"\x00\x00" + struct.pack(order + "L", length)


def reencode_dataset(
    header_prefix: bytes,
    header_suffix: bytes,
    source_syntax_uid: str,
    target_syntax_uid: str,
    *,
    pixel_value: bytes | bytearray | None = None,
    encapsulated: bool | None = None,
    updates: Mapping[str, object] | None = None,
    pixel_tag: int = PIXEL_DATA,
) -> bytes:
    """The data set in `target_syntax_uid`: the header re-encoded by pydicom, then a new pixel element.

    `pixel_value` is the value in the target syntax: native bytes in its byte order (padded here to
    even length) or an encapsulated value (see encapsulate); None for an instance without pixel data.
    `encapsulated` defaults to what the target syntax needs and must agree with it. A native element is
    OW when Bits Allocated (after updates) is above 8, else OB; OF/OD for `pixel_tag` (7FE0,0008) /
    (7FE0,0009). `updates` maps a keyword to its new value, None deleting it (e.g.
    PhotometricInterpretation "RGB" after decoding a YBR JPEG); they apply to the elements before the
    pixel element. The source's Extended Offset Table is dropped: it described the old encapsulation.
    Deflated targets come back deflated (what travels on the wire).
    Raises UnsupportedTransferSyntaxError, InvalidDicomError, PixelDataError.
    """
    source = syntax_info(source_syntax_uid)
    target = syntax_info(target_syntax_uid)
    if pixel_value is not None:
        encapsulated = target.encapsulated if encapsulated is None else encapsulated
        if encapsulated != target.encapsulated:
            kind = "an encapsulated" if target.encapsulated else "a native"
            raise PixelDataError(f"transfer syntax {target.name} needs {kind} Pixel Data value")
        if encapsulated and bytes(pixel_value[:4]) != _ITEM_TAG:
            raise PixelDataError("an encapsulated Pixel Data value must start with an item tag")
    if pixel_value is not None and encapsulated and not updates and _same_header_encoding(source, target, header_prefix):
        # Explicit VR little endian to an encapsulated explicit little endian syntax: the header elements
        # are encoded the same, so they are reused as they are; re-encoding them with pydicom cost ~3 ms
        # an instance and made retrieval in the stored syntax slower than decoding to explicit VR.
        header = _pixel_element_header(pixel_tag, 8, target, len(pixel_value), True)
        return b"".join((header_prefix, header, pixel_value, header_suffix))
    if pixel_value is not None and not encapsulated and len(pixel_value) % 2:
        pixel_value = bytes(pixel_value) + b"\x00"
    head, tail = reencoded_around_pixels(
        header_prefix, header_suffix, source_syntax_uid, target_syntax_uid, updates=updates, pixel_tag=pixel_tag,
        value_length=None if pixel_value is None else len(pixel_value), encapsulated=bool(encapsulated),
    )
    data = b"".join((head, pixel_value or b"", tail))
    return deflate(data) if target.deflated else data


def reencoded_around_pixels(
    header_prefix: bytes,
    header_suffix: bytes,
    source_syntax_uid: str,
    target_syntax_uid: str,
    *,
    value_length: int | None,
    encapsulated: bool = False,
    updates: Mapping[str, object] | None = None,
    pixel_tag: int = PIXEL_DATA,
) -> tuple[bytes, bytes]:
    """What reencode_dataset puts around a pixel value of `value_length` bytes (even; None: no pixel
    element): (the header before it, the pixel element's own header included; the header after it).

    Lets a caller build the data set in one buffer and write the value into its place. Neither part is
    deflated: a deflated target's data set is deflated whole once the value is in. Raises as
    reencode_dataset does.
    """
    source = syntax_info(source_syntax_uid)
    target = syntax_info(target_syntax_uid)
    before, after = read_header(header_prefix, header_suffix, source_syntax_uid)
    for tag in _EXTENDED_OFFSET_TAGS:
        if tag in before:
            del before[tag]
    _apply_updates(before, updates or {})
    if source.little_endian != target.little_endian:
        for dataset in (before, after):
            correct_ambiguous_vr(dataset, target.little_endian)
            swap_binary_values(dataset)
    charset = before.get("SpecificCharacterSet") or "ISO_IR 6"
    head = _encode(before, target, charset)
    if value_length is not None:
        bits_allocated = int(before.get("BitsAllocated", 16) or 16)
        head += _pixel_element_header(pixel_tag, bits_allocated, target, value_length, encapsulated)
    return head, _encode(after, target, charset)


# (7FE0,0000) group length and the Extended Offset Table (7FE0,0001/0002), explicit VR little endian:
# they describe the old pixel element, so a header holding any of them takes the re-encoding path.
_PIXEL_GROUP_TAGS = (b"\xe0\x7f\x00\x00", b"\xe0\x7f\x01\x00", b"\xe0\x7f\x02\x00")


def _same_header_encoding(source: SyntaxInfo, target: SyntaxInfo, header_prefix: bytes) -> bool:
    explicit_le = (
        not source.implicit_vr and source.little_endian and not source.deflated
        and not target.implicit_vr and target.little_endian and not target.deflated
    )  # fmt: skip
    return explicit_le and not any(tag in header_prefix for tag in _PIXEL_GROUP_TAGS)


def _apply_updates(dataset: Dataset, updates: Mapping[str, object]) -> None:
    for keyword, value in updates.items():
        if tag_for_keyword(keyword) is None:
            raise InvalidDicomError(f"cannot update {keyword!r}: not a DICOM keyword")
        if value is None:
            if keyword in dataset:
                delattr(dataset, keyword)
            continue
        try:
            setattr(dataset, keyword, value)
        except (ValueError, TypeError) as exc:
            raise InvalidDicomError(f"cannot set {keyword} to {value!r}: {exc}") from None


def _meta_element(element: int, vr: bytes, value: bytes) -> bytes:
    if vr == b"OB":
        return struct.pack("<HH2sHL", 0x0002, element, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value


def _padded(text: str, pad: bytes) -> bytes:
    raw = text.encode("ascii")
    return raw + pad if len(raw) % 2 else raw


def part10(
    dataset: bytes | bytearray,
    transfer_syntax_uid: str,
    sop_class_uid: str,
    sop_instance_uid: str,
    source_ae: str | None = None,
) -> bytes:
    """A Part-10 file: 128 zero bytes, 'DICM', file meta information (group length computed), data set.

    `dataset` is the data set as encoded for `transfer_syntax_uid`, i.e. already deflated for a
    deflated syntax (what assemble_dataset / reencode_dataset return). Raises InvalidUIDError,
    UnsupportedTransferSyntaxError, InvalidDicomError (an AE title that is not 1-16 printable characters).
    """
    syntax_info(transfer_syntax_uid)
    elements = [
        _meta_element(0x0001, b"OB", b"\x00\x01"),
        _meta_element(0x0002, b"UI", _padded(validate_uid(sop_class_uid, "SOP Class UID"), b"\x00")),
        _meta_element(0x0003, b"UI", _padded(validate_uid(sop_instance_uid, "SOP Instance UID"), b"\x00")),
        _meta_element(0x0010, b"UI", _padded(transfer_syntax_uid, b"\x00")),
        _meta_element(0x0012, b"UI", _padded(IMPLEMENTATION_CLASS_UID, b"\x00")),
        _meta_element(0x0013, b"SH", _padded(IMPLEMENTATION_VERSION_NAME, b" ")),
    ]
    if source_ae is not None:
        title = source_ae.strip()
        if not 1 <= len(title) <= 16 or not all(" " <= c <= "~" and c != "\\" for c in title):
            raise InvalidDicomError(f"Source AE Title {source_ae[:40]!r} is not 1-16 printable characters")
        elements.append(_meta_element(0x0016, b"AE", _padded(title, b" ")))
    body = b"".join(elements)
    group_length = struct.pack("<HH2sHL", 0x0002, 0x0000, b"UL", 4, len(body))
    return b"".join((bytes(128), b"DICM", group_length, body, dataset))
