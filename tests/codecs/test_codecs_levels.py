"""Level geometry and the explicit-pyramid 2x2 mean, against naive oracles and real frames."""

from __future__ import annotations

import math

import numpy as np
import pytest
from codec_corpus import STORAGE_FRAMES, first_frame
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from engine.codecs import downsample, level_count, level_shape


@given(st.integers(1, 100_000), st.integers(1, 100_000), st.integers(0, 20))
def test_level_shape_rounds_up(rows: int, cols: int, level: int) -> None:
    assert level_shape(rows, cols, level) == (math.ceil(rows / 2**level), math.ceil(cols / 2**level))


@pytest.mark.parametrize(
    ("rows", "cols", "target", "count"),
    [(64, 64, 256, 1), (256, 256, 256, 1), (257, 10, 256, 2), (512, 512, 256, 2), (1955, 1841, 256, 4), (4096, 4096, 64, 7)],
)
def test_level_count(rows: int, cols: int, target: int, count: int) -> None:
    assert level_count(rows, cols, target) == count
    assert max(level_shape(rows, cols, count - 1)) <= target
    if count > 1:
        assert max(level_shape(rows, cols, count - 2)) > target


def _naive_mean(frame: np.ndarray) -> np.ndarray:
    rows, cols = frame.shape[:2]
    out = np.empty(level_shape(rows, cols, 1) + frame.shape[2:], dtype=frame.dtype)
    for r in range(out.shape[0]):
        for c in range(out.shape[1]):
            block = frame[2 * r : 2 * r + 2, 2 * c : 2 * c + 2].astype(np.float64)
            mean = block.mean(axis=(0, 1))
            out[r, c] = mean if frame.dtype.kind == "f" else np.floor(mean + 0.5)
    return out


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(
        st.sampled_from([np.uint8, np.int8, np.uint16, np.int16, np.int32]),
        st.tuples(st.integers(1, 9), st.integers(1, 9)) | st.tuples(st.integers(1, 5), st.integers(1, 5), st.just(3)),
    )
)
def test_downsample_is_the_rounded_block_mean(frame: np.ndarray) -> None:
    result = downsample(frame)
    assert result.dtype == frame.dtype
    assert np.array_equal(result, _naive_mean(frame))


@pytest.mark.parametrize("key", ["ct_int16", "cr_uint16", "us_rgb", "palette_uint8"])
def test_downsample_real_frames(key: str) -> None:
    frame = first_frame(STORAGE_FRAMES[key])
    smaller = downsample(frame)
    assert smaller.shape == level_shape(*frame.shape[:2], 1) + frame.shape[2:]
    assert smaller.dtype == frame.dtype
    # odd CR edges: the last row is the mean of the last row pair that exists
    assert np.array_equal(smaller[:4, :4], _naive_mean(frame[:8, :8]))
    assert np.array_equal(smaller[-1:, -1:], _naive_mean(frame[-(2 - frame.shape[0] % 2) :, -(2 - frame.shape[1] % 2) :]))


def test_downsample_float_is_the_mean() -> None:
    frame = first_frame(STORAGE_FRAMES["ct_int16"])[:7, :5].astype(np.float32) / 3
    assert np.allclose(downsample(frame), _naive_mean(frame))
