"""Hypothesis round trips over arbitrary small arrays: zstd storage frames and RLE Lossless frames."""

from __future__ import annotations

import dataclasses

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from engine.codecs import decode_frame, decode_syntax_frame, encode_frame, encode_syntax_frame, frame_dtype
from engine.types import CODEC_ZSTD, RLE_LOSSLESS, PixelDescription

SHAPES = st.tuples(st.integers(1, 12), st.integers(1, 12)) | st.tuples(
    st.integers(1, 6), st.integers(1, 6), st.sampled_from([1, 3])
)
ANY_DTYPE = st.sampled_from(["u1", "i1", "<u2", ">u2", "<i2", "<u4", ">i4", "<f4", ">f8", "<u8"])


@settings(max_examples=80, deadline=None)
@given(hnp.arrays(ANY_DTYPE, SHAPES))
def test_zstd_round_trips_any_array(frame: np.ndarray) -> None:
    data = encode_frame(frame, CODEC_ZSTD).data
    decoded = decode_frame(data, CODEC_ZSTD, shape=frame.shape, dtype=frame.dtype)
    assert decoded.dtype == frame.dtype.newbyteorder("=")
    assert decoded.tobytes() == frame.astype(decoded.dtype).tobytes()


_BASE = PixelDescription(
    rows=1, columns=1, frames=1, samples_per_pixel=1, bits_allocated=8, bits_stored=8, high_bit=7,
    pixel_representation=0, photometric="MONOCHROME2", planar_configuration=0,
)


@settings(max_examples=80, deadline=None)
@given(hnp.arrays(st.sampled_from(["u1", "i1", "u2", "i2", "u4", "i4"]), SHAPES))
def test_rle_round_trips_any_array(frame: np.ndarray) -> None:
    samples = frame.shape[2] if frame.ndim == 3 else 1
    if samples == 1 and frame.ndim == 3:
        frame = frame[:, :, 0]
    bits = frame.dtype.itemsize * 8
    desc = dataclasses.replace(
        _BASE, rows=frame.shape[0], columns=frame.shape[1], samples_per_pixel=samples, bits_allocated=bits,
        bits_stored=bits, high_bit=bits - 1, pixel_representation=int(frame.dtype.kind == "i"),
        photometric="RGB" if samples == 3 else "MONOCHROME2",
    )
    assert frame_dtype(desc) == frame.dtype
    data = encode_syntax_frame(frame, RLE_LOSSLESS, desc)
    assert len(data) % 2 == 0
    assert np.array_equal(decode_syntax_frame(data, RLE_LOSSLESS, desc), frame)
