"""Every real file of pydicom's test data and pydicom-data: import, export, compare with what was sent."""

from __future__ import annotations

import io
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest

from engine.archive import Archive
from engine.errors import EngineError
from engine.testing.corpus import corpus_files, readable
from engine.types import DEFLATED_EXPLICIT_VR_LE, LOSSLESS_ENCAPSULATED_SYNTAXES, NATIVE_SYNTAXES

FILES = corpus_files()

# Files pydicom reads but the archive refuses, with the reason it must give (a substring of the error).
REFUSED: dict[str, str] = {
    "SC_rgb_jpeg.dcm": "implicit",  # meta says JPEG Baseline, the data set is implicit VR
    "badVR.dcm": "NumberOfFrames",  # '1A'
    "bad_sequence.dcm": "UID",  # hash strings where UIDs belong
    # Its JPEG 2000 codestream is damaged: pydicom's decoders cannot read its header either.
    "JPEG2000-embedded-sequence-delimiter.dcm": "declares 1024 x 3722445056 pixels",
    "meta_missing_tsyntax.dcm": "(0002,0010)",
    # Not complete instances: no UID to file them under.
    "JPEGLSNearLossless_08.dcm": "StudyInstanceUID",
    "JPEGLSNearLossless_16.dcm": "StudyInstanceUID",
    "SC_rgb_jls_lossy_line.dcm": "StudyInstanceUID",
    "SC_rgb_jls_lossy_sample.dcm": "StudyInstanceUID",
    "UN_sequence.dcm": "SOPClassUID",
    "empty_charset_LEI.dcm": "SOPClassUID",
    "nested_priv_SQ.dcm": "SOPClassUID",
    "no_meta_group_length.dcm": "SOPClassUID",
    "priv_SQ.dcm": "SOPClassUID",
}


def _dataset_bytes(part10: bytes) -> tuple[str, bytes]:
    """(transfer syntax, data set bytes after the file meta) of a Part-10 file."""
    ds = pydicom.dcmread(io.BytesIO(part10), stop_before_pixels=True)
    meta_end = 132 + 12 + int(ds.file_meta.FileMetaInformationGroupLength)
    return str(ds.file_meta.TransferSyntaxUID), part10[meta_end:]


def _pixels(data: bytes) -> np.ndarray | None:
    ds = pydicom.dcmread(io.BytesIO(data))
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        return None
    return np.asarray(ds.pixel_array)


def _inflate(data: bytes) -> bytes:
    return zlib.decompress(data, -zlib.MAX_WBITS)


def _can_decode(data: bytes) -> bool:
    try:
        _pixels(data)
    except Exception:  # noqa: BLE001 - pydicom raises many kinds for what it cannot decode
        return False
    return True


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[Archive]:
    # One archive per file: several corpus files share a SOP Instance UID with different content.
    with Archive.open(tmp_path / "archive") as a:
        yield a


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_import_export_roundtrip(archive: Archive, path: Path) -> None:
    sent = path.read_bytes()
    before = archive.stats()
    if not readable(path):  # pydicom cannot read it completely: truncated, no file meta, ...
        with pytest.raises(EngineError) as info:
            archive.ingest(sent, source=str(path))
        assert str(info.value), "a refusal must say why"
        assert archive.stats() == before
        return
    if path.name in REFUSED:
        with pytest.raises(EngineError, match=REFUSED[path.name]):
            archive.ingest(sent, source=str(path))
        assert archive.stats() == before
        return
    result = archive.ingest(sent, source=str(path))
    assert result.status in ("stored", "duplicate")
    sent_syntax, sent_dataset = _dataset_bytes(sent)
    record = archive.record(result.sop_instance_uid)

    original = archive.read_instance(result.sop_instance_uid, "original")
    got_syntax, got_dataset = _dataset_bytes(original)
    assert got_syntax == sent_syntax
    if result.status == "stored":
        lossless_input = sent_syntax in LOSSLESS_ENCAPSULATED_SYNTAXES
        if sent_syntax == DEFLATED_EXPLICIT_VR_LE:
            # zlib settings differ between writers: the promise is the inflated data set.
            assert _inflate(got_dataset) == _inflate(sent_dataset)
        elif not lossless_input:
            assert got_dataset == sent_dataset, "native and lossy input must come back byte for byte"
        elif _can_decode(sent):
            assert np.array_equal(_pixels(original), _pixels(sent)), "lossless input must be pixel-identical"

    explicit = archive.read_instance(result.sop_instance_uid, "explicit")
    stored = archive.read_instance(result.sop_instance_uid, "stored")
    if record.pixel is not None and _can_decode(sent) and sent_syntax in NATIVE_SYNTAXES | LOSSLESS_ENCAPSULATED_SYNTAXES:
        reference = _pixels(sent)
        assert np.array_equal(_pixels(explicit), reference)
        if _can_decode(stored):
            # The same values, mlut_18.dcm included: its native pixels hold values beyond Bits Stored, which
            # a stored codestream would carry and a decoder of that syntax read differently.
            assert np.array_equal(_pixels(stored), reference)
    assert archive.verify(deep=True) == []




@pytest.mark.parametrize("keyword", ["FloatPixelData", "DoubleFloatPixelData"])
def test_float_pixel_data_received_in_implicit_vr_keeps_its_element_in_explicit_vr(archive: Archive, keyword: str) -> None:
    """The corpus holds float pixel data only in explicit VR; from implicit VR the element must keep its tag
    (and get its OF / OD VR), not turn into (7FE0,0010) Pixel Data."""
    ds = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    bits = 32 if keyword == "FloatPixelData" else 64
    pixels = np.random.default_rng(3).standard_normal((ds.Rows, ds.Columns)).astype(f"<f{bits // 8}")
    del ds.PixelData, ds.BitsStored, ds.HighBit, ds.PixelRepresentation
    ds.BitsAllocated = bits
    setattr(ds, keyword, pixels.tobytes())
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    out = io.BytesIO()
    ds.save_as(out, implicit_vr=True, little_endian=True)
    sop = archive.ingest(out.getvalue()).sop_instance_uid
    back = pydicom.dcmread(io.BytesIO(archive.read_instance(sop, "explicit")))
    assert keyword in back and "PixelData" not in back
    assert back[keyword].VR == ("OF" if bits == 32 else "OD")
    assert np.array_equal(back.pixel_array, pixels)


@pytest.mark.parametrize("kind", ["int32", "float32"])
def test_frames_kept_with_zstd_have_lower_levels_too(archive: Archive, kind: str) -> None:
    """32-bit and float frames (no image codec takes them) get explicit pyramid levels like any other frame
    larger than the smallest level, so a viewer's low-resolution first read works for them as well."""
    from engine.codecs import downsample

    ds = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    rng = np.random.default_rng(5)
    pixels = (rng.standard_normal((300, 512)) * 1e6).astype("<i4" if kind == "int32" else "<f4")
    ds.Rows, ds.Columns = pixels.shape
    if kind == "int32":
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 32, 32, 31, 1
        ds.PixelData = pixels.tobytes()
    else:
        del ds.PixelData, ds.BitsStored, ds.HighBit, ds.PixelRepresentation
        ds.BitsAllocated = 32
        ds.FloatPixelData = pixels.tobytes()
    out = io.BytesIO()
    ds.save_as(out)
    sop = archive.ingest(out.getvalue()).sop_instance_uid
    record = archive.record(sop)
    assert record.codec == "zstd" and len(record.levels) > 1
    assert np.array_equal(archive.read_frame(sop, 0, 0), pixels)
    assert np.array_equal(archive.read_frame(sop, 0, 1), downsample(pixels))
    assert archive.verify(deep=True) == []


@pytest.mark.parametrize("name", ["liver.dcm", "SC_ybr_full_422_uncompressed.dcm"])
def test_packed_frames_are_read_one_by_one_and_have_lower_levels(archive: Archive, name: str) -> None:
    """1-bit and YBR_FULL_422 native data is kept byte for byte as one packed value; its frames still
    unpack one by one (0/1 pixels, full-resolution YBR) and get lower levels like any other frame."""
    from pydicom.pixels import pixel_array

    from engine.codecs import downsample

    (path,) = [p for p in FILES if p.name == name]
    sop = archive.ingest(path.read_bytes()).sop_instance_uid
    record = archive.record(sop)
    assert record.layout == "raw" and len(record.levels) > 1
    expected = pixel_array(pydicom.dcmread(path), as_rgb=False)
    frames = list(expected) if record.pixel is not None and record.pixel.frames > 1 else [expected]
    for number, frame in enumerate(frames):
        assert np.array_equal(archive.read_frame(sop, number, 0), frame)
    assert np.array_equal(archive.read_frame(sop, 0, 1), downsample(frames[0].astype(np.uint8)))
    assert archive.read_instance(sop) == archive.read_instance(sop, "original")
    assert archive.verify(deep=True) == []
