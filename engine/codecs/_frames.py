"""Storage codecs' public face: encode, verify and decode one frame (or tile) of the pixel store."""

from __future__ import annotations

import logging

import numpy as np
import numpy.typing as npt

from engine.codecs._backend import DECODE_ERRORS
from engine.codecs._levels import level_shape
from engine.codecs._registry import IMAGE_CODECS, load
from engine.errors import CodecUnavailableError, CorruptDataError, EngineError, PixelDataError, VerificationError
from engine.types import (
    CODEC_HTJ2K,
    CODEC_JPEG2K,
    CODEC_JPEGLS,
    HTJ2K_LOSSLESS_RPCL,
    JPEG2000_LOSSLESS,
    JPEGLS_LOSSLESS,
    EncodedFrame,
    PixelDescription,
)

LOGGER = logging.getLogger(__name__)

_IMAGE_DTYPES = frozenset(np.dtype(t) for t in ("u1", "i1", "u2", "i2"))
_SYNTAX_OF_CODEC = {
    CODEC_HTJ2K: HTJ2K_LOSSLESS_RPCL,
    CODEC_JPEGLS: JPEGLS_LOSSLESS,
    CODEC_JPEG2K: JPEG2000_LOSSLESS,
}


def syntax_for_codec(codec: str) -> str | None:
    """The transfer syntax a stored chunk of `codec` is a valid frame of; None if it is none."""
    return _SYNTAX_OF_CODEC.get(codec)


def frame_dtype(desc: PixelDescription) -> np.dtype[np.generic]:
    """Numpy dtype (native order) of one decoded frame; raises PixelDataError for impossible formats."""
    if desc.float_kind:
        if desc.float_kind not in (32, 64):
            raise PixelDataError(f"float pixel data of {desc.float_kind} bits does not exist")
        return np.dtype(f"f{desc.float_kind // 8}")
    if desc.bits_allocated == 1:
        return np.dtype("u1")  # bit-packed data unpacks to one byte a pixel
    if desc.bits_allocated not in (8, 16, 32):
        raise PixelDataError(f"Bits Allocated {desc.bits_allocated} is not 1, 8, 16 or 32")
    kind = "i" if desc.pixel_representation else "u"
    return np.dtype(f"{kind}{desc.bits_allocated // 8}")


def fits_bits(frame: npt.NDArray[np.generic], bits: int) -> bool:
    """Whether every value of an integer frame is one `bits` bits express (as signed for a signed dtype)."""
    if not frame.size:
        return True
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if frame.dtype.kind == "i" else (0, (1 << bits) - 1)
    return low <= int(frame.min()) and int(frame.max()) <= high


def _check_frame(frame: npt.NDArray[np.generic], codec: str) -> npt.NDArray[np.generic]:
    if frame.ndim not in (2, 3) or 0 in frame.shape:
        raise ValueError(f"a frame is (rows, cols) or (rows, cols, samples), got shape {frame.shape}")
    native = frame.astype(frame.dtype.newbyteorder("="), copy=False)
    if codec in IMAGE_CODECS and native.dtype not in _IMAGE_DTYPES:
        raise CodecUnavailableError(
            f"{codec} takes 8- or 16-bit integer pixels, not {frame.dtype}; store such frames with zstd"
        )
    if codec in IMAGE_CODECS and frame.ndim == 3 and frame.shape[2] not in (1, 3, 4):
        raise CodecUnavailableError(f"{codec} takes 1, 3 or 4 samples a pixel, not {frame.shape[2]}")
    return np.ascontiguousarray(native)


def encode_frame(frame: npt.NDArray[np.generic], codec: str, *, bits_stored: int | None = None) -> EncodedFrame:
    """Encode one frame losslessly with storage codec `codec`.

    Raises CodecUnavailableError for an unknown codec or a pixel format the codec cannot take.
    """
    return load(codec).encode(_check_frame(frame, codec), bits_stored)


def encode_verified(
    frame: npt.NDArray[np.generic], codec: str, *, bits_stored: int | None = None
) -> EncodedFrame:
    """encode_frame, then decode again and compare; raises VerificationError if they differ or the codec
    fails on the frame (CharLS refuses noise that does not fit its output buffer, for one)."""
    try:
        encoded = encode_frame(frame, codec, bits_stored=bits_stored)
    except EngineError:
        raise
    except DECODE_ERRORS as exc:
        raise VerificationError(f"{codec} cannot encode a {frame.shape} {frame.dtype} frame: {exc}") from exc
    try:
        decoded = decode_frame(encoded.data, codec, shape=frame.shape, dtype=frame.dtype)
    except CorruptDataError as exc:
        raise VerificationError(f"{codec} codestream of a {frame.shape} {frame.dtype} frame does not decode: {exc}") from exc
    if not _identical(decoded, frame):
        raise VerificationError(
            f"{codec} did not round-trip a {frame.shape} {frame.dtype} frame losslessly; nothing stored"
        )
    return encoded


def _identical(decoded: npt.NDArray[np.generic], frame: npt.NDArray[np.generic]) -> bool:
    """Bit-for-bit equality: NaN payloads and -0.0 count, as they would in the stored bytes."""
    native = frame.astype(frame.dtype.newbyteorder("="), copy=False)
    if decoded.shape != native.shape or decoded.dtype != native.dtype:
        return False
    bits = np.dtype(f"u{native.dtype.itemsize}")
    return bool(np.array_equal(np.ascontiguousarray(decoded).view(bits), np.ascontiguousarray(native).view(bits)))


def decode_frame(
    data: bytes,
    codec: str,
    *,
    shape: tuple[int, ...],
    dtype: np.dtype[np.generic] | str,
    level: int = 0,
) -> npt.NDArray[np.generic]:
    """Decode a stored frame; `shape`/`dtype` are the full-resolution frame's, `level` a reduction.

    Returns an array of level_shape(...) (plus samples) and exactly `dtype`. Raises CorruptDataError
    if the bytes do not decode to that, NotFoundError if the codestream has no such level.
    """
    target = np.dtype(dtype).newbyteorder("=")
    expected = level_shape(shape[0], shape[1], level) + tuple(shape[2:])
    result = load(codec).decode(bytes(data), tuple(shape), target, level)
    result = _to_dtype(result, target, level, codec)
    if result.shape != expected and not (result.shape == expected[:2] and expected[2:] == (1,)):
        raise CorruptDataError(f"{codec} frame decodes to shape {result.shape}, expected {expected}")
    return np.ascontiguousarray(result.reshape(expected))


def _to_dtype(
    result: npt.NDArray[np.generic], target: np.dtype[np.generic], level: int, codec: str
) -> npt.NDArray[np.generic]:
    if result.dtype == target:
        return result
    same_size = result.dtype.itemsize == target.itemsize
    if same_size and result.dtype.kind == "i" and target.kind == "u":
        # stored signed on purpose (see _htj2k.storage_view); only a reduced band may dip below 0
        if level == 0 and result.size and int(result.min()) < 0:
            raise CorruptDataError(f"{codec} frame decodes to negative values for unsigned {target} pixels")
        return np.clip(result, 0, None).view(target) if level else result.view(target)
    raise CorruptDataError(f"{codec} frame decodes to {result.dtype}, expected {target}")
