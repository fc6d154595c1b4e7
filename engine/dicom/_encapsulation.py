"""Encapsulated Pixel Data (PS3.5 A.4): items, fragments, and their mapping to frames."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from engine.errors import PixelDataError
from engine.types import Encapsulation

_ITEM_HEADER = struct.Struct("<HHL")
_U32 = struct.Struct("<L")
_ITEM_TAG = b"\xfe\xff\x00\xe0"
_SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
_UNDEFINED = 0xFFFFFFFF

# Codestream signatures that open a frame: JPEG / JPEG-LS SOI, JPEG 2000 / HTJ2K SOC+SIZ, a JP2 file,
# JPEG XL codestream and container.
_FRAME_STARTS = (
    b"\xff\xd8\xff",
    b"\xff\x4f\xff\x51",
    b"\x00\x00\x00\x0cjP  \r\n\x87\n",
    b"\xff\x0a",
    b"\x00\x00\x00\x0cJXL \r\n\x87\n",
)
_EOI = b"\xff\xd9"  # JPEG EOI, JPEG-LS EOI and JPEG 2000 EOC share the code


@dataclass(frozen=True, slots=True)
class Fragments:
    """Where the items of an encapsulated value lie in a buffer (offsets of item values)."""

    bot: tuple[int, int]  # (offset, length) of the Basic Offset Table item value
    items: tuple[tuple[int, int], ...]  # (offset, length) of each fragment's value
    end: int  # offset just after the Sequence Delimitation Item


def scan_fragments(buf: bytes | memoryview, start: int, end: int) -> Fragments:
    """Walk the items of an encapsulated value that begins at `start`.

    Raises PixelDataError on a missing Basic Offset Table item, an item beyond `end`, an item of
    undefined length, a foreign tag, a missing Sequence Delimitation Item or zero fragments.
    """
    pos = start
    items: list[tuple[int, int]] = []
    while True:
        if end - pos < 8:
            raise PixelDataError(
                f"encapsulated Pixel Data truncated at offset {pos}: no Sequence Delimitation Item"
            )
        group, element, length = _ITEM_HEADER.unpack_from(buf, pos)
        if group == 0xFFFE and element == 0xE0DD:
            if length != 0:
                raise PixelDataError(f"Sequence Delimitation Item at offset {pos} has length {length}, not 0")
            pos += 8
            break
        if group != 0xFFFE or element != 0xE000:
            raise PixelDataError(
                f"encapsulated Pixel Data: expected an item tag at offset {pos}, "
                f"found ({group:04X},{element:04X})"
            )
        if length == _UNDEFINED:
            raise PixelDataError(f"encapsulated Pixel Data: item at offset {pos} has undefined length")
        if length > end - pos - 8:
            raise PixelDataError(
                f"encapsulated Pixel Data truncated: item at offset {pos} declares {length} bytes, "
                f"{end - pos - 8} remain"
            )
        items.append((pos + 8, length))
        pos += 8 + length
    if not items:
        raise PixelDataError("encapsulated Pixel Data has no Basic Offset Table item")
    if len(items) == 1:
        raise PixelDataError("encapsulated Pixel Data has zero fragments")
    return Fragments(bot=items[0], items=tuple(items[1:]), end=pos)


def _groups_from_offsets(
    offsets: Sequence[int], starts: dict[int, int], n_fragments: int
) -> tuple[int, ...] | None:
    """Fragment counts per frame from frame offsets, or None if they do not fall on fragment starts."""
    if not offsets or offsets[0] != 0:
        return None
    indices: list[int] = []
    for offset in offsets:
        index = starts.get(offset)
        if index is None or (indices and index <= indices[-1]):
            return None
        indices.append(index)
    indices.append(n_fragments)
    return tuple(b - a for a, b in zip(indices, indices[1:], strict=False))


def _groups_from_flags(flags: Sequence[bool], frames: int, opening: bool) -> tuple[int, ...] | None:
    """Fragment counts per frame when exactly `frames` fragments open (or close) a frame."""
    if sum(flags) != frames:
        return None
    counts: list[int] = []
    if opening:
        if not flags[0]:
            return None
        for flag in flags:
            if flag:
                counts.append(0)
            counts[-1] += 1
        return tuple(counts)
    if not flags[-1]:
        return None
    run = 0
    for flag in flags:
        run += 1
        if flag:
            counts.append(run)
            run = 0
    return tuple(counts)


def map_frames(
    buf: bytes | memoryview, fragments: Fragments, frames: int, extended_offset_table: bytes = b""
) -> tuple[int, ...]:
    """Number of fragments making up each frame, in order.

    One fragment per frame when the counts match; otherwise the Basic Offset Table, then the Extended
    Offset Table, then codestream start markers, then end markers decide. Raises PixelDataError when
    none of them maps the fragments onto `frames` frames.
    """
    n = len(fragments.items)
    if frames < 1:
        raise PixelDataError(f"encapsulated Pixel Data with Number of Frames {frames}")
    if frames == n:
        return (1,) * n
    if frames == 1:
        return (n,)
    if frames > n:
        raise PixelDataError(f"encapsulated Pixel Data has {n} fragments for {frames} frames")
    first_item = fragments.items[0][0] - 8
    starts = {offset - 8 - first_item: i for i, (offset, _) in enumerate(fragments.items)}
    bot_offset, bot_length = fragments.bot
    if bot_length and bot_length % 4 == 0 and bot_length // 4 == frames:
        bot = struct.unpack_from(f"<{frames}L", buf, bot_offset)
        groups = _groups_from_offsets(bot, starts, n)
        if groups is not None:
            return groups
    if len(extended_offset_table) == 8 * frames:
        eot = struct.unpack_from(f"<{frames}Q", extended_offset_table, 0)
        groups = _groups_from_offsets(eot, starts, n)
        if groups is not None:
            return groups
    opens = [bytes(buf[o : o + 12]).startswith(_FRAME_STARTS) for o, _ in fragments.items]
    groups = _groups_from_flags(opens, frames, opening=True)
    if groups is not None:
        return groups
    closes = [_closes_frame(buf, o, length) for o, length in fragments.items]
    groups = _groups_from_flags(closes, frames, opening=False)
    if groups is not None:
        return groups
    raise PixelDataError(
        f"cannot map {n} fragments onto {frames} frames: no usable offset table and the codestream "
        f"markers do not delimit {frames} frames"
    )


def _closes_frame(buf: bytes | memoryview, offset: int, length: int) -> bool:
    tail = bytes(buf[offset + max(0, length - 3) : offset + length])
    return tail.endswith(_EOI) or tail.endswith(_EOI + b"\x00")


def split_encapsulated(
    value: bytes | memoryview, frames: int, extended_offset_table: bytes = b""
) -> tuple[Encapsulation, list[bytes]]:
    """Split an encapsulated Pixel Data value into its layout and one codestream per frame.

    Each codestream is the concatenation of the frame's fragments (pad bytes included, as received).
    `join_encapsulated(layout, codestreams)` gives `value` back byte for byte. Raises PixelDataError.
    """
    found = scan_fragments(value, 0, len(value))
    counts = map_frames(value, found, frames, extended_offset_table)
    layout: list[tuple[int, ...]] = []
    codestreams: list[bytes] = []
    index = 0
    for count in counts:
        parts = found.items[index : index + count]
        index += count
        layout.append(tuple(length for _, length in parts))
        codestreams.append(b"".join(value[o : o + length] for o, length in parts))
    bot_offset, bot_length = found.bot
    encapsulation = Encapsulation(
        basic_offset_table=bytes(value[bot_offset : bot_offset + bot_length]),
        fragments_per_frame=tuple(layout),
        extended_offset_table=bytes(extended_offset_table),
        trailing=bytes(value[found.end :]),
    )
    return encapsulation, codestreams


def join_encapsulated(encapsulation: Encapsulation, frames: Sequence[bytes]) -> bytes:
    """Rebuild the exact encapsulated value `split_encapsulated` took apart.

    Raises PixelDataError if the frames do not match the recorded layout.
    """
    layout = encapsulation.fragments_per_frame
    if len(frames) != len(layout):
        raise PixelDataError(f"{len(frames)} codestreams given for a layout of {len(layout)} frames")
    bot = encapsulation.basic_offset_table
    out: list[bytes | memoryview] = [_ITEM_TAG, _U32.pack(len(bot)), bot]
    for number, (frame, lengths) in enumerate(zip(frames, layout, strict=True)):
        if len(frame) != sum(lengths):
            raise PixelDataError(
                f"frame {number} is {len(frame)} bytes, its recorded fragments total {sum(lengths)}"
            )
        view = memoryview(frame)
        position = 0
        for length in lengths:
            out += (_ITEM_TAG, _U32.pack(length), view[position : position + length])
            position += length
    out += (_SEQUENCE_DELIMITER, encapsulation.trailing)
    return b"".join(out)


def encapsulate(frames: Sequence[bytes]) -> bytes:
    """A fresh encapsulated value: one fragment per frame, each padded to even length with a zero byte.

    The Basic Offset Table is filled (so readers can seek to a frame) unless an offset would not fit
    its 32 bits, in which case it is left empty. Raises PixelDataError for no frames or an empty frame.
    """
    if not frames:
        raise PixelDataError("cannot encapsulate zero frames")
    padded = [bytes(f) + b"\x00" if len(f) % 2 else bytes(f) for f in frames]
    if any(not f for f in padded):
        raise PixelDataError("cannot encapsulate an empty frame")
    offsets = [0]
    for fragment in padded[:-1]:
        offsets.append(offsets[-1] + 8 + len(fragment))
    bot = struct.pack(f"<{len(offsets)}L", *offsets) if offsets[-1] < 2**32 else b""
    out = [_ITEM_TAG, _U32.pack(len(bot)), bot]
    for fragment in padded:
        out += (_ITEM_TAG, _U32.pack(len(fragment)), fragment)
    out.append(_SEQUENCE_DELIMITER)
    return b"".join(out)
