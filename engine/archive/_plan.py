"""Pixel planning: turn a parsed instance's pixel data into verified lossless chunks and level arrays."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import xxhash

from engine import codecs, dicom
from engine.errors import CodecUnavailableError, PixelDataError, UnsupportedTransferSyntaxError
from engine.pixels import LevelArray
from engine.types import (
    CODEC_HTJ2K,
    CODEC_PASSTHROUGH,
    CODEC_ZSTD,
    LOSSLESS_ENCAPSULATED_SYNTAXES,
    ChunkRef,
    Encapsulation,
    LevelInfo,
    PixelDescription,
)

LOGGER = logging.getLogger(__name__)

# Levels go down until both sides are at most this: HTJ2K RPCL needs its smallest resolution <= 64 px
# anyway, so every profile offers the same levels and a viewer's `level=k` means the same everywhere.
SMALLEST_LEVEL_SIDE = 64
# Image codecs take these frame types; anything else (32-bit, float, odd sample counts) goes to zstd.
_IMAGE_CODEC_DTYPES = frozenset({np.dtype("uint8"), np.dtype("int8"), np.dtype("uint16"), np.dtype("int16")})


@dataclass(frozen=True, slots=True)
class PixelPlan:
    """Everything ingest writes for an instance's pixels, before the pixel store assigns chunk places."""

    codec: str | None
    layout: str
    arrays: tuple[LevelArray, ...]
    level_shapes: tuple[tuple[int, int], ...]  # (rows, cols) of each level, level 0 first
    level_sources: tuple[str, ...]  # "array" or "resolution" per level
    array_of_level: tuple[int, ...]  # index into `arrays` per level (-1: decoded from level 0)
    level_prefixes: tuple[tuple[int, ...], ...]  # per frame, for HTJ2K
    frame_hashes: tuple[str, ...]
    encapsulation: Encapsulation | None
    pixel_tail: bytes


def frame_hash(frame: np.ndarray) -> str:
    """Hash of a decoded frame's little-endian bytes: recorded at ingest, checked by `verify --deep`.

    XXH3-128 detects damage as well as a cryptographic hash here (nobody forges our own frames) at
    about 100x the speed of blake2b: 0.01 ms against 1.5 ms for a 512x512 CT frame, measured.
    """
    little = np.ascontiguousarray(frame.astype(frame.dtype.newbyteorder("<"), copy=False))
    return xxhash.xxh3_128_hexdigest(little.view(np.uint8).reshape(-1).data)


def bytes_hash(data: bytes | memoryview) -> str:
    return xxhash.xxh3_128_hexdigest(data)


def content_hashes(parsed: dicom.ParsedInstance) -> tuple[str, ...]:
    """The frame hashes plan_pixels would record for `parsed`, without encoding anything: equal for the
    same pixels sent natively or in a lossless compressed syntax. Raises what plan_pixels raises reading."""
    desc = parsed.pixel
    if desc is None:
        return ()
    if not parsed.encapsulated:
        frames = dicom.native_frames(parsed)
        return (bytes_hash(parsed.pixel_value),) if frames is None else tuple(frame_hash(f) for f in frames)
    syntax = parsed.transfer_syntax_uid
    _, codestreams = _codestreams(parsed, desc)
    if syntax in LOSSLESS_ENCAPSULATED_SYNTAXES:
        return tuple(frame_hash(codecs.decode_syntax_frame(c, syntax, desc)) for c in codestreams)
    return tuple(bytes_hash(c) for c in codestreams)


def plan_pixels(parsed: dicom.ParsedInstance, profile: str) -> PixelPlan | None:
    """Encode (and verify) the pixel data of `parsed` for storage, or None when it has none.

    Raises PixelDataError for pixel data that cannot be read, VerificationError when a lossless encode
    does not decode back to the source, CodecUnavailableError when a needed codec is missing.
    """
    desc = parsed.pixel
    if desc is None:
        return None
    if not parsed.encapsulated:
        frames = dicom.native_frames(parsed)
        if frames is None:
            return plan_raw(parsed, profile)
        return _plan_frames(frames, desc, profile, encapsulation=None, tail=dicom.native_tail(parsed))
    encapsulation, codestreams = _codestreams(parsed, desc)
    if parsed.transfer_syntax_uid in LOSSLESS_ENCAPSULATED_SYNTAXES:
        decoded = [codecs.decode_syntax_frame(c, parsed.transfer_syntax_uid, desc) for c in codestreams]
        return _plan_frames(decoded, desc, profile, encapsulation=None, tail=b"")
    return _plan_passthrough(codestreams, encapsulation, parsed.transfer_syntax_uid, desc, profile)


def _codestreams(parsed: dicom.ParsedInstance, desc: PixelDescription) -> tuple[Encapsulation, list[bytes]]:
    # Video syntaxes hold one stream for all frames: the parser's layout says how many codestreams.
    n_codestreams = len(parsed.encapsulation.fragments_per_frame) if parsed.encapsulation else desc.frames
    return dicom.split_encapsulated(parsed.pixel_value, n_codestreams, parsed.extended_offset_table)


def _storage_codec(frame: np.ndarray, desc: PixelDescription, profile: str) -> str:
    if frame.dtype not in _IMAGE_CODEC_DTYPES or desc.samples_per_pixel not in (1, 3) or desc.float_kind:
        return CODEC_ZSTD
    return profile


def _plan_frames(
    frames: Sequence[np.ndarray],
    desc: PixelDescription,
    profile: str,
    *,
    encapsulation: Encapsulation | None,
    tail: bytes,
) -> PixelPlan:
    if not frames:
        raise PixelDataError("pixel data holds no frames")
    codec = _storage_codec(frames[0], desc, profile)
    dtype = frames[0].dtype.newbyteorder("<").str
    bits = desc.bits_stored if desc.bits_stored < desc.bits_allocated else None
    if bits is not None and codec != CODEC_ZSTD and not all(codecs.fits_bits(f, bits) for f in frames):
        # A codestream codes every bit it is given, and served in the stored syntax its header still says
        # Bits Stored: a decoder would read the bits above as pixel values (mlut_18.dcm, old overlays in
        # the high bits). Such frames keep their exact bits with zstd and are served decoded.
        LOGGER.info("pixel values beyond Bits Stored %d: kept with zstd, not %s", bits, codec)
        codec = CODEC_ZSTD
    level0 = [codecs.encode_verified(f, codec, bits_stored=bits) for f in frames]
    hashes = tuple(frame_hash(f) for f in frames)
    rows, cols = desc.rows, desc.columns
    n_levels = codecs.level_count(rows, cols, SMALLEST_LEVEL_SIDE)
    shapes = tuple(codecs.level_shape(rows, cols, k) for k in range(n_levels))
    arrays = [_level_array(0, frames[0].shape, len(frames), dtype, codec, [e.data for e in level0])]
    if codec == CODEC_HTJ2K:
        prefixes = tuple(e.level_prefixes for e in level0)
        for frame_prefixes in prefixes:
            if len(frame_prefixes) < n_levels:
                raise CodecUnavailableError(
                    f"HTJ2K codestream offers {len(frame_prefixes)} levels, {n_levels} needed"
                )
        return PixelPlan(
            codec=codec,
            layout="frames",
            arrays=tuple(arrays),
            level_shapes=shapes,
            level_sources=("array",) + ("resolution",) * (n_levels - 1),
            array_of_level=(0,) + (-1,) * (n_levels - 1),
            level_prefixes=prefixes,
            frame_hashes=hashes,
            encapsulation=encapsulation,
            pixel_tail=tail,
        )
    arrays.extend(_pyramid(frames, n_levels, codec, dtype))
    return PixelPlan(
        codec=codec,
        layout="frames",
        arrays=tuple(arrays),
        level_shapes=shapes,
        level_sources=("array",) * n_levels,
        array_of_level=tuple(range(n_levels)),
        level_prefixes=(),
        frame_hashes=hashes,
        encapsulation=encapsulation,
        pixel_tail=tail,
    )


def _pyramid(frames: Sequence[np.ndarray], n_levels: int, codec: str, dtype: str) -> list[LevelArray]:
    """Explicit lower-resolution arrays (OME-Zarr multiscales style) for codecs without embedded levels."""
    arrays: list[LevelArray] = []
    current = list(frames)
    for level in range(1, n_levels):
        current = [codecs.downsample(f) for f in current]
        encoded = [codecs.encode_verified(f, codec).data for f in current]
        arrays.append(_level_array(level, current[0].shape, len(current), dtype, codec, encoded))
    return arrays


def _plan_passthrough(
    codestreams: Sequence[bytes],
    encapsulation: Encapsulation,
    transfer_syntax: str,
    desc: PixelDescription,
    profile: str,
) -> PixelPlan:
    """Lossy input: each frame's codestream is kept untouched; lower levels come from its decoded pixels.

    Every frame is decoded, levels or not: a codestream that does not decode is refused (CorruptDataError)
    rather than kept and served to a viewer that cannot show it.
    """
    hashes = tuple(bytes_hash(c) for c in codestreams)
    shape = desc.frame_shape
    dtype = codecs.frame_dtype(desc).newbyteorder("<").str
    level0 = LevelArray(
        level=0,
        shape=(len(codestreams), *shape),
        dtype=dtype,
        codec=CODEC_PASSTHROUGH,
        codec_config={"transfer_syntax": transfer_syntax},
        chunks=tuple(codestreams),
    )
    arrays = [level0]
    n_levels = codecs.level_count(desc.rows, desc.columns, SMALLEST_LEVEL_SIDE)
    try:
        decoded = [codecs.decode_syntax_frame(c, transfer_syntax, desc) for c in codestreams]
    except (CodecUnavailableError, UnsupportedTransferSyntaxError) as exc:
        # Kept exactly as received, unchecked; only the low-resolution previews are missing.
        LOGGER.warning("%s input kept without decoding it, and without low-resolution levels: %s", transfer_syntax, exc)
        n_levels = 1
    else:
        if n_levels > 1:
            codec = _storage_codec(decoded[0], desc, profile)
            arrays.extend(_pyramid(decoded, n_levels, codec, decoded[0].dtype.newbyteorder("<").str))
    shapes = tuple(codecs.level_shape(desc.rows, desc.columns, k) for k in range(n_levels))
    return PixelPlan(
        codec=CODEC_PASSTHROUGH,
        layout="frames",
        arrays=tuple(arrays),
        level_shapes=shapes,
        level_sources=("array",) * n_levels,
        array_of_level=tuple(range(n_levels)),
        level_prefixes=(),
        frame_hashes=hashes,
        encapsulation=encapsulation,
        pixel_tail=b"",
    )


def plan_raw(parsed: dicom.ParsedInstance, profile: str) -> PixelPlan:
    """Native layouts that are not whole frames of one dtype (1-bit, 4:2:2): the value bytes, zstd'ed, and
    lower levels from the unpacked frames where they unpack (see dicom.unpacked_frames)."""
    value = bytes(parsed.pixel_value)
    # A one-row "frame" of bytes: the codecs take 2-D frames, and the value has no frame structure.
    encoded = codecs.encode_verified(np.frombuffer(value, dtype=np.uint8).reshape(1, -1), CODEC_ZSTD)
    array = LevelArray(
        level=0,
        shape=(1, 1, len(value)),
        dtype="|u1",
        codec=CODEC_ZSTD,
        codec_config={},
        chunks=(encoded.data,),
    )
    desc = parsed.pixel
    assert desc is not None
    arrays = [array]
    n_levels = codecs.level_count(desc.rows, desc.columns, SMALLEST_LEVEL_SIDE)
    frames = dicom.unpacked_frames(value, desc, parsed.transfer_syntax_uid) if n_levels > 1 else None
    if frames is not None:
        arrays.extend(_pyramid(frames, n_levels, _storage_codec(frames[0], desc, profile), "|u1"))
    else:
        n_levels = 1
    # Level 0 of the raw layout records the value's length as its width, the levels below their frames.
    shapes = ((1, len(value)), *(codecs.level_shape(desc.rows, desc.columns, k) for k in range(1, n_levels)))
    return PixelPlan(
        codec=CODEC_ZSTD,
        layout="raw",
        arrays=tuple(arrays),
        level_shapes=shapes,
        level_sources=("array",) * n_levels,
        array_of_level=tuple(range(n_levels)),
        level_prefixes=(),
        frame_hashes=(bytes_hash(value),),
        encapsulation=None,
        pixel_tail=b"",
    )


def _level_array(
    level: int, frame_shape: tuple[int, ...], n_frames: int, dtype: str, codec: str, chunks: Sequence[bytes]
) -> LevelArray:
    return LevelArray(
        level=level,
        shape=(n_frames, *frame_shape),
        dtype=dtype,
        codec=codec,
        codec_config={},
        chunks=tuple(chunks),
    )


def level_infos(plan: PixelPlan, refs: Sequence[Sequence[ChunkRef]]) -> tuple[LevelInfo, ...]:
    """Combine a plan with the chunk places the pixel store assigned into the record's level list."""
    infos = []
    for level, (rows, cols) in enumerate(plan.level_shapes):
        array = plan.array_of_level[level]
        infos.append(
            LevelInfo(
                level=level,
                rows=rows,
                columns=cols,
                source=plan.level_sources[level],
                chunks=tuple(refs[array]) if array >= 0 else (),
                level_prefixes=plan.level_prefixes if level == 0 else (),
                codec=plan.arrays[array].codec if array >= 0 else plan.arrays[0].codec,
            )
        )
    return tuple(infos)
