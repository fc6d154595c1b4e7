"""Frames in DICOM encapsulated transfer syntaxes: decode any of them, encode the lossless ones."""

from __future__ import annotations

import logging

import numpy as np
import numpy.typing as npt

from engine.codecs import _htj2k, _jpeg, _jpeg2k, _jpegls, _rle
from engine.codecs._frames import fits_bits, frame_dtype
from engine.codecs._markers import declared_size, ends_whole
from engine.errors import CodecUnavailableError, CorruptDataError, PixelDataError, UnsupportedTransferSyntaxError
from engine.types import (
    HTJ2K,
    HTJ2K_LOSSLESS,
    HTJ2K_LOSSLESS_RPCL,
    JPEG2000,
    JPEG2000_LOSSLESS,
    JPEG_BASELINE,
    JPEG_EXTENDED,
    JPEG_LOSSLESS_P14,
    JPEG_LOSSLESS_SV1,
    JPEGLS_LOSSLESS,
    JPEGLS_NEAR_LOSSLESS,
    RLE_LOSSLESS,
    PixelDescription,
)

LOGGER = logging.getLogger(__name__)

_JPEG = frozenset({JPEG_BASELINE, JPEG_EXTENDED, JPEG_LOSSLESS_P14, JPEG_LOSSLESS_SV1})
_J2K = frozenset({JPEG2000_LOSSLESS, JPEG2000})
_HTJ2K = frozenset({HTJ2K_LOSSLESS, HTJ2K_LOSSLESS_RPCL, HTJ2K})
_JPEGLS = frozenset({JPEGLS_LOSSLESS, JPEGLS_NEAR_LOSSLESS})
DECODABLE_SYNTAXES = _JPEG | _J2K | _HTJ2K | _JPEGLS | {RLE_LOSSLESS}
ENCODABLE_SYNTAXES = frozenset(
    {
        RLE_LOSSLESS,
        JPEG_LOSSLESS_SV1,
        JPEG_LOSSLESS_P14,
        JPEGLS_LOSSLESS,
        JPEG2000_LOSSLESS,
        HTJ2K_LOSSLESS,
        HTJ2K_LOSSLESS_RPCL,
    }
)


def decode_syntax_frame(data: bytes, transfer_syntax: str, desc: PixelDescription) -> npt.NDArray[np.generic]:
    """One frame's codestream (its fragments joined) to an array of desc.frame_shape, frame_dtype(desc).

    Signed pixels come back signed and colour as RGB, as pydicom's pixel_array returns them.
    Raises UnsupportedTransferSyntaxError for a syntax not handled here, CorruptDataError if the
    codestream does not decode to the described frame.
    """
    data = bytes(data)
    target = frame_dtype(desc)
    declared = None if transfer_syntax == RLE_LOSSLESS else declared_size(data)
    if declared is not None and declared != (desc.rows, desc.columns):
        raise CorruptDataError(
            f"{transfer_syntax} codestream declares {declared[0]} x {declared[1]} pixels, the header "
            f"{desc.rows} x {desc.columns}: not decoded"
        )
    if transfer_syntax in _JPEG or transfer_syntax in _J2K or transfer_syntax in _HTJ2K:
        _check_whole(data, transfer_syntax)
    if transfer_syntax == RLE_LOSSLESS:
        raw = _rle.decode(data, desc.frame_shape, target)
    elif transfer_syntax in _JPEG:
        raw = _jpeg.decode(data, desc.photometric)
    elif transfer_syntax in _JPEGLS:
        raw = _jpegls.decode_raw(data)
    elif transfer_syntax in _J2K:
        raw = _jpeg2k.decode_raw(data)
    elif transfer_syntax in _HTJ2K:
        raw = _htj2k.decode_raw(data)
    else:
        raise UnsupportedTransferSyntaxError(f"no frame decoder for transfer syntax {transfer_syntax}")
    return conform(raw, desc, transfer_syntax)


_SOI, _SOC = b"\xff\xd8", b"\xff\x4f"


def _check_whole(data: bytes, transfer_syntax: str) -> None:
    """Raise CorruptDataError for a JPEG or JPEG 2000 codestream cut short: it must end with its end marker.

    The decoders return what they could decode of a cut codestream, the rest of the image grey or
    black, and say nothing (libjpeg-turbo, OpenJPEG) or only print their complaint (OpenJPH). A trailing
    00 or FF pads a fragment to even length (pydicom's JPEG-lossy.dcm has FF). A JP2 file (boxes around
    the codestream) is left to its decoder.
    """
    if data[:2] in (_SOI, _SOC) and not ends_whole(data, b"\x00\xff"):
        raise CorruptDataError(
            f"{transfer_syntax} codestream is truncated: it does not end with the {'EOI' if data[1] == 0xD8 else 'EOC'} "
            "marker (FFD9)"
        )


def conform(raw: npt.NDArray[np.generic], desc: PixelDescription, what: str) -> npt.NDArray[np.generic]:
    """Bring a decoder's output to the frame the DICOM header describes, or raise CorruptDataError."""
    target = frame_dtype(desc)
    if raw.shape != desc.frame_shape:
        raise CorruptDataError(f"{what} frame decodes to shape {raw.shape}, expected {desc.frame_shape}")
    if target.kind not in "iu":
        raise CorruptDataError(f"{what} cannot hold {target} pixels")
    was_unsigned = raw.dtype.kind == "u"
    if raw.dtype.itemsize == target.itemsize:
        frame = raw.view(target)
    elif raw.dtype.itemsize < target.itemsize:
        frame = raw.astype(target)
    else:
        info = np.iinfo(target.str)
        if raw.size and (int(raw.min()) < info.min or int(raw.max()) > info.max):
            raise CorruptDataError(f"{what} frame decodes to {raw.dtype} values that {target} cannot hold")
        frame = raw.astype(target)
    shift = target.itemsize * 8 - desc.bits_stored
    if target.kind == "i" and was_unsigned and 0 < shift < target.itemsize * 8:
        # the codec stored two's-complement bits as unsigned: extend the sign bit of Bits Stored
        frame = (frame << shift) >> shift
    return np.ascontiguousarray(frame)


def _precision(frame: npt.NDArray[np.generic], desc: PixelDescription) -> int | None:
    """Bits Stored if every pixel fits it (as signed for signed data), else None (the container's)."""
    bits = desc.bits_stored
    if not 1 <= bits < frame.dtype.itemsize * 8 or not frame.size:
        return None
    return bits if fits_bits(frame, bits) else None


def _check(frame: npt.NDArray[np.generic], transfer_syntax: str, desc: PixelDescription) -> npt.NDArray[np.generic]:
    if transfer_syntax not in ENCODABLE_SYNTAXES:
        if transfer_syntax in DECODABLE_SYNTAXES:
            raise UnsupportedTransferSyntaxError(f"{transfer_syntax} is lossy: the engine never encodes it")
        raise UnsupportedTransferSyntaxError(f"no frame encoder for transfer syntax {transfer_syntax}")
    target = frame_dtype(desc)
    if frame.shape != desc.frame_shape or frame.dtype.newbyteorder("=") != target:
        raise PixelDataError(
            f"frame is {frame.shape} {frame.dtype} but the header describes {desc.frame_shape} {target}"
        )
    if target.kind == "f":
        raise CodecUnavailableError(f"{transfer_syntax} cannot carry float pixel data")
    if desc.photometric == "YBR_ICT":
        raise CodecUnavailableError("YBR_ICT is an irreversible colour transform: no lossless syntax has it")
    return np.ascontiguousarray(frame, dtype=target)


def encode_syntax_frame(frame: npt.NDArray[np.generic], transfer_syntax: str, desc: PixelDescription) -> bytes:
    """Encode one frame losslessly as a codestream of `transfer_syntax`.

    Raises UnsupportedTransferSyntaxError for lossy or unknown syntaxes, CodecUnavailableError when the
    pixel format cannot be expressed in that syntax.
    """
    frame = _check(frame, transfer_syntax, desc)
    if transfer_syntax == RLE_LOSSLESS:
        return _rle.encode(frame)
    if frame.dtype.itemsize > 2:
        raise CodecUnavailableError(f"{transfer_syntax} codes at most 16 bits a sample, not {frame.dtype}")
    rct = desc.photometric == "YBR_RCT"
    if transfer_syntax in (JPEG_LOSSLESS_SV1, JPEG_LOSSLESS_P14):
        return _encode_jpeg_lossless(frame, desc)
    if transfer_syntax == JPEGLS_LOSSLESS:
        return _jpegls.encode_codestream(frame)
    if transfer_syntax == JPEG2000_LOSSLESS:
        return _jpeg2k.encode_codestream(frame, colour_transform=rct, bits=_precision(frame, desc))
    if rct and frame.ndim != 3:
        raise CodecUnavailableError("YBR_RCT needs three samples a pixel")
    return _htj2k.encode_codestream(frame, colour_transform=rct)


def _encode_jpeg_lossless(frame: npt.NDArray[np.generic], desc: PixelDescription) -> bytes:
    """Process 14, selection value 1 (valid for both .57 and .70); signed data as its low bits."""
    bits = _precision(frame, desc) or frame.dtype.itemsize * 8
    unsigned = frame.view(np.dtype(f"u{frame.dtype.itemsize}"))
    if frame.dtype.kind == "i" and bits < frame.dtype.itemsize * 8:
        unsigned = unsigned & np.array((1 << bits) - 1, dtype=unsigned.dtype)
    if bits <= 8:
        unsigned = unsigned.astype(np.uint8)
    return _jpeg.encode_lossless(unsigned, bits)
