"""native_frames / native_pixel_value over every native file: exact inverse, same pixels as pydicom."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pydicom.pixels import pixel_array

from dicom_corpus import corpus, good_names, normalised, parsed, pydicom_dataset
from engine.dicom import native_frames, native_pixel_value, native_tail, parse_part10, write_native_value
from engine.errors import PixelDataError
from engine.types import EXPLICIT_VR_BE, EXPLICIT_VR_LE, JPEG_BASELINE, PixelDescription

NATIVE = [n for n in good_names() if parsed(n).pixel is not None and not parsed(n).encapsulated]
NOT_EXPRESSIBLE = {
    "liver.dcm",
    "liver_1frame.dcm",
    "liver_expb.dcm",
    "liver_expb_1frame.dcm",
    "SC_ybr_full_422_uncompressed.dcm",
}


def test_the_corpus_has_natives_of_every_kind() -> None:
    kinds = {(parsed(n).transfer_syntax_uid, parsed(n).pixel.bits_allocated) for n in NATIVE}  # type: ignore[union-attr]
    assert len(NATIVE) > 50
    assert (EXPLICIT_VR_BE, 8) in kinds and (EXPLICIT_VR_BE, 16) in kinds and (EXPLICIT_VR_BE, 32) in kinds


@pytest.mark.parametrize("name", NATIVE)
def test_native_round_trip_is_exact(name: str) -> None:
    p = parsed(name)
    assert p.pixel is not None
    frames = native_frames(p)
    if name in NOT_EXPRESSIBLE:
        assert frames is None
        return
    assert frames is not None
    assert len(frames) == p.pixel.frames
    assert all(f.shape == p.pixel.frame_shape and f.dtype.isnative for f in frames)
    back = native_pixel_value(frames, p.pixel, p.transfer_syntax_uid, native_tail(p), p.pixel_vr)
    assert back == bytes(p.pixel_value)


@pytest.mark.parametrize("name", [n for n in NATIVE if n not in NOT_EXPRESSIBLE])
def test_native_frames_are_the_pixels_pydicom_reads(name: str) -> None:
    p = parsed(name)
    desc = p.pixel
    assert desc is not None
    frames = native_frames(p)
    assert frames is not None
    ours = np.stack(frames) if desc.frames > 1 else frames[0]
    theirs = pixel_array(pydicom_dataset(name), raw=True)
    signed = bool(desc.pixel_representation)
    assert np.array_equal(
        normalised(ours, desc.bits_stored, desc.bits_allocated, signed),
        normalised(theirs, desc.bits_stored, desc.bits_allocated, signed),
    )


def test_little_endian_interleaved_frames_are_views() -> None:
    p = parsed("emri_small.dcm")
    frames = native_frames(p)
    assert frames is not None
    assert all(np.shares_memory(f, np.frombuffer(p.pixel_value, "u1")) for f in frames)


def test_planar_configuration_one_comes_back_interleaved() -> None:
    planar, interleaved = native_frames(parsed("color-pl.dcm")), native_frames(parsed("color-px.dcm"))
    assert planar is not None and interleaved is not None
    assert np.array_equal(planar[0], interleaved[0])
    assert parsed("color-pl.dcm").pixel.planar_configuration == 1  # type: ignore[union-attr]


def test_encapsulated_and_pixel_less_instances_have_no_native_frames() -> None:
    assert native_frames(parsed("JPEG2000.dcm")) is None
    assert native_frames(parsed("rtplan.dcm")) is None


@pytest.mark.parametrize("name", ["color-pl.dcm", "OBXXXX1A_expb_2frame.dcm", "emri_small_big_endian.dcm"])
def test_frames_are_written_into_their_place_in_a_larger_buffer_one_by_one(name: str) -> None:
    # As a retrieve builds a data set: planes apart (planar configuration 1), 8-bit OW words swapped
    # back (big endian), frames given by a generator; the bytes around the value stay as they were.
    p = parsed(name)
    frames = native_frames(p)
    assert frames is not None and p.pixel is not None
    buffer = bytearray(b"\xaa" * (len(p.pixel_value) + 20))
    place = memoryview(buffer)[10:-10]
    write_native_value(place, (f for f in frames), p.pixel, p.transfer_syntax_uid, native_tail(p), p.pixel_vr)
    assert buffer == b"\xaa" * 10 + bytes(p.pixel_value) + b"\xaa" * 10
    with pytest.raises(PixelDataError, match="not 2"):
        write_native_value(memoryview(buffer)[:2], frames, p.pixel, p.transfer_syntax_uid)


def test_frames_can_be_written_in_another_byte_order() -> None:
    big, little = parsed("emri_small_big_endian.dcm"), parsed("emri_small.dcm")
    frames = native_frames(big)
    assert frames is not None and little.pixel is not None
    assert native_pixel_value(frames, little.pixel, EXPLICIT_VR_LE) == bytes(little.pixel_value)


def test_mismatched_frames_are_refused() -> None:
    p = parsed("CT_small.dcm")
    assert p.pixel is not None
    frames = native_frames(p)
    assert frames is not None
    with pytest.raises(PixelDataError, match="frames given"):
        native_pixel_value(frames * 2, p.pixel, EXPLICIT_VR_LE)
    with pytest.raises(PixelDataError, match="expected int16"):
        native_pixel_value([frames[0].astype(np.float32)], p.pixel, EXPLICIT_VR_LE)
    with pytest.raises(PixelDataError, match="no native Pixel Data"):
        native_pixel_value(frames, p.pixel, JPEG_BASELINE)


_DESCRIPTIONS = st.builds(
    PixelDescription,
    rows=st.integers(1, 9),
    columns=st.integers(1, 9),
    frames=st.integers(1, 3),
    samples_per_pixel=st.sampled_from([1, 3]),
    bits_allocated=st.sampled_from([8, 16, 32]),
    bits_stored=st.just(8),
    high_bit=st.just(7),
    pixel_representation=st.integers(0, 1),
    photometric=st.just("MONOCHROME2"),
    planar_configuration=st.integers(0, 1),
)


@settings(max_examples=60, deadline=None)
@given(desc=_DESCRIPTIONS, syntax=st.sampled_from([EXPLICIT_VR_LE, EXPLICIT_VR_BE]), data=st.data())
def test_native_pixel_value_inverts_frame_layouts(
    desc: PixelDescription, syntax: str, data: st.DataObject
) -> None:
    kind = "i" if desc.pixel_representation else "u"
    dtype = np.dtype(f"={kind}{desc.bits_allocated // 8}")
    frames = [data.draw(arrays(dtype, desc.frame_shape)) for _ in range(desc.frames)]
    value = native_pixel_value(frames, desc, syntax)
    order = "<" if syntax == EXPLICIT_VR_LE else ">"
    flat = np.frombuffer(value, dtype.newbyteorder(order)).reshape(desc.frames, -1)
    for frame, stored in zip(frames, flat):
        expected = frame.transpose(2, 0, 1) if frame.ndim == 3 and desc.planar_configuration else frame
        assert np.array_equal(stored, expected.reshape(-1))


def test_packed_12_bit_data_is_kept_as_bytes() -> None:
    ds = pydicom.dcmread(corpus()["MR_small.dcm"])
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 64, 64, 12, 12, 11
    ds.PixelData = bytes(range(256)) * 24  # 64 x 64 samples of 12 bits: 6144 bytes
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    p = parse_part10(buffer.getvalue())
    assert p.pixel is not None and p.pixel.bits_allocated == 12
    assert native_frames(p) is None
    assert native_tail(p) == b""
