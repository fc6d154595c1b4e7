"""Storage codecs on real frames: lossless round trips, resolution levels, prefixes, refusals."""

from __future__ import annotations

import numpy as np
import pytest
from codec_corpus import STORAGE_FRAMES, first_frame

from engine.codecs import (
    decode_frame,
    encode_frame,
    encode_verified,
    is_available,
    level_shape,
    storage_codecs,
    syntax_for_codec,
)
from engine.codecs._htj2k import decode_raw, decompositions_for
from engine.codecs._levels import reversible_53_low_band
from engine.codecs._markers import parse_j2k
from engine.errors import CodecUnavailableError, CorruptDataError, NotFoundError
from engine.types import (
    CODEC_HTJ2K,
    CODEC_JPEG2K,
    CODEC_JPEGLS,
    CODEC_ZSTD,
    HTJ2K_LOSSLESS_RPCL,
    JPEG2000_LOSSLESS,
    JPEGLS_LOSSLESS,
)

IMAGE_CODECS = (CODEC_HTJ2K, CODEC_JPEGLS, CODEC_JPEG2K)
ALL_CODECS = IMAGE_CODECS + (CODEC_ZSTD,)
LEVEL_FRAMES = ("ct_int16", "mr_uint16", "cr_uint16", "us_rgb", "palette_uint8", "mr_small_int16")


@pytest.mark.parametrize("codec", ALL_CODECS)
@pytest.mark.parametrize("key", sorted(STORAGE_FRAMES))
def test_lossless_round_trip(codec: str, key: str) -> None:
    frame = first_frame(STORAGE_FRAMES[key])
    encoded = encode_verified(frame, codec)
    decoded = decode_frame(encoded.data, codec, shape=frame.shape, dtype=frame.dtype)
    assert decoded.dtype == frame.dtype
    assert np.array_equal(decoded, frame)
    assert len(encoded.data) < frame.nbytes


def test_every_codec_is_registered_and_available() -> None:
    assert set(storage_codecs()) == set(ALL_CODECS)
    assert all(is_available(codec) for codec in ALL_CODECS)
    assert not is_available("webp")


@pytest.mark.parametrize(
    ("codec", "syntax"),
    [(CODEC_HTJ2K, HTJ2K_LOSSLESS_RPCL), (CODEC_JPEGLS, JPEGLS_LOSSLESS), (CODEC_JPEG2K, JPEG2000_LOSSLESS), (CODEC_ZSTD, None)],
)
def test_syntax_for_codec(codec: str, syntax: str | None) -> None:
    assert syntax_for_codec(codec) == syntax


@pytest.mark.parametrize("key", ["ct_int16", "mr_uint16", "cr_uint16", "us_rgb"])
def test_htj2k_is_valid_lossless_rpcl(key: str) -> None:
    frame = first_frame(STORAGE_FRAMES[key])
    data = encode_frame(frame, CODEC_HTJ2K).data
    header = parse_j2k(data)
    assert header.progression == "RPCL"
    assert header.reversible
    assert not header.multiple_component_transform
    assert max(level_shape(frame.shape[0], frame.shape[1], header.decompositions)) <= 64
    assert b"\xff\x55" in data[: header.tile_part_offsets[0]]  # TLM in the main header
    assert len(header.tile_part_offsets) == header.decompositions + 1


def test_htj2k_keeps_int16_signed() -> None:
    frame = first_frame(STORAGE_FRAMES["ct_int16"])
    header = parse_j2k(encode_frame(frame, CODEC_HTJ2K).data)
    assert header.signed and header.precision == 16


def test_decompositions_grow_for_large_frames() -> None:
    assert decompositions_for(512, 512) == 5
    assert decompositions_for(4096, 3000) == 6
    assert decompositions_for(9000, 100) == 8
    frame = np.tile(first_frame(STORAGE_FRAMES["cr_uint16"]), (2, 2))  # 3910 x 3682
    header = parse_j2k(encode_verified(frame, CODEC_HTJ2K).data)
    assert header.decompositions == 6


@pytest.mark.parametrize("key", ["ct_int16", "mr_uint16", "cr_uint16", "us_rgb", "palette_uint8"])
def test_htj2k_prefixes_decode_their_level(key: str) -> None:
    frame = first_frame(STORAGE_FRAMES[key])
    encoded = encode_frame(frame, CODEC_HTJ2K)
    prefixes = encoded.level_prefixes
    assert prefixes[0] == len(encoded.data)
    assert len(prefixes) == parse_j2k(encoded.data).decompositions + 1
    for level in range(1, len(prefixes)):
        assert prefixes[level] < prefixes[level - 1]
        # what a client's OpenJPH does with the first bytes of the codestream
        whole = decode_raw(encoded.data, level)
        part = decode_raw(encoded.data[: prefixes[level]], level)
        assert np.array_equal(part, whole)
        assert part.shape[:2] == level_shape(*frame.shape[:2], level)


@pytest.mark.parametrize("key", ["ct_int16", "mr_uint16", "cr_uint16"])
def test_decode_frame_answers_a_level_from_its_prefix(key: str) -> None:
    frame = first_frame(STORAGE_FRAMES[key])
    encoded = encode_frame(frame, CODEC_HTJ2K)
    for level in (1, 2, 3):
        whole = decode_frame(encoded.data, CODEC_HTJ2K, shape=frame.shape, dtype=frame.dtype, level=level)
        prefix = encoded.data[: encoded.level_prefixes[level]]
        assert np.array_equal(decode_frame(prefix, CODEC_HTJ2K, shape=frame.shape, dtype=frame.dtype, level=level), whole)


@pytest.mark.parametrize("codec", [CODEC_HTJ2K, CODEC_JPEG2K])
@pytest.mark.parametrize("key", LEVEL_FRAMES)
def test_reduced_decodes_are_the_exact_low_band(codec: str, key: str) -> None:
    frame = first_frame(STORAGE_FRAMES[key])
    data = encode_frame(frame, codec).data
    for level in (1, 2, 3):
        reduced = decode_frame(data, codec, shape=frame.shape, dtype=frame.dtype, level=level)
        assert reduced.shape == level_shape(*frame.shape[:2], level) + frame.shape[2:]
        assert reduced.dtype == frame.dtype
        exact = reversible_53_low_band(frame.astype(np.int32), level)
        info = np.iinfo(frame.dtype)
        assert np.array_equal(reduced, np.clip(exact, info.min, info.max).astype(frame.dtype))


def test_level_beyond_the_codestream_is_not_found() -> None:
    frame = first_frame(STORAGE_FRAMES["mr_small_int16"])
    for codec in (CODEC_HTJ2K, CODEC_JPEG2K):
        data = encode_frame(frame, codec).data
        with pytest.raises(NotFoundError):
            decode_frame(data, codec, shape=frame.shape, dtype=frame.dtype, level=parse_j2k(data).decompositions + 1)
    for codec in (CODEC_JPEGLS, CODEC_ZSTD):
        with pytest.raises(NotFoundError):
            decode_frame(encode_frame(frame, codec).data, codec, shape=frame.shape, dtype=frame.dtype, level=1)


def test_jpegls_uses_8_bits_when_the_pixels_fit() -> None:
    palette = first_frame(STORAGE_FRAMES["palette_uint8"])
    wide = palette.astype(np.uint16)
    narrow = encode_verified(wide, CODEC_JPEGLS, bits_stored=8)
    assert len(narrow.data) < len(encode_frame(wide, CODEC_JPEGLS).data)
    assert narrow.data[:4] == b"\xff\xd8\xff\xf7"  # no SPIFF header
    signed = (palette.astype(np.int16) - 128)
    assert np.array_equal(
        decode_frame(encode_verified(signed, CODEC_JPEGLS, bits_stored=8).data, CODEC_JPEGLS, shape=signed.shape, dtype=signed.dtype),
        signed,
    )
    # bits_stored is only a hint: pixels above it keep the 16-bit coding
    ct = first_frame(STORAGE_FRAMES["ct_int16"])
    assert np.array_equal(
        decode_frame(encode_verified(ct, CODEC_JPEGLS, bits_stored=8).data, CODEC_JPEGLS, shape=ct.shape, dtype=ct.dtype), ct
    )


@pytest.mark.parametrize("name", ["rtdose.dcm", "SC_rgb_32bit.dcm"])
def test_zstd_takes_32_bit_frames(name: str) -> None:
    frame = first_frame(name)
    assert frame.dtype.itemsize == 4
    encoded = encode_verified(frame, CODEC_ZSTD)
    assert np.array_equal(decode_frame(encoded.data, CODEC_ZSTD, shape=frame.shape, dtype=frame.dtype), frame)


@pytest.mark.parametrize("dtype", ["<f4", ">f8", "<i4", ">u2"])
def test_zstd_takes_float_and_foreign_byte_order(dtype: str) -> None:
    ct = first_frame(STORAGE_FRAMES["ct_int16"])
    frame = (ct * 0.5 + 0.25).astype(dtype) if dtype[1] == "f" else ct.astype(dtype)
    encoded = encode_verified(frame, CODEC_ZSTD)
    decoded = decode_frame(encoded.data, CODEC_ZSTD, shape=frame.shape, dtype=frame.dtype)
    assert decoded.dtype == np.dtype(dtype).newbyteorder("=")
    assert np.array_equal(decoded, frame)


@pytest.mark.parametrize("codec", IMAGE_CODECS)
def test_image_codecs_refuse_wide_pixels(codec: str) -> None:
    frame = first_frame("rtdose.dcm")
    with pytest.raises(CodecUnavailableError, match="zstd"):
        encode_frame(frame, codec)
    with pytest.raises(CodecUnavailableError, match="unknown storage codec"):
        encode_frame(frame, "webp")


@pytest.mark.parametrize("codec", ALL_CODECS)
def test_corrupt_storage_data_raises(codec: str) -> None:
    frame = first_frame(STORAGE_FRAMES["mr_small_int16"])
    data = encode_frame(frame, codec).data
    for bad in (data[: len(data) // 3], b"\x00" * 64, data[:1]):
        try:
            result = decode_frame(bad, codec, shape=frame.shape, dtype=frame.dtype)
        except CorruptDataError:
            continue
        # truncated HTJ2K may decode to wrong pixels (checksums catch that), but never to a wrong shape
        assert codec == CODEC_HTJ2K and result.shape == frame.shape and result.dtype == frame.dtype
    with pytest.raises(CorruptDataError):
        decode_frame(data, codec, shape=(frame.shape[0] + 1, frame.shape[1]), dtype=frame.dtype)
    with pytest.raises(CorruptDataError):
        decode_frame(data, codec, shape=frame.shape, dtype=np.float32 if codec != CODEC_ZSTD else np.int32)


def test_encode_verified_compares_bits_not_values() -> None:
    ct = first_frame(STORAGE_FRAMES["ct_int16"]).astype(np.float32)
    ct[::7, ::5] = np.nan  # NaN != NaN: a value comparison would call this lossless round trip a failure
    ct[1, 1] = -0.0
    encoded = encode_verified(ct, CODEC_ZSTD)
    decoded = decode_frame(encoded.data, CODEC_ZSTD, shape=ct.shape, dtype=ct.dtype)
    assert decoded.tobytes() == ct.tobytes()


def test_warm_up_then_concurrent_round_trips_in_a_fresh_process(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """OpenJPH's first use is not thread-safe; after warm_up() concurrent use from a cold process is."""
    import subprocess
    import sys

    script = tmp_path / "race.py"
    script.write_text(
        "import numpy as np\n"
        "from concurrent.futures import ThreadPoolExecutor\n"
        "from engine import codecs\n"
        "from engine.testing.corpus import pydicom_test_files_dir\n"
        "import pydicom\n"
        "f = pydicom.dcmread(pydicom_test_files_dir() / 'CT_small.dcm').pixel_array\n"
        "frames = [np.roll(f, k, axis=0).copy() for k in range(16)]\n"
        "codecs.warm_up()\n"
        "def one(fr):\n"
        "    e = codecs.encode_frame(fr, 'htj2k')\n"
        "    return np.array_equal(codecs.decode_frame(e.data, 'htj2k', shape=fr.shape, dtype=fr.dtype), fr)\n"
        "with ThreadPoolExecutor(4) as ex:\n"
        "    print(sum(ex.map(one, frames)))\n"
    )
    for _ in range(3):
        out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True)
        assert out.stdout.strip() == "16", out.stderr
