"""Hostile input: truncation anywhere, corrupted lengths, unsafe UIDs, absurd pixel sizes."""

from __future__ import annotations

import io
import struct

import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dicom_corpus import corpus, dataset_bytes, parsed
from engine.dicom import ParsedInstance, parse_dataset, parse_part10, validate_uid
from engine.errors import InvalidDicomError, InvalidUIDError, PixelDataError

# Files whose data sets cover explicit / implicit / big endian, sequences, native and encapsulated.
TARGETS = [
    "CT_small.dcm",
    "rtplan.dcm",
    "emri_small_jpeg_ls_lossless.dcm",
    "MR_small_bigendian.dcm",
    "rtdose.dcm",
    "test-SR.dcm",
    "image_dfl.dcm",
]


def _parse_or_refuse(data: bytes, syntax: str) -> ParsedInstance | None:
    """Parse, or raise an engine error; anything else (IndexError, struct.error, ...) fails the test."""
    try:
        p = parse_dataset(data, syntax)
    except InvalidDicomError:
        return None
    return p


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(TARGETS[:-1]), fraction=st.floats(0, 1, exclude_max=True))
def test_truncation_anywhere_is_refused_or_parses_what_is_there(name: str, fraction: float) -> None:
    full = dataset_bytes(name)
    cut = full[: int(len(full) * fraction)]
    p = _parse_or_refuse(cut, parsed(name).transfer_syntax_uid)
    if p is not None:  # cut exactly between two top-level elements: a smaller, valid data set
        assert p.header_prefix + p.pixel_element_header + bytes(p.pixel_value) + p.header_suffix == cut


@pytest.mark.parametrize("name", TARGETS[:-1])
def test_truncation_at_every_offset_of_the_header(name: str) -> None:
    full = dataset_bytes(name)
    syntax = parsed(name).transfer_syntax_uid
    for end in range(0, min(len(full), 1500)):
        p = _parse_or_refuse(full[:end], syntax)
        if p is not None:
            assert p.header_prefix + p.header_suffix == full[:end]


def test_truncated_deflate_stream_is_refused() -> None:
    data = corpus()["image_dfl.dcm"].read_bytes()
    with pytest.raises(InvalidDicomError, match="deflate"):
        parse_part10(data[:-100])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(TARGETS[:-1]),
    position=st.floats(0, 1, exclude_max=True),
    noise=st.binary(min_size=4, max_size=4),
)
def test_corrupted_bytes_are_refused_or_reassemble_exactly(name: str, position: float, noise: bytes) -> None:
    full = bytearray(dataset_bytes(name))
    at = int((len(full) - 4) * position)
    full[at : at + 4] = noise
    data = bytes(full)
    try:
        p = parse_dataset(data, parsed(name).transfer_syntax_uid)
    except InvalidDicomError:
        return
    assert p.header_prefix + p.pixel_element_header + bytes(p.pixel_value) + p.header_suffix == data


def _with(name: str, **changes: object) -> bytes:
    ds = pydicom.dcmread(corpus()[name])
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.parametrize("length", [0, 2, 8190, 8194, 16384, 0x7FFFFFFF, 0xFFFFFFFE])
def test_flipped_pixel_data_length_is_refused(length: int) -> None:
    data = bytearray(corpus()["MR_small.dcm"].read_bytes())
    header = data.rfind(b"\xe0\x7f\x10\x00OW\x00\x00")
    struct.pack_into("<L", data, header + 8, length)
    # Shorter lengths leave pixel bytes to be read as elements: refused for what they then look like.
    words = "truncated: Pixel Data value" if length > 9000 else None
    with pytest.raises(InvalidDicomError, match=words):
        parse_part10(bytes(data))


@pytest.mark.parametrize(
    "uid",
    [
        "../../etc",
        "1.2/3",
        "1..2",
        ".1.2",
        "1.2.",
        "1.2.3 4",
        "1.2.3.a",
        "1." + "2" * 63,
        "1.2\\3.4",
        "1.2\x003",
    ],
)
def test_unsafe_uids_are_refused(uid: str) -> None:
    with pytest.raises(InvalidUIDError):
        validate_uid(uid, "x")
    for keyword in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID"):
        with pytest.raises(InvalidUIDError, match=keyword):
            parse_part10(_with("MR_small.dcm", **{keyword: uid}))


def test_non_ascii_uid_is_refused() -> None:
    with pytest.raises(InvalidUIDError):
        validate_uid("１.２", "x")


def test_good_uids_pass() -> None:
    for uid in ("1.2.840.10008.1.2.1", "2.25.1234567890123456789", "1.0.3", "1.2." + "3" * 60):
        assert validate_uid(uid, "x") == uid
    with pytest.raises(InvalidUIDError, match="empty"):
        validate_uid("", "SOP Instance UID")


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"Rows": 65535, "Columns": 65535, "NumberOfFrames": 2147483647}, "more than the 2147483648 allowed"),
        ({"NumberOfFrames": 2147483647}, "need"),
        ({"NumberOfFrames": "99999999999999"}, "Number of Frames is 99999999999999"),
        ({"NumberOfFrames": 0}, "Number of Frames is 0"),
        ({"Rows": 0}, "image of 0 rows"),
        ({"BitsAllocated": 13}, "Bits Allocated is 13"),
        ({"BitsStored": 17}, "Bits Stored 17"),
        ({"SamplesPerPixel": 2}, "Samples per Pixel is 2"),
        ({"PixelRepresentation": 2}, "Pixel Representation is 2"),
        ({"Rows": 32}, "a frame or more longer"),
        ({"Rows": 65}, "need 8320"),
        ({"PhotometricInterpretation": ""}, "PhotometricInterpretation is missing"),
    ],
)
def test_impossible_pixel_attributes_are_refused_before_anything_is_allocated(
    changes: dict[str, object], words: str
) -> None:
    with pytest.raises(PixelDataError) as caught:
        parse_part10(_with("MR_small.dcm", **changes))
    assert words in str(caught.value)


def test_encapsulated_frame_counts_that_cannot_be_mapped_are_refused() -> None:
    with pytest.raises(PixelDataError, match="10 fragments for 11 frames"):
        parse_part10(_with("emri_small_jpeg_2k_lossless.dcm", NumberOfFrames=11))
    with pytest.raises(PixelDataError, match="cannot map 10 fragments onto 3 frames"):
        parse_part10(_with("emri_small_jpeg_2k_lossless.dcm", NumberOfFrames=3))


def test_zero_fragments_are_refused() -> None:
    data = corpus()["MR_small_RLE.dcm"].read_bytes()
    pixel = data.rfind(b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff")
    empty = data[: pixel + 12] + b"\xfe\xff\x00\xe0\x00\x00\x00\x00" + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    with pytest.raises(PixelDataError, match="zero fragments"):
        parse_part10(empty)


def test_deeply_nested_sequences_are_refused() -> None:
    item = b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
    nested = b"\x08\x00\x15\x11SQ\x00\x00\xff\xff\xff\xff" + item
    data = nested * 200
    with pytest.raises(InvalidDicomError, match="nested more than"):
        parse_dataset(data, "1.2.840.10008.1.2.1")


def test_invalid_vr_is_refused_with_its_offset() -> None:
    data = bytearray(dataset_bytes("CT_small.dcm"))
    at = data.find(b"\x08\x00\x08\x00CS")  # Image Type
    data[at + 4 : at + 6] = b"zz"
    with pytest.raises(InvalidDicomError, match=rf"\(0008,0008\) at offset {at} has an invalid VR b'zz'"):
        parse_dataset(bytes(data), "1.2.840.10008.1.2.1")


def _ui(group: int, element: int, uid: str) -> bytes:
    value = uid.encode() + b"\0" * (len(uid) % 2)
    return struct.pack("<HH2sH", group, element, b"UI", len(value)) + value


@pytest.mark.parametrize("where", ["right after", "at the end"])
def test_an_element_there_twice_is_refused(where: str) -> None:
    """A second SOP Instance UID: DCMTK reads the first, pydicom the last, so the two disagree on identity."""
    data = dataset_bytes("CT_small.dcm")
    at = data.find(b"\x08\x00\x18\x00UI")
    after = at + 8 + struct.unpack_from("<H", data, at + 6)[0] if where == "right after" else len(data)
    second = _ui(0x0008, 0x0018, "1.2.826.0.1.3680043.8.498.42")
    with pytest.raises(InvalidDicomError, match=rf"element \(0008,0018\) at offset {after} comes after"):
        parse_dataset(data[:after] + second + data[after:], "1.2.840.10008.1.2.1")


def test_elements_out_of_order_are_refused() -> None:
    data = dataset_bytes("CT_small.dcm")
    at = data.find(b"\x08\x00\x18\x00UI")
    end = at + 8 + struct.unpack_from("<H", data, at + 6)[0]
    moved = data[:at] + data[end:] + data[at:end]  # the SOP Instance UID after the pixel data
    with pytest.raises(InvalidDicomError, match=r"PS3.5 7.1 wants each element once, in ascending order"):
        parse_dataset(moved, "1.2.840.10008.1.2.1")


def test_file_meta_elements_in_a_received_data_set_are_refused() -> None:
    data = _ui(0x0002, 0x0010, "1.2.840.10008.1.2.2") + dataset_bytes("CT_small.dcm")
    with pytest.raises(InvalidDicomError, match=r"file meta element \(0002,0010\) at offset 0 of the data set"):
        parse_dataset(data, "1.2.840.10008.1.2.1")
