"""DICOM RLE Lossless (PS3.5 Annex G): one PackBits segment per byte plane, most significant first."""

from __future__ import annotations

import struct

import numpy as np
import numpy.typing as npt

from engine.codecs._backend import DECODE_ERRORS, require
from engine.errors import CodecUnavailableError, CorruptDataError

FEATURE = "packbits"
_HEADER = 64
_MAX_SEGMENTS = 15


def _segments(data: bytes) -> list[bytes]:
    if len(data) < _HEADER:
        raise CorruptDataError(f"RLE frame of {len(data)} bytes is shorter than its 64-byte header")
    count, *offsets = struct.unpack_from("<16I", data)
    if not 1 <= count <= _MAX_SEGMENTS:
        raise CorruptDataError(f"RLE header declares {count} segments; 1 to 15 are allowed")
    starts = offsets[:count]
    ends = starts[1:] + [len(data)]
    if starts[0] != _HEADER or any(b < a for a, b in zip(starts, ends)) or ends[-1] > len(data):
        raise CorruptDataError(f"RLE segment offsets {starts} do not fit a {len(data)}-byte frame")
    return [data[a:b] for a, b in zip(starts, ends)]


def decode(data: bytes, shape: tuple[int, ...], dtype: np.dtype[np.generic]) -> npt.NDArray[np.generic]:
    """One RLE frame to an array of `shape` (rows, cols[, samples]) and `dtype` (native order)."""
    codecs = require(FEATURE)
    rows, cols = shape[:2]
    samples = shape[2] if len(shape) == 3 else 1
    segments = _segments(data)
    if len(segments) != samples * dtype.itemsize:
        raise CorruptDataError(
            f"RLE frame has {len(segments)} segments, expected {samples * dtype.itemsize} "
            f"for {samples} sample(s) of {dtype.itemsize} byte(s)"
        )
    pixels = rows * cols
    planes = np.empty((samples, dtype.itemsize, pixels), dtype=np.uint8)
    for index, segment in enumerate(segments):
        try:
            plane = bytes(codecs.packbits_decode(segment))
        except DECODE_ERRORS as exc:
            raise CorruptDataError(f"RLE segment {index} does not decode: {exc}") from exc
        if len(plane) < pixels:  # encoders may pad a segment; never short
            raise CorruptDataError(f"RLE segment {index} decodes to {len(plane)} bytes, expected {pixels}")
        planes[index // dtype.itemsize, index % dtype.itemsize] = np.frombuffer(plane, np.uint8, pixels)
    big = np.ascontiguousarray(planes.transpose(2, 0, 1)).view(dtype.newbyteorder(">"))
    return big.reshape(shape).astype(dtype.newbyteorder("="))


def encode(frame: npt.NDArray[np.generic]) -> bytes:
    """One frame to RLE Lossless; each row of each byte plane is its own PackBits run list (G.3.1)."""
    codecs = require(FEATURE)
    rows, cols = frame.shape[:2]
    samples = frame.shape[2] if frame.ndim == 3 else 1
    itemsize = frame.dtype.itemsize
    if samples * itemsize > _MAX_SEGMENTS:
        raise CodecUnavailableError(
            f"RLE Lossless holds at most 15 byte planes; {samples} sample(s) of {itemsize} bytes need "
            f"{samples * itemsize}"
        )
    big = np.ascontiguousarray(frame, dtype=frame.dtype.newbyteorder(">")).reshape(rows, cols, samples)
    planes = big.view(np.uint8).reshape(rows, cols, samples, itemsize)
    body = bytearray()
    offsets = []
    for sample in range(samples):
        for byte in range(itemsize):
            offsets.append(_HEADER + len(body))
            plane = planes[:, :, sample, byte]
            for row in plane:
                body += codecs.packbits_encode(row.tobytes())
            if len(body) % 2:
                body += b"\x00"  # segments are padded to an even length
    header = struct.pack("<16I", len(offsets), *offsets, *([0] * (_MAX_SEGMENTS - len(offsets))))
    return header + bytes(body)
