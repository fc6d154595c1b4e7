"""Parsing of codestream markers: JPEG 2000 SIZ/COD/SOT and the SPIFF header of JPEG-LS."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from engine.errors import CorruptDataError

_SOC = 0xFF4F
_SIZ = 0xFF51
_COD = 0xFF52
_SOT = 0xFF90
_SOD = 0xFF93
_EOC = 0xFFD9

PROGRESSION_NAMES = ("LRCP", "RLCP", "RPCL", "PCRL", "CPRL")


@dataclass(frozen=True, slots=True)
class J2kHeader:
    """What the main header of a JPEG 2000 codestream says, as far as the engine cares."""

    rows: int
    columns: int
    components: int
    precision: int  # bits of component 0
    signed: bool
    progression: str
    decompositions: int
    multiple_component_transform: bool
    reversible: bool
    tile_part_offsets: tuple[int, ...]  # byte offset of every SOT marker, in codestream order


def _u16(data: bytes, pos: int) -> int:
    if pos + 2 > len(data):
        raise CorruptDataError(f"JPEG 2000 codestream ends inside a marker at byte {pos}")
    value: int = struct.unpack_from(">H", data, pos)[0]
    return value


def _parse_siz(data: bytes, pos: int) -> tuple[int, int, int, int, bool]:
    xsiz, ysiz, x0, y0 = struct.unpack_from(">IIII", data, pos + 6)
    components = _u16(data, pos + 38)
    ssiz = data[pos + 40]
    return ysiz - y0, xsiz - x0, components, (ssiz & 0x7F) + 1, bool(ssiz & 0x80)


def parse_j2k(data: bytes) -> J2kHeader:
    """Read the main header and walk the tile-parts; raises CorruptDataError if the markers are broken."""
    if _u16(data, 0) != _SOC:
        raise CorruptDataError("not a JPEG 2000 codestream: it does not start with the SOC marker")
    pos = 2
    siz: tuple[int, int, int, int, bool] | None = None
    cod: tuple[str, int, bool, bool] | None = None
    while True:
        marker = _u16(data, pos)
        if marker == _SOT:
            break
        length = _u16(data, pos + 2)
        if pos + 2 + length > len(data) or length < 2:
            raise CorruptDataError(f"JPEG 2000 marker {marker:#06x} at byte {pos} overruns the codestream")
        if marker == _SIZ:
            siz = _parse_siz(data, pos)
        elif marker == _COD:
            order = data[pos + 5]
            name = PROGRESSION_NAMES[order] if order < len(PROGRESSION_NAMES) else f"unknown({order})"
            cod = (name, data[pos + 9], bool(data[pos + 8]), data[pos + 13] == 1)
        pos += 2 + length
    if siz is None or cod is None:
        raise CorruptDataError("JPEG 2000 main header lacks its SIZ or COD marker")
    return J2kHeader(*siz, *cod, _tile_parts(data, pos))


def _tile_parts(data: bytes, pos: int) -> tuple[int, ...]:
    offsets: list[int] = []
    while pos < len(data):
        marker = _u16(data, pos)
        if marker == _EOC:
            break
        if marker != _SOT:
            raise CorruptDataError(f"expected a SOT marker at byte {pos} of the JPEG 2000 codestream")
        psot: int = struct.unpack_from(">I", data, pos + 6)[0] if pos + 10 <= len(data) else 0
        offsets.append(pos)
        if psot == 0:  # the last tile-part runs to the end of the codestream
            break
        pos += psot
    return tuple(offsets)


def ends_whole(data: bytes, padding: bytes) -> bool:
    """Whether a codestream ends with its end marker (JPEG and JPEG-LS EOI, JPEG 2000 EOC: all FFD9) once the
    `padding` bytes after it are set aside: one cut short does not, and decoders fill in what is missing."""
    return data.rstrip(padding).endswith(_EOC.to_bytes(2, "big"))


def strip_spiff(data: bytes) -> bytes:
    """Drop a SPIFF header (APP8 'SPIFF' ... end-of-directory, SOI) from a JPEG-LS codestream.

    DICOM codestreams carry their parameters in the DICOM header, and other encoders write none.
    """
    if data[2:4] != b"\xff\xe8" or data[6:12] != b"SPIFF\x00":
        return data
    end_of_directory = data.find(b"\xff\xe8\x00\x08\x00\x00\x00\x01\xff\xd8")
    if end_of_directory < 0:
        return data
    return data[:2] + data[end_of_directory + 10 :]


# JPEG start-of-frame markers (ITU T.81 B.1.1.3, SOF0..SOF15 less DHT, JPG and DAC) and JPEG-LS's SOF55.
_JPEG_SOF = frozenset({*range(0xFFC0, 0xFFD0)} - {0xFFC4, 0xFFC8, 0xFFCC} | {0xFFF7})
_JPEG_SOS = 0xFFDA
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"  # the JP2 file format's first box (ISO 15444-1 I.5.1)


def declared_size(data: bytes) -> tuple[int, int] | None:
    """(rows, columns) a JPEG, JPEG-LS or JPEG 2000 codestream's header declares, before anything is decoded;
    None when it declares none there (a height left to a DNL marker, a broken header).

    A decoder allocates what the codestream declares: a few bytes that claim 30000 x 30000 would take
    gigabytes before the frame could be found not to match its DICOM header.
    """
    start = 0
    if data[:12] == _JP2_SIGNATURE:  # DICOM wants the bare codestream, but decoders take the JP2 file too
        start = data.find(b"jp2c") + 4
    if data[start : start + 4] == b"\xff\x4f\xff\x51" and len(data) >= start + 43:  # SOC, SIZ (15444-1 A.5.1)
        rows, columns, *_ = _parse_siz(data, start + 2)
        return rows, columns
    if data[:2] != b"\xff\xd8":
        return None
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = (data[pos] << 8) | data[pos + 1]
        if marker == 0xFFFF:  # fill byte before a marker
            pos += 1
            continue
        if marker == _JPEG_SOS:
            return None
        length = (data[pos + 2] << 8) | data[pos + 3]
        if marker in _JPEG_SOF and pos + 9 <= len(data):
            rows, columns = struct.unpack_from(">HH", data, pos + 5)
            return (rows, columns) if rows else None
        pos += 2 + length
    return None
