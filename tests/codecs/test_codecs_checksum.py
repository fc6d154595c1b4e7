"""The chunk checksum: libdeflate's CRC-32 where imagecodecs has it, with zlib's values exactly."""

from __future__ import annotations

import zlib

import imagecodecs
from hypothesis import given
from hypothesis import strategies as st

from engine.codecs import crc32


@given(st.binary(max_size=70_000))
def test_crc32_has_zlibs_values(data: bytes) -> None:
    # chunks written before the switch carry zlib's CRC-32 in the index: the values must not change
    assert crc32(data) == zlib.crc32(data)
    assert crc32(memoryview(data)) == zlib.crc32(data)


def test_crc32_is_libdeflates_when_imagecodecs_has_it() -> None:
    assert crc32(b"123456789") == 0xCBF43926  # the check value of CRC-32/ISO-HDLC
    if imagecodecs.DEFLATE.available:
        assert crc32 is imagecodecs.deflate_crc32
    else:
        assert crc32 is zlib.crc32
