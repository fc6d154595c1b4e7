"""Micro benchmarks: lossless encode and decode per storage codec on real CT, MR and CR frames.

Run with `pytest bench/bench_codecs.py --benchmark-only` for figures; CI runs it with
--benchmark-disable so each benchmark executes once as a smoke test and cannot rot.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pydicom
import pytest

from engine import codecs
from engine.testing.corpus import pydicom_data_dir
from engine.types import CODEC_HTJ2K, CODEC_JPEG2K, CODEC_JPEGLS

# Real frames: a 512x512 signed CT slice, a 1024x1024 MR, a ~1955x1841 computed radiograph.
FRAMES = {"ct": "693_UNCR.dcm", "mr": "MR2_UNCR.dcm", "cr": "RG1_UNCR.dcm"}
CODECS = [CODEC_HTJ2K, CODEC_JPEGLS, CODEC_JPEG2K]


@cache
def frame(name: str) -> np.ndarray:
    directory = pydicom_data_dir()
    if directory is None:
        pytest.skip("pydicom-data is not installed")
    return np.ascontiguousarray(pydicom.dcmread(directory / FRAMES[name]).pixel_array)


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("name", list(FRAMES))
def test_encode(benchmark, name: str, codec: str) -> None:  # type: ignore[no-untyped-def]
    if codec == CODEC_JPEG2K and name == "cr":
        pytest.skip("OpenJPEG takes seconds per CR frame; measured on CT and MR")
    pixels = frame(name)
    encoded = benchmark(codecs.encode_frame, pixels, codec)
    benchmark.extra_info["ratio"] = pixels.nbytes / len(encoded.data)
    benchmark.extra_info["MB"] = pixels.nbytes / 1e6
    assert len(encoded.data) < pixels.nbytes


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("name", list(FRAMES))
def test_decode(benchmark, name: str, codec: str) -> None:  # type: ignore[no-untyped-def]
    if codec == CODEC_JPEG2K and name == "cr":
        pytest.skip("OpenJPEG takes seconds per CR frame; measured on CT and MR")
    pixels = frame(name)
    data = codecs.encode_frame(pixels, codec).data
    decoded = benchmark(codecs.decode_frame, data, codec, shape=pixels.shape, dtype=pixels.dtype)
    benchmark.extra_info["MB"] = pixels.nbytes / 1e6
    assert np.array_equal(decoded, pixels)


@pytest.mark.parametrize("level", [1, 2, 3])
def test_htj2k_low_resolution_decode(benchmark, level: int) -> None:  # type: ignore[no-untyped-def]
    """A low-resolution level costs a fraction of a full decode: the viewer's first image."""
    pixels = frame("ct")
    encoded = codecs.encode_frame(pixels, CODEC_HTJ2K)
    prefix = encoded.data[: encoded.level_prefixes[level]]
    benchmark.extra_info["prefix_fraction"] = len(prefix) / len(encoded.data)
    out = benchmark(codecs.decode_frame, prefix, CODEC_HTJ2K, shape=pixels.shape, dtype=pixels.dtype, level=level)
    assert out.shape == codecs.level_shape(*pixels.shape, level)
