"""Native (uncompressed) Pixel Data as numpy frames, and the exact inverse."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from engine.errors import PixelDataError
from engine.types import PixelDescription

from ._pixel import SUBSAMPLED_422, native_length
from ._syntax import syntax_info

if TYPE_CHECKING:
    from ._parse import ParsedInstance


def frame_dtype(desc: PixelDescription, little_endian: bool = True) -> np.dtype[np.generic] | None:
    """The numpy dtype of one sample in the given byte order, None when no dtype expresses it."""
    order = "<" if little_endian else ">"
    if desc.float_kind:
        return np.dtype(f"{order}f{desc.float_kind // 8}")
    if desc.bits_allocated not in (8, 16, 32, 64):
        return None
    kind = "i" if desc.pixel_representation else "u"
    return np.dtype(f"{order}{kind}{desc.bits_allocated // 8}")


def _expressible(desc: PixelDescription) -> bool:
    subsampled = desc.samples_per_pixel == 3 and desc.photometric in SUBSAMPLED_422
    return frame_dtype(desc) is not None and not subsampled


def _words_swapped(desc: PixelDescription, little_endian: bool, pixel_vr: str) -> bool:
    # 8-bit samples encoded as OW in big endian sit byte-swapped inside 16-bit words (PS3.5 A.3).
    return not little_endian and desc.bits_allocated == 8 and pixel_vr == "OW"


def _swap_pairs(data: bytes | memoryview) -> bytes:
    array = np.frombuffer(data, dtype="u1", count=len(data) // 2 * 2)
    swapped = array.reshape(-1, 2)[:, ::-1].tobytes()
    return swapped + bytes(data[len(array) :])


def _logical_value(parsed: ParsedInstance) -> bytes | memoryview:
    """The native value with samples in stream order (undoes the 8-bit OW big endian word swap)."""
    desc = parsed.pixel
    little = syntax_info(parsed.transfer_syntax_uid).little_endian
    if desc is not None and _words_swapped(desc, little, parsed.pixel_vr):
        return _swap_pairs(parsed.pixel_value)
    return parsed.pixel_value


def native_frames(parsed: ParsedInstance) -> list[npt.NDArray[np.generic]] | None:
    """Native pixel data as one array per frame, native byte order, shape desc.frame_shape.

    Views of parsed.pixel_value where the bytes allow it (little endian, interleaved); planar
    configuration 1 comes back as a transposed (non-contiguous) view; big endian data is copied.
    None for encapsulated data, no pixel data, or layouts no whole-frame dtype expresses (1-bit,
    YBR_*_422 subsampled, bit-packed 12/24-bit).
    """
    desc = parsed.pixel
    if desc is None or parsed.encapsulated or not _expressible(desc):
        return None
    little = syntax_info(parsed.transfer_syntax_uid).little_endian
    dtype = frame_dtype(desc, little)
    assert dtype is not None  # _expressible checked it
    count = desc.frames * desc.rows * desc.columns * desc.samples_per_pixel
    array = np.frombuffer(_logical_value(parsed), dtype=dtype, count=count)
    if not dtype.isnative:
        array = array.astype(dtype.newbyteorder("="))
    if desc.samples_per_pixel > 1 and desc.planar_configuration == 1:
        planes = array.reshape(desc.frames, desc.samples_per_pixel, desc.rows, desc.columns)
        return list(planes.transpose(0, 2, 3, 1))
    return list(array.reshape((desc.frames, *desc.frame_shape)))


def unpacked_frames(value: bytes | memoryview, desc: PixelDescription, transfer_syntax_uid: str
                    ) -> list[npt.NDArray[np.uint8]] | None:
    """Frames of a packed native value (kept byte for byte as the raw layout) as 8-bit arrays, or None.

    1-bit data (PS3.5 8.1.1: bits fill each byte from the least significant, across frame boundaries)
    becomes 0 / 1 per pixel; YBR_FULL_422 and YBR_PARTIAL_422 (PS3.3 C.7.6.3.1.2: Y1 Y2 Cb Cr for each
    pair of pixels of a row) become full-resolution YBR, each chroma sample given to both pixels.
    Other packings (12-bit, big endian words) give None: they are only served whole.
    """
    if not syntax_info(transfer_syntax_uid).little_endian:
        return None
    count = desc.frames * desc.rows * desc.columns
    raw = np.frombuffer(value, dtype=np.uint8)
    if desc.bits_allocated == 1 and desc.samples_per_pixel == 1 and len(raw) * 8 >= count:
        bits = np.unpackbits(raw, bitorder="little", count=count)
        return list(bits.reshape(desc.frames, desc.rows, desc.columns))
    subsampled = desc.samples_per_pixel == 3 and desc.photometric in SUBSAMPLED_422
    if subsampled and desc.bits_allocated == 8 and desc.columns % 2 == 0 and len(raw) >= count * 2:
        pairs = raw[: count * 2].reshape(desc.frames, desc.rows, desc.columns // 2, 4)
        luma = pairs[..., :2].reshape(desc.frames, desc.rows, desc.columns)
        chroma = np.repeat(pairs[..., 2:], 2, axis=2)  # (frames, rows, columns, 2): Cb, Cr
        return list(np.concatenate([luma[..., None], chroma], axis=3))
    return None


def native_tail(parsed: ParsedInstance) -> bytes:
    """The bytes of a native Pixel Data value after its last frame (the pad byte, usually none)."""
    if parsed.pixel is None or parsed.encapsulated:
        return b""
    return bytes(_logical_value(parsed)[native_length(parsed.pixel) :])


def native_pixel_value(
    frames: Iterable[npt.NDArray[np.generic]],
    desc: PixelDescription,
    transfer_syntax_uid: str,
    tail: bytes = b"",
    pixel_vr: str = "",
) -> bytearray:
    """The native Pixel Data value of `frames` in the byte order of `transfer_syntax_uid`, plus `tail`.

    The exact inverse of native_frames (with tail = native_tail(parsed) and pixel_vr = parsed.pixel_vr;
    pixel_vr only matters for 8-bit OW big endian data). Planar configuration 1 is restored.
    Raises PixelDataError for a frame count, shape or dtype that does not match `desc`.
    """
    value = bytearray(native_length(desc) + len(tail))
    write_native_value(memoryview(value), frames, desc, transfer_syntax_uid, tail, pixel_vr)
    return value


def write_native_value(
    out: memoryview,
    frames: Iterable[npt.NDArray[np.generic]],
    desc: PixelDescription,
    transfer_syntax_uid: str,
    tail: bytes = b"",
    pixel_vr: str = "",
) -> None:
    """Write what native_pixel_value returns into `out`, which must be exactly that long.

    Each frame is copied to its place as it comes, so `frames` may decode them one at a time: a retrieve
    builds a whole data set in one buffer without holding every frame twice, and numpy's copy releases
    the GIL where joining bytes would hold it.
    """
    info = syntax_info(transfer_syntax_uid)
    if info.encapsulated:
        raise PixelDataError(f"transfer syntax {info.name} has no native Pixel Data")
    dtype = frame_dtype(desc, info.little_endian)
    if dtype is None or not _expressible(desc):
        raise PixelDataError(f"{desc.bits_allocated}-bit {desc.photometric} data has no frame dtype")
    if len(out) != native_length(desc) + len(tail):
        raise PixelDataError(f"{desc.frames} frames and a {len(tail)}-byte tail take "
                             f"{native_length(desc) + len(tail)} bytes, not {len(out)}")
    frame_bytes = native_length(desc) // desc.frames if desc.frames else 0
    count = 0
    for number, frame in enumerate(frames):
        array = np.asarray(frame)
        if array.shape != desc.frame_shape or array.dtype.newbyteorder("=") != dtype.newbyteorder("="):
            raise PixelDataError(
                f"frame {number} is {array.dtype}{array.shape}, expected {dtype.newbyteorder('=')}{desc.frame_shape}"
            )
        if number >= desc.frames:
            raise PixelDataError(f"more frames given than the {desc.frames} the description says")
        place = np.frombuffer(out, dtype=dtype, count=frame_bytes // dtype.itemsize, offset=number * frame_bytes)
        if desc.samples_per_pixel > 1 and desc.planar_configuration == 1:
            place = place.reshape(desc.samples_per_pixel, desc.rows, desc.columns).transpose(1, 2, 0)
        else:
            place = place.reshape(desc.frame_shape)
        np.copyto(place, array, casting="equiv")  # into `out`: both reshapes above are views
        count += 1
    if count != desc.frames:
        raise PixelDataError(f"{count} frames given, the description says {desc.frames}")
    out[len(out) - len(tail):] = tail
    if _words_swapped(desc, info.little_endian, pixel_vr):
        pairs = np.frombuffer(out, dtype="u1", count=len(out) // 2 * 2).reshape(-1, 2)
        pairs[:] = pairs[:, ::-1].copy()
