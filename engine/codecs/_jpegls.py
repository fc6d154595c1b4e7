"""JPEG-LS (CharLS): lossless codestreams, signed pixels as their two's-complement bits."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from engine.codecs._backend import DECODE_ERRORS, require
from engine.codecs._frames import fits_bits
from engine.codecs._markers import ends_whole, strip_spiff
from engine.errors import CorruptDataError, NotFoundError
from engine.types import EncodedFrame

FEATURE = "jpegls"


def unsigned_bits(frame: npt.NDArray[np.generic]) -> npt.NDArray[np.generic]:
    """The DICOM convention for signed JPEG-LS: the two's-complement bits read as unsigned."""
    if frame.dtype.kind == "i":
        return frame.view(np.dtype(f"u{frame.dtype.itemsize}"))
    return frame


def encode_codestream(frame: npt.NDArray[np.generic], near: int = 0) -> bytes:
    """A JPEG-LS codestream (sample-interleaved for colour) without the SPIFF header imagecodecs adds."""
    codecs = require(FEATURE)
    src = np.ascontiguousarray(unsigned_bits(frame))
    return strip_spiff(bytes(codecs.jpegls_encode(src, level=near)))


def _narrow(frame: npt.NDArray[np.generic], bits_stored: int | None) -> npt.NDArray[np.uint8] | None:
    """An 8-bit array holding a 16-bit frame exactly, if bits_stored says it might and the pixels agree."""
    if bits_stored is None or bits_stored > 8 or frame.dtype.itemsize != 2 or not frame.size:
        return None
    if not fits_bits(frame, 8):
        return None
    narrow = frame.astype(np.int8 if frame.dtype.kind == "i" else np.uint8)
    return narrow.view(np.uint8)


def encode(frame: npt.NDArray[np.generic], bits_stored: int | None) -> EncodedFrame:
    """Storage encode; a 16-bit frame whose pixels fit 8 bits is coded at 8 bits when that is smaller.

    imagecodecs codes 8 or 16 bits a sample only, so 8 is the one lower precision on offer.
    """
    data = encode_codestream(frame)
    narrow = _narrow(frame, bits_stored)
    if narrow is not None:
        small = encode_codestream(narrow)
        if len(small) < len(data):
            data = small
    return EncodedFrame(data=data)


def decode_raw(data: bytes) -> npt.NDArray[np.generic]:
    """Decode a JPEG-LS codestream as CharLS returns it (uint8 or uint16)."""
    codecs = require(FEATURE)
    if not ends_whole(data, b"\x00"):
        # CharLS spends seconds on a truncated scan before failing; a whole codestream ends with EOI
        raise CorruptDataError("JPEG-LS codestream is truncated: it does not end with the EOI marker")
    try:
        result: npt.NDArray[np.generic] = codecs.jpegls_decode(data)
        return result
    except DECODE_ERRORS as exc:
        raise CorruptDataError(f"JPEG-LS codestream does not decode: {exc}") from exc


def decode(data: bytes, shape: tuple[int, ...], dtype: np.dtype[np.generic], level: int) -> npt.NDArray[np.generic]:
    """Storage decode into `dtype`, undoing the two's-complement view and the 8-bit narrowing."""
    del shape
    if level:
        raise NotFoundError("JPEG-LS codestreams hold one resolution; lower levels are separate arrays")
    raw = decode_raw(data)
    if raw.dtype.itemsize == dtype.itemsize:
        return raw.view(dtype) if raw.dtype != dtype else raw
    if raw.dtype == np.uint8 and dtype.itemsize == 2:
        narrow = raw.view(np.int8) if dtype.kind == "i" else raw
        return narrow.astype(dtype)
    raise CorruptDataError(f"JPEG-LS codestream decodes to {raw.dtype}, which cannot hold {dtype} pixels")
