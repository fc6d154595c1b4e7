"""HTJ2K (OpenJPH): lossless RPCL codestreams with per-resolution tile-parts, and their reduced decodes."""

from __future__ import annotations

import logging

import numpy as np
import numpy.typing as npt

from engine.codecs._backend import DECODE_ERRORS, require
from engine.codecs._levels import level_shape, reversible_53_low_band
from engine.codecs._markers import J2kHeader, parse_j2k
from engine.errors import CorruptDataError, NotFoundError, VerificationError
from engine.types import EncodedFrame

LOGGER = logging.getLogger(__name__)

FEATURE = "htj2k"
_MIN_DECOMPOSITIONS = 5  # OpenJPH's default; measured no worse than fewer on CT, MR and CR
_SMALLEST_RESOLUTION = 64  # PS3.5 HTJ2K Lossless RPCL: the lowest resolution is at most 64 px a side
_TILEPART_RESOLUTIONS = 1  # imagecodecs HTJ2K.TILEPART.RESOLUTIONS


def decompositions_for(rows: int, cols: int) -> int:
    """Wavelet decompositions so the smallest resolution is <= 64 px in both dimensions (at least 5)."""
    count = 0
    while max(level_shape(rows, cols, count)) > _SMALLEST_RESOLUTION:
        count += 1
    return max(count, _MIN_DECOMPOSITIONS)


def storage_view(frame: npt.NDArray[np.generic]) -> npt.NDArray[np.generic]:
    """The array handed to the encoder: unsigned 16-bit pixels with a clean top bit as int16.

    The values are identical, but OpenJPH's reduced-resolution output wraps an unsigned band
    below 0 to 65535 (dark backgrounds turn white); a signed codestream keeps -1 as -1.
    """
    if frame.dtype == np.uint16 and frame.size and int(frame.max()) < 0x8000:
        return frame.view(np.int16)
    return frame


def encode_codestream(frame: npt.NDArray[np.generic], *, colour_transform: bool) -> bytes:
    """A reversible RPCL codestream with TLM markers and one tile-part per resolution."""
    codecs = require(FEATURE)
    rows, cols = frame.shape[:2]
    return bytes(
        codecs.htj2k_encode(
            np.ascontiguousarray(frame),
            reversible=True,
            resolutions=decompositions_for(rows, cols),
            tlm=True,
            tilepart=_TILEPART_RESOLUTIONS,
            rgb=colour_transform,
            planar=False,
        )
    )


def level_prefixes(data: bytes) -> tuple[int, ...]:
    """prefixes[k]: leading bytes of `data` that decode resolution level k; index 0 is len(data)."""
    header = parse_j2k(data)
    check_rpcl(header)
    parts = header.tile_part_offsets
    if len(parts) != header.decompositions + 1:
        raise VerificationError(
            f"HTJ2K codestream has {len(parts)} tile-parts for {header.decompositions + 1} resolutions; "
            "the encoder did not split them per resolution"
        )
    # tile-part r holds resolution r (lowest first); level k needs resolutions 0 .. D-k
    return (len(data),) + tuple(parts[header.decompositions - k + 1] for k in range(1, header.decompositions + 1))


def check_rpcl(header: J2kHeader) -> None:
    """Raise VerificationError unless the codestream meets HTJ2K Lossless RPCL's structure."""
    smallest = level_shape(header.rows, header.columns, header.decompositions)
    if header.progression != "RPCL" or not header.reversible or max(smallest) > _SMALLEST_RESOLUTION:
        raise VerificationError(
            f"HTJ2K codestream is {header.progression}, reversible={header.reversible}, smallest "
            f"resolution {smallest}: not a valid HTJ2K Lossless RPCL codestream"
        )


def encode(frame: npt.NDArray[np.generic], bits_stored: int | None) -> EncodedFrame:
    """Storage encode: components as they are (no colour transform), prefixes per level."""
    del bits_stored  # HTJ2K codes empty high bit-planes for nearly nothing
    data = encode_codestream(storage_view(frame), colour_transform=False)
    return EncodedFrame(data=data, level_prefixes=level_prefixes(data))


def decode_raw(data: bytes, skip: int = 0) -> npt.NDArray[np.generic]:
    """Decode with OpenJPH, falling back to OpenJPEG (which also reads HT and mixed codestreams)."""
    codecs = require(FEATURE)
    try:
        result: npt.NDArray[np.generic] = codecs.htj2k_decode(data, planar=False, skipres=skip or None)
        return result
    except DECODE_ERRORS as exc:
        if skip:
            raise CorruptDataError(f"HTJ2K codestream does not decode at level {skip}: {exc}") from exc
        LOGGER.debug("OpenJPH could not decode a codestream (%s); trying OpenJPEG", exc)
    try:
        fallback: npt.NDArray[np.generic] = require("jpeg2k").jpeg2k_decode(data)
        return fallback
    except DECODE_ERRORS as exc:
        raise CorruptDataError(f"HTJ2K codestream does not decode: {exc}") from exc


def decode(data: bytes, shape: tuple[int, ...], dtype: np.dtype[np.generic], level: int) -> npt.NDArray[np.generic]:
    """Storage decode at resolution `level`; the result may still need a sign view (see _frames)."""
    if level == 0:
        return decode_raw(data)
    header = parse_j2k(data)
    if level > header.decompositions:
        raise NotFoundError(f"HTJ2K codestream has {header.decompositions} reduced levels, not {level}")
    reduced = decode_raw(data, level)
    if reduced.dtype.itemsize > 1 and not _near_limits(reduced):
        return reduced
    # OpenJPH wraps out-of-range reduced values instead of clipping them; rebuild the band exactly.
    return reversible_53_low_band(decode_raw(data), level)


def _near_limits(band: npt.NDArray[np.generic]) -> bool:
    """Whether any value lies in the outer 1/16 of its dtype, where a wrapped value would land.

    Overshoot past a limit needs an edge of tens of thousands; the data beside such an edge sits near
    that limit too, so the band has values in the margin and the exact path is taken.
    """
    info = np.iinfo(band.dtype.str)
    margin = (int(info.max) - int(info.min) + 1) // 16
    return bool(band.min() < info.min + margin or band.max() > info.max - margin)
