"""zstd of byte-shuffled little-endian pixels: the lossless codec for formats no image codec takes."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from engine.codecs._backend import DECODE_ERRORS, require
from engine.errors import CorruptDataError, NotFoundError
from engine.types import EncodedFrame

FEATURE = "zstd"
_LEVEL = 9  # a few times slower than level 3 to encode, same decode speed, a few % smaller


def shuffle(frame: npt.NDArray[np.generic]) -> bytes:
    """The little-endian bytes grouped by significance: all first bytes, then all second bytes, ..."""
    little = np.ascontiguousarray(frame, dtype=frame.dtype.newbyteorder("<"))
    planes = little.reshape(-1).view(np.uint8).reshape(-1, frame.dtype.itemsize)
    return planes.T.tobytes()


def unshuffle(data: bytes, shape: tuple[int, ...], dtype: np.dtype[np.generic]) -> npt.NDArray[np.generic]:
    """Inverse of shuffle; raises CorruptDataError if the byte count does not match shape and dtype."""
    count = int(np.prod(shape, dtype=np.int64))
    if len(data) != count * dtype.itemsize:
        raise CorruptDataError(
            f"zstd frame holds {len(data)} bytes, expected {count * dtype.itemsize} for {shape} {dtype}"
        )
    planes = np.frombuffer(data, dtype=np.uint8).reshape(dtype.itemsize, count)
    little = np.ascontiguousarray(planes.T).view(dtype.newbyteorder("<")).reshape(shape)
    return little.astype(dtype.newbyteorder("="), copy=False)


def encode(frame: npt.NDArray[np.generic], bits_stored: int | None) -> EncodedFrame:
    """Storage encode of any fixed-size numeric frame."""
    del bits_stored
    codecs = require(FEATURE)
    return EncodedFrame(data=bytes(codecs.zstd_encode(shuffle(frame), level=_LEVEL)))


def decode(data: bytes, shape: tuple[int, ...], dtype: np.dtype[np.generic], level: int) -> npt.NDArray[np.generic]:
    """Storage decode; shape and dtype come from the caller, the stream holds bytes only."""
    if level:
        raise NotFoundError("zstd frames hold one resolution; lower levels are separate arrays")
    codecs = require(FEATURE)
    try:
        raw = bytes(codecs.zstd_decode(data))
    except DECODE_ERRORS as exc:
        raise CorruptDataError(f"zstd frame does not decode: {exc}") from exc
    return unshuffle(raw, shape, dtype)
