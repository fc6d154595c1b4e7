"""Transfer-syntax frame codecs against pydicom's own decoders, on every compressed corpus file."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pydicom
import pytest
from codec_corpus import codestreams, compressed_corpus, dataset, describe, first_frame, frame_of
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate

from engine.codecs import (
    ENCODABLE_SYNTAXES,
    decode_syntax_frame,
    encode_frame,
    encode_syntax_frame,
    frame_dtype,
    syntax_for_codec,
)
from engine.codecs._markers import parse_j2k
from engine.errors import CodecUnavailableError, CorruptDataError, UnsupportedTransferSyntaxError
from engine.types import (
    HTJ2K_LOSSLESS,
    HTJ2K_LOSSLESS_RPCL,
    JPEG2000,
    JPEG2000_LOSSLESS,
    JPEG_BASELINE,
    JPEG_EXTENDED,
    JPEG_LOSSLESS_P14,
    JPEG_LOSSLESS_SV1,
    JPEGLS_LOSSLESS,
    LOSSLESS_ENCAPSULATED_SYNTAXES,
    RLE_LOSSLESS,
    PixelDescription,
)

CORPUS = compressed_corpus()
LOSSY_JPEG = {JPEG_BASELINE, JPEG_EXTENDED}
MAX_FRAMES = 2  # frames checked per file; the rest of a multi-frame file adds time, not coverage


def _syntax(name: str) -> str:
    return str(dataset(name).file_meta.TransferSyntaxUID)


def test_corpus_covers_every_decoder() -> None:
    syntaxes = {_syntax(name) for name in CORPUS}
    assert {RLE_LOSSLESS, JPEG_LOSSLESS_SV1, JPEGLS_LOSSLESS, JPEG2000_LOSSLESS, JPEG2000, JPEG_BASELINE} <= syntaxes
    assert len(CORPUS) >= 50


@pytest.mark.parametrize("name", CORPUS)
def test_decoder_matches_pydicom(name: str) -> None:
    desc = describe(dataset(name))
    syntax = _syntax(name)
    for index, data in enumerate(codestreams(name)[:MAX_FRAMES]):
        ours = decode_syntax_frame(data, syntax, desc)
        theirs = frame_of(name, index)
        assert ours.shape == theirs.shape == desc.frame_shape
        assert ours.dtype == theirs.dtype == frame_dtype(desc)
        if syntax in LOSSY_JPEG:
            # libjpeg-turbo and libjpeg differ in IDCT and chroma upsampling rounding
            assert np.abs(ours.astype(np.int32) - theirs.astype(np.int32)).max() <= 8
        else:
            assert np.array_equal(ours, theirs)


LOSSLESS_CORPUS = [name for name in CORPUS if _syntax(name) in LOSSLESS_ENCAPSULATED_SYNTAXES]


@pytest.mark.parametrize("name", LOSSLESS_CORPUS)
def test_lossless_input_rebuilds_in_its_own_syntax(name: str) -> None:
    desc = describe(dataset(name))
    syntax = _syntax(name)
    for data in codestreams(name)[:MAX_FRAMES]:
        first = decode_syntax_frame(data, syntax, desc)
        rebuilt = encode_syntax_frame(first, syntax, desc)
        assert np.array_equal(decode_syntax_frame(rebuilt, syntax, desc), first)


def _pydicom_decode(codestream: bytes, syntax: str, desc: PixelDescription) -> np.ndarray:
    """Wrap one encoded frame in a data set and let pydicom (pylibjpeg / its RLE decoder) decode it."""
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.Rows, ds.Columns, ds.SamplesPerPixel = desc.rows, desc.columns, desc.samples_per_pixel
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = desc.bits_allocated, desc.bits_stored, desc.high_bit
    ds.PixelRepresentation, ds.PhotometricInterpretation = desc.pixel_representation, desc.photometric
    if desc.samples_per_pixel > 1:
        ds.PlanarConfiguration = 0
    ds.PixelData = encapsulate([codestream])
    ds["PixelData"].VR = "OB"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ds.pixel_array


INTEROP_FILES = ["693_UNCR.dcm", "MR_small.dcm", "US1_UNCR.dcm", "OBXXXX1A.dcm", "SC_rgb_16bit.dcm"]


@pytest.mark.parametrize("syntax", sorted(ENCODABLE_SYNTAXES))
@pytest.mark.parametrize("name", INTEROP_FILES)
def test_encoded_frames_decode_in_pydicom(name: str, syntax: str) -> None:
    desc = describe(dataset(name))
    frame = first_frame(name)
    try:
        data = encode_syntax_frame(frame, syntax, desc)
    except CodecUnavailableError:
        assert syntax not in (RLE_LOSSLESS, JPEGLS_LOSSLESS, JPEG2000_LOSSLESS, HTJ2K_LOSSLESS)
        return
    assert np.array_equal(decode_syntax_frame(data, syntax, desc), frame)
    assert np.array_equal(_pydicom_decode(data, syntax, desc), frame)


def test_ybr_rct_applies_the_reversible_colour_transform() -> None:
    name = "US1_UNCR.dcm"
    desc = dataclasses.replace(describe(dataset(name)), photometric="YBR_RCT")
    frame = first_frame(name)
    for syntax in (JPEG2000_LOSSLESS, HTJ2K_LOSSLESS, HTJ2K_LOSSLESS_RPCL):
        data = encode_syntax_frame(frame, syntax, desc)
        assert parse_j2k(data).multiple_component_transform
        assert np.array_equal(decode_syntax_frame(data, syntax, desc), frame)
        assert np.array_equal(_pydicom_decode(data, syntax, desc), frame)
    plain = encode_syntax_frame(frame, HTJ2K_LOSSLESS_RPCL, describe(dataset(name)))
    assert not parse_j2k(plain).multiple_component_transform


def test_signed_12_bit_is_sign_extended() -> None:
    ct = first_frame("693_UNCR.dcm")
    desc = dataclasses.replace(describe(dataset("693_UNCR.dcm")), bits_stored=12, high_bit=11)
    frame = np.clip(ct, -2048, 2047).astype(np.int16)
    for syntax in (JPEG_LOSSLESS_SV1, JPEG_LOSSLESS_P14, JPEGLS_LOSSLESS, JPEG2000_LOSSLESS, RLE_LOSSLESS):
        data = encode_syntax_frame(frame, syntax, desc)
        assert np.array_equal(decode_syntax_frame(data, syntax, desc), frame)
        assert np.array_equal(_pydicom_decode(data, syntax, desc), frame)


def test_unknown_and_lossy_targets_are_refused() -> None:
    desc = describe(dataset("MR_small.dcm"))
    frame = first_frame("MR_small.dcm")
    with pytest.raises(UnsupportedTransferSyntaxError, match="lossy"):
        encode_syntax_frame(frame, JPEG_BASELINE, desc)
    with pytest.raises(UnsupportedTransferSyntaxError):
        encode_syntax_frame(frame, "1.2.3.4", desc)
    with pytest.raises(UnsupportedTransferSyntaxError):
        decode_syntax_frame(b"\x00" * 16, "1.2.840.10008.1.2.4.100", desc)


def test_formats_a_syntax_cannot_express_are_refused() -> None:
    dose = first_frame("rtdose.dcm")
    desc = describe(dataset("rtdose.dcm"))
    assert dose.dtype == np.uint32
    assert np.array_equal(decode_syntax_frame(encode_syntax_frame(dose, RLE_LOSSLESS, desc), RLE_LOSSLESS, desc), dose)
    for syntax in (JPEGLS_LOSSLESS, JPEG_LOSSLESS_SV1, HTJ2K_LOSSLESS_RPCL):
        with pytest.raises(CodecUnavailableError, match="16 bits"):
            encode_syntax_frame(dose, syntax, desc)
    rgba = np.zeros((4, 4, 4), dtype=np.uint32)
    rgba_desc = dataclasses.replace(desc, rows=4, columns=4, samples_per_pixel=4, photometric="ARGB")
    with pytest.raises(CodecUnavailableError, match="15 byte planes"):
        encode_syntax_frame(rgba, RLE_LOSSLESS, rgba_desc)
    ict = dataclasses.replace(describe(dataset("US1_UNCR.dcm")), photometric="YBR_ICT")
    with pytest.raises(CodecUnavailableError, match="irreversible"):
        encode_syntax_frame(first_frame("US1_UNCR.dcm"), JPEG2000_LOSSLESS, ict)


CORRUPT_CASES = [
    ("MR_small_RLE.dcm", RLE_LOSSLESS),
    ("JPEG-LL.dcm", JPEG_LOSSLESS_SV1),
    ("MR_small_jpeg_ls_lossless.dcm", JPEGLS_LOSSLESS),
    ("MR_small_jp2klossless.dcm", JPEG2000_LOSSLESS),
    ("SC_rgb_jpeg_dcmtk.dcm", JPEG_BASELINE),
]


@pytest.mark.parametrize(("name", "syntax"), CORRUPT_CASES)
def test_corrupt_codestreams_raise(name: str, syntax: str) -> None:
    desc = describe(dataset(name))
    data = codestreams(name)[0]
    for bad in (data[: len(data) // 2], b"\x00" * 200, bytes(range(256)) * 3):
        try:
            result = decode_syntax_frame(bad, syntax, desc)
        except CorruptDataError:
            continue
        # a decoder may fill a truncated tail with grey; it must still be the described frame
        assert result.shape == desc.frame_shape and result.dtype == frame_dtype(desc)
    wrong = dataclasses.replace(desc, rows=desc.rows + 2)
    with pytest.raises(CorruptDataError):
        decode_syntax_frame(data, syntax, wrong)


def test_htj2k_syntaxes_decode_what_openjpeg_decodes() -> None:
    desc = describe(dataset("693_UNCR.dcm"))
    frame = first_frame("693_UNCR.dcm")
    data = encode_syntax_frame(frame, HTJ2K_LOSSLESS_RPCL, desc)
    for syntax in (HTJ2K_LOSSLESS, HTJ2K_LOSSLESS_RPCL, "1.2.840.10008.1.2.4.203"):
        assert np.array_equal(decode_syntax_frame(data, syntax, desc), frame)
    truncated = data[: len(data) // 3]
    wrong = dataclasses.replace(desc, columns=desc.columns * 2)
    with pytest.raises(CorruptDataError):
        decode_syntax_frame(truncated, HTJ2K_LOSSLESS_RPCL, wrong)


@pytest.mark.parametrize("name", ["693_UNCR.dcm", "MR2_UNCR.dcm", "US1_UNCR.dcm", "OBXXXX1A.dcm"])
def test_stored_htj2k_chunks_are_valid_rpcl_frames(name: str) -> None:
    desc = describe(dataset(name))
    frame = first_frame(name)
    chunk = encode_frame(frame, "htj2k").data  # unsigned 16-bit is coded as int16: same values
    syntax = syntax_for_codec("htj2k")
    assert syntax == HTJ2K_LOSSLESS_RPCL
    assert np.array_equal(decode_syntax_frame(chunk, syntax, desc), frame)
    assert np.array_equal(_pydicom_decode(chunk, syntax, desc), frame)
