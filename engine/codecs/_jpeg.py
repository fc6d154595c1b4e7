"""JPEG (libjpeg-turbo; jpegsof3 as fallback): baseline/extended and lossless decode, lossless encode."""

from __future__ import annotations

import logging
import struct

import numpy as np
import numpy.typing as npt

from engine.codecs._backend import DECODE_ERRORS, require
from engine.errors import CodecUnavailableError, CorruptDataError

LOGGER = logging.getLogger(__name__)

FEATURE = "jpeg8"
_APP14 = 0xFFEE


def _adobe_transform(data: bytes) -> int | None:
    """The Adobe APP14 colour transform flag (0 none, 1 YCbCr), or None without that marker."""
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker, length = struct.unpack_from(">HH", data, pos)
        if marker == _APP14 and data[pos + 4 : pos + 9] == b"Adobe" and pos + 15 <= len(data):
            return data[pos + 15]
        if marker in (0xFFDA, 0xFFD9):
            break
        pos += 2 + length
    return None


def decode(data: bytes, photometric: str) -> npt.NDArray[np.generic]:
    """Decode any JPEG process DICOM uses; colour comes back RGB, as pydicom returns it.

    RGB-labelled codestreams are decoded without a colour transform unless the Adobe marker asks for one.
    """
    codecs = require(FEATURE)
    colourspace = None
    if photometric == "RGB" and _adobe_transform(data) != 1:
        colourspace = "RGB"
    try:
        result: npt.NDArray[np.generic] = codecs.jpeg8_decode(
            data, colorspace=colourspace, outcolorspace=colourspace
        )
        return result
    except DECODE_ERRORS as exc:
        LOGGER.debug("libjpeg-turbo could not decode a JPEG codestream (%s); trying jpegsof3", exc)
        first = exc
    try:
        fallback: npt.NDArray[np.generic] = np.ascontiguousarray(require("jpegsof3").jpegsof3_decode(data))
        return fallback
    except DECODE_ERRORS as exc:
        raise CorruptDataError(f"JPEG codestream does not decode: {first}; {exc}") from exc


def encode_lossless(frame: npt.NDArray[np.generic], bits: int, predictor: int = 1) -> bytes:
    """Lossless JPEG (Process 14) with the given selection value; unsigned pixels of `bits` precision."""
    codecs = require(FEATURE)
    if frame.dtype.kind != "u" or not 2 <= bits <= 16:
        raise CodecUnavailableError(
            f"lossless JPEG codes unsigned samples of 2 to 16 bits, not {frame.dtype} at {bits} bits"
        )
    colourspace = "RGB" if frame.ndim == 3 and frame.shape[2] == 3 else None
    try:
        return bytes(
            codecs.jpeg8_encode(
                np.ascontiguousarray(frame),
                lossless=True,
                predictor=predictor,
                bitspersample=bits,
                colorspace=colourspace,
                outcolorspace=colourspace,
            )
        )
    except DECODE_ERRORS as exc:
        raise CodecUnavailableError(f"libjpeg-turbo cannot code this frame losslessly: {exc}") from exc
