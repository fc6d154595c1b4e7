"""Lossless codecs of the engine (the only imagecodecs user): storage codecs and DICOM frame syntaxes."""

from __future__ import annotations

from engine.codecs._checksum import crc32
from engine.codecs._frames import (
    decode_frame,
    encode_frame,
    encode_verified,
    fits_bits,
    frame_dtype,
    syntax_for_codec,
)
from engine.codecs._levels import downsample, level_count, level_shape
from engine.codecs._registry import is_available, storage_codecs
from engine.codecs._render import WINDOW_FUNCTIONS, encode_jpeg, encode_png, fit_within, window_to_uint8, ybr_full_to_rgb
from engine.codecs._warmup import warm_up
from engine.codecs._syntax import (
    DECODABLE_SYNTAXES,
    ENCODABLE_SYNTAXES,
    decode_syntax_frame,
    encode_syntax_frame,
)

__all__ = [
    "warm_up",
    "WINDOW_FUNCTIONS",
    "encode_jpeg",
    "encode_png",
    "crc32",
    "window_to_uint8",
    "ybr_full_to_rgb",
    "fits_bits",
    "fit_within",
    "DECODABLE_SYNTAXES",
    "ENCODABLE_SYNTAXES",
    "decode_frame",
    "decode_syntax_frame",
    "downsample",
    "encode_frame",
    "encode_syntax_frame",
    "encode_verified",
    "frame_dtype",
    "is_available",
    "level_count",
    "level_shape",
    "storage_codecs",
    "syntax_for_codec",
]
