"""JPEG 2000 (OpenJPEG): lossless reversible 5/3 J2K codestreams and their decode."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from engine.codecs._backend import DECODE_ERRORS, require
from engine.codecs._levels import reversible_53_low_band
from engine.codecs._markers import parse_j2k
from engine.errors import CorruptDataError, NotFoundError
from engine.types import EncodedFrame

FEATURE = "jpeg2k"
_MAX_RESOLUTIONS = 6  # OpenJPEG's default: 5 decompositions


def resolutions_for(rows: int, cols: int) -> int:
    """Resolutions OpenJPEG accepts for this size: it refuses any whose smallest band is under 1 px."""
    fit = int(math.log2(max(1, min(rows, cols)))) + 1
    return max(1, min(_MAX_RESOLUTIONS, fit))


def encode_codestream(
    frame: npt.NDArray[np.generic], *, colour_transform: bool, bits: int | None = None
) -> bytes:
    """A raw reversible J2K codestream (no JP2 boxes: DICOM carries the codestream)."""
    codecs = require(FEATURE)
    rows, cols = frame.shape[:2]
    return bytes(
        codecs.jpeg2k_encode(
            np.ascontiguousarray(frame),
            codecformat="J2K",
            reversible=True,
            mct=colour_transform,
            resolutions=resolutions_for(rows, cols),
            bitspersample=bits,
            planar=False,
            numthreads=1,
        )
    )


def encode(frame: npt.NDArray[np.generic], bits_stored: int | None) -> EncodedFrame:
    """Storage encode: components as they are, no colour transform."""
    del bits_stored
    return EncodedFrame(data=encode_codestream(frame, colour_transform=False))


def decode_raw(data: bytes) -> npt.NDArray[np.generic]:
    """Decode a J2K codestream (also HTJ2K: OpenJPEG >= 2.5 reads both)."""
    codecs = require(FEATURE)
    try:
        result: npt.NDArray[np.generic] = codecs.jpeg2k_decode(data, planar=False, numthreads=1)
        return result
    except DECODE_ERRORS as exc:
        raise CorruptDataError(f"JPEG 2000 codestream does not decode: {exc}") from exc


def decode(data: bytes, shape: tuple[int, ...], dtype: np.dtype[np.generic], level: int) -> npt.NDArray[np.generic]:
    """Storage decode; imagecodecs' OpenJPEG cannot skip resolutions, so level k is computed exactly."""
    del shape, dtype
    full = decode_raw(data)
    if not level:
        return full
    decompositions = parse_j2k(data).decompositions
    if level > decompositions:
        raise NotFoundError(f"JPEG 2000 codestream has {decompositions} reduced levels, not {level}")
    return reversible_53_low_band(full, level)
