"""split / join / encapsulate over every encapsulated file, and fragment-to-frame mapping."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.encaps import generate_frames

from dicom_corpus import good_names, parsed, pydicom_dataset
from engine.dicom import encapsulate, join_encapsulated, split_encapsulated
from engine.errors import PixelDataError

ENCAPSULATED = [n for n in good_names() if parsed(n).encapsulated]
ITEM = b"\xfe\xff\x00\xe0"
DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"


def _value(bot: bytes, fragments: list[bytes]) -> bytes:
    parts = [ITEM + struct.pack("<L", len(bot)) + bot]
    parts += [ITEM + struct.pack("<L", len(f)) + f for f in fragments]
    return b"".join(parts) + DELIMITER


def _codestreams(name: str) -> list[bytes]:
    p = parsed(name)
    assert p.pixel is not None
    return split_encapsulated(p.pixel_value, p.pixel.frames)[1]


def test_corpus_has_multi_fragment_frames() -> None:
    assert len(ENCAPSULATED) > 40
    assert any(max(map(len, parsed(n).encapsulation.fragments_per_frame)) > 1 for n in ENCAPSULATED)  # type: ignore[union-attr]


@pytest.mark.parametrize("name", ENCAPSULATED)
def test_split_then_join_rebuilds_the_value_exactly(name: str) -> None:
    p = parsed(name)
    assert p.pixel is not None
    layout, codestreams = split_encapsulated(p.pixel_value, p.pixel.frames, p.extended_offset_table)
    assert len(codestreams) == p.pixel.frames
    assert layout.fragments_per_frame == p.encapsulation.fragments_per_frame  # type: ignore[union-attr]
    assert join_encapsulated(layout, codestreams) == bytes(p.pixel_value)
    ds = pydicom_dataset(name)
    theirs = list(generate_frames(ds.PixelData, number_of_frames=p.pixel.frames))
    assert [c.rstrip(b"\x00") for c in codestreams] == [t.rstrip(b"\x00") for t in theirs]


@pytest.mark.parametrize(
    "name", ["emri_small_jpeg_2k_lossless.dcm", "emri_small_jpeg_ls_lossless.dcm", "emri_small_RLE.dcm"]
)
def test_encapsulate_gives_one_even_fragment_per_frame_and_a_basic_offset_table(name: str) -> None:
    frames = _codestreams(name)
    value = encapsulate(frames)
    layout, back = split_encapsulated(value, len(frames))
    assert [b.rstrip(b"\x00") for b in back] == [f.rstrip(b"\x00") for f in frames]
    assert all(len(lengths) == 1 and lengths[0] % 2 == 0 for lengths in layout.fragments_per_frame)
    offsets = struct.unpack(f"<{len(frames)}L", layout.basic_offset_table)
    assert offsets[0] == 0 and list(offsets) == sorted(offsets)
    assert list(generate_frames(value, number_of_frames=len(frames))) == back


def _split_in_three(codestream: bytes) -> list[bytes]:
    cut = max(2, len(codestream) // 3 // 2 * 2)
    return [codestream[:cut], codestream[cut : 2 * cut], codestream[2 * cut :]]


def _offsets(fragments_per_frame: list[list[bytes]]) -> list[int]:
    offsets, position = [], 0
    for fragments in fragments_per_frame:
        offsets.append(position)
        position += sum(8 + len(f) for f in fragments)
    return offsets


@pytest.mark.parametrize("name", ["emri_small_jpeg_2k_lossless.dcm", "emri_small_jpeg_ls_lossless.dcm"])
@pytest.mark.parametrize("table", ["basic", "extended", "markers"])
def test_frames_spanning_many_fragments_are_mapped(name: str, table: str) -> None:
    frames = _codestreams(name)
    pieces = [_split_in_three(f) for f in frames]
    flat = [piece for frame in pieces for piece in frame]
    offsets = _offsets(pieces)
    bot = struct.pack(f"<{len(offsets)}L", *offsets) if table == "basic" else b""
    eot = struct.pack(f"<{len(offsets)}Q", *offsets) if table == "extended" else b""
    value = _value(bot, flat)
    layout, back = split_encapsulated(value, len(frames), eot)
    assert back == frames
    assert layout.fragments_per_frame == tuple(tuple(len(p) for p in frame) for frame in pieces)
    assert join_encapsulated(layout, back) == value


def test_a_wrong_basic_offset_table_falls_back_to_markers() -> None:
    frames = _codestreams("emri_small_jpeg_2k_lossless.dcm")
    pieces = [_split_in_three(f) for f in frames]
    bogus = struct.pack(f"<{len(frames)}L", *range(0, 4 * len(frames), 4))
    layout, back = split_encapsulated(_value(bogus, [p for f in pieces for p in f]), len(frames))
    assert back == frames
    assert layout.basic_offset_table == bogus


def test_fragments_that_cannot_be_mapped_are_refused() -> None:
    frames = _codestreams("emri_small_jpeg_2k_lossless.dcm")
    value = _value(b"", frames)
    with pytest.raises(PixelDataError, match="10 fragments for 20 frames"):
        split_encapsulated(value, 20)
    with pytest.raises(PixelDataError, match="cannot map 10 fragments onto 4 frames"):
        split_encapsulated(value, 4)
    with pytest.raises(PixelDataError, match="zero fragments"):
        split_encapsulated(_value(b"", []), 1)
    with pytest.raises(PixelDataError, match="undefined length"):
        split_encapsulated(ITEM + b"\x00" * 4 + ITEM + b"\xff" * 4 + DELIMITER, 1)
    with pytest.raises(PixelDataError, match="no Sequence Delimitation Item"):
        split_encapsulated(value[:-8], 10)


def test_join_refuses_codestreams_that_do_not_fit_the_layout() -> None:
    frames = _codestreams("emri_small_RLE.dcm")
    layout, _ = split_encapsulated(encapsulate(frames), len(frames))
    with pytest.raises(PixelDataError, match="frame 0 is"):
        join_encapsulated(layout, [frames[0] + b"xx", *frames[1:]])
    with pytest.raises(PixelDataError, match="codestreams given"):
        join_encapsulated(layout, frames[:-1])


def test_encapsulate_refuses_nothing_to_encapsulate() -> None:
    with pytest.raises(PixelDataError):
        encapsulate([])
    with pytest.raises(PixelDataError):
        encapsulate([b""])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(st.binary(min_size=1, max_size=40), min_size=1, max_size=4), min_size=1, max_size=5))
def test_join_inverts_split_for_any_fragment_layout(frames: list[list[bytes]]) -> None:
    offsets = _offsets(frames)
    value = _value(struct.pack(f"<{len(offsets)}L", *offsets), [f for frame in frames for f in frame])
    layout, codestreams = split_encapsulated(value, len(frames))
    assert codestreams == [b"".join(frame) for frame in frames]
    assert join_encapsulated(layout, codestreams) == value
