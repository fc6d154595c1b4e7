"""Real frames from pydicom's test files, packed as the level arrays the pixel store writes."""

from __future__ import annotations

import zlib

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.data import get_testdata_file

from engine.pixels import LevelArray
from engine.types import CODEC_ZSTD


def frames_of(name: str) -> npt.NDArray[np.generic]:
    """Pixel frames of a pydicom test file as (frames, rows, cols[, samples]), little-endian."""
    dataset = pydicom.dcmread(get_testdata_file(name))
    pixels = dataset.pixel_array
    frames = int(getattr(dataset, "NumberOfFrames", 1) or 1)
    if frames == 1:
        pixels = pixels[np.newaxis]
    return np.ascontiguousarray(pixels.astype(pixels.dtype.newbyteorder("<")))


def deflated_level(frames: npt.NDArray[np.generic], level: int = 0) -> LevelArray:
    """A level array whose chunks are the frames deflated with zlib (the store never interprets them)."""
    step = 2**level
    scaled = np.ascontiguousarray(frames[:, ::step, ::step])
    return LevelArray(
        level=level,
        shape=tuple(scaled.shape),
        dtype=scaled.dtype.str,
        codec=CODEC_ZSTD,
        codec_config={},
        chunks=[zlib.compress(frame.tobytes()) for frame in scaled],
    )


def inflate(chunk: bytes, level: LevelArray) -> npt.NDArray[np.generic]:
    """Inverse of deflated_level for one chunk."""
    return np.frombuffer(zlib.decompress(chunk), dtype=level.dtype).reshape(level.shape[1:])
