"""Resolution levels: their shapes, how many a frame gets, and the 2x2 mean of explicit pyramids."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from engine.errors import CorruptDataError


def level_shape(rows: int, cols: int, level: int) -> tuple[int, int]:
    """Rows and columns of resolution `level` (1/2**level), rounded up as JPEG 2000 does from origin 0."""
    if level < 0:
        raise ValueError(f"resolution level must be >= 0, got {level}")
    scale = 1 << level
    return (-(-rows // scale), -(-cols // scale))


def level_count(rows: int, cols: int, target: int = 256) -> int:
    """Levels including level 0 so that the last one has both dimensions <= target (>= 1)."""
    if target < 1:
        raise ValueError(f"target size must be >= 1, got {target}")
    count = 1
    while max(level_shape(rows, cols, count - 1)) > target:
        count += 1
    return count


def downsample(frame: npt.NDArray[np.generic]) -> npt.NDArray[np.generic]:
    """The next pyramid level: mean of each 2x2 block, rounded half up, same dtype, odd edges included.

    An odd last row or column is averaged with a copy of itself, which is exactly the mean of the
    pixels that exist (two at an edge, one in the corner).
    """
    if frame.ndim not in (2, 3):
        raise ValueError(f"a frame is (rows, cols) or (rows, cols, samples), got shape {frame.shape}")
    rows, cols = frame.shape[:2]
    pad = [(0, rows % 2), (0, cols % 2)] + [(0, 0)] * (frame.ndim - 2)
    src: npt.NDArray[Any] = np.pad(frame, pad, mode="edge") if rows % 2 or cols % 2 else frame
    if frame.dtype.kind == "f":
        total_f = src[0::2, 0::2] + src[1::2, 0::2] + src[0::2, 1::2] + src[1::2, 1::2]
        mean: npt.NDArray[np.generic] = (total_f * 0.25).astype(frame.dtype)
        return mean
    acc = np.int32 if frame.dtype.itemsize <= 2 else np.int64
    total: npt.NDArray[Any] = src[0::2, 0::2].astype(acc)
    total += src[1::2, 0::2]
    total += src[0::2, 1::2]
    total += src[1::2, 1::2]
    total += 2
    total >>= 2  # arithmetic shift: floor, so +2 rounds half up for negative values too
    return total.astype(frame.dtype)


def _low_pass_53(x: npt.NDArray[np.int64], axis: int) -> npt.NDArray[np.int64]:
    """Low-pass half of one reversible 5/3 lifting step along `axis` (ISO 15444-1 F.3.8, origin 0)."""
    n = x.shape[axis]
    if n == 1:
        return x
    even = np.take(x, np.arange(0, n, 2), axis=axis)
    odd = np.take(x, np.arange(1, n, 2), axis=axis)
    m = odd.shape[axis]

    def part(a: npt.NDArray[np.int64], start: int, stop: int | None) -> npt.NDArray[np.int64]:
        return np.take(a, np.arange(a.shape[axis])[start:stop], axis=axis)

    # symmetric extension: the sample after the end mirrors to n-2
    right = part(even, 1, None) if n % 2 else np.concatenate([part(even, 1, None), part(even, -1, None)], axis)
    high = odd - ((part(even, 0, m) + right) >> 1)
    left_high = np.concatenate([part(high, 0, 1), high], axis)
    left_high = part(left_high, 0, even.shape[axis])
    right_high = np.concatenate([high, part(high, -1, None)], axis) if n % 2 else high
    result: npt.NDArray[np.int64] = even + ((left_high + right_high + 2) >> 2)
    return result


def reversible_53_low_band(frame: npt.NDArray[np.generic], level: int) -> npt.NDArray[np.generic]:
    """The LL band after `level` reversible 5/3 decompositions: what a reduced JPEG 2000 decode returns.

    Used for codestreams whose decoder cannot skip resolutions; clipped to the dtype like the decoders.
    """
    if frame.dtype.kind not in "iu":
        raise CorruptDataError(f"a reversible 5/3 band needs integer pixels, got {frame.dtype}")
    band = frame.astype(np.int64)
    for _ in range(level):
        band = _low_pass_53(_low_pass_53(band, 0), 1)
    info = np.iinfo(frame.dtype.str)
    return np.clip(band, info.min, info.max).astype(frame.dtype)
