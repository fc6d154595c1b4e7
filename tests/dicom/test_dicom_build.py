"""Rebuilding data sets: same syntax byte for byte, other syntaxes through pydicom, Part-10 files."""

from __future__ import annotations

import io
import zlib

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.pixels import pixel_array

from dicom_corpus import good_names, normalised, parsed, pydicom_dataset
from engine.dicom import (
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    ParsedInstance,
    assemble_dataset,
    encapsulate,
    native_frames,
    native_pixel_value,
    parse_part10,
    part10,
    reencode_dataset,
    reencoded_around_pixels,
    split_encapsulated,
    validate_uid,
)
from engine.errors import InvalidDicomError, InvalidUIDError, PixelDataError, UnsupportedTransferSyntaxError
from engine.types import (
    DEFLATED_EXPLICIT_VR_LE,
    EXPLICIT_VR_BE,
    EXPLICIT_VR_LE,
    IMPLICIT_VR_LE,
    JPEG_BASELINE,
    RLE_LOSSLESS,
)

_SWAPPED_VRS = {"OW": 2, "OL": 4, "OF": 4, "OD": 8, "OV": 8}


def _read(data: bytes) -> pydicom.FileDataset:
    return pydicom.dcmread(io.BytesIO(data))


def _swap(value: bytes, width: int) -> bytes:
    return b"".join(value[i : i + width][::-1] for i in range(0, len(value), width))


def _assert_same_elements(
    original: Dataset, rebuilt: Dataset, swap: bool, where: str = "", private: bool = True
) -> None:
    """Every element of `original` (but pixel data, offset tables, group lengths) is in `rebuilt`, equal.

    private=False skips private elements: implicit VR drops their VR, so pydicom reads them back as
    UN or by a guessed private dictionary VR (the bytes are unchanged, their reading is not).
    """
    for element in original:
        if element.tag.group == 0x7FE0 or element.tag.element == 0:
            continue
        if not private and element.tag.is_private:
            continue
        label = f"{where}{element.tag}"
        assert element.tag in rebuilt, f"{label} missing"
        other = rebuilt[element.tag]
        if element.VR == "SQ":
            assert len(other.value) == len(element.value), label
            for index, (a, b) in enumerate(zip(element.value, other.value)):
                _assert_same_elements(a, b, swap, f"{label}[{index}].", private)
        elif swap and element.VR in _SWAPPED_VRS and isinstance(element.value, bytes):
            assert other.value == _swap(element.value, _SWAPPED_VRS[element.VR]), label
        else:
            assert other.value == element.value, label


def _explicit_le_value(p: ParsedInstance) -> bytes:
    assert p.pixel is not None
    frames = native_frames(p)
    if frames is not None:
        return native_pixel_value(frames, p.pixel, EXPLICIT_VR_LE)
    # 1-bit and YBR 422 data are byte streams: the same bytes in any byte order.
    return bytes(p.pixel_value)


NATIVE_OR_NONE = [n for n in good_names() if not parsed(n).encapsulated]


@pytest.mark.parametrize("name", NATIVE_OR_NONE)
def test_reencoded_to_explicit_le_pydicom_reads_the_same_instance(name: str) -> None:
    p = parsed(name)
    value = None if p.pixel is None else _explicit_le_value(p)
    data = reencode_dataset(
        p.header_prefix, p.header_suffix, p.transfer_syntax_uid, EXPLICIT_VR_LE, pixel_value=value
    )
    rebuilt = _read(part10(data, EXPLICIT_VR_LE, p.sop_class_uid, p.sop_instance_uid))
    original = pydicom_dataset(name)
    _assert_same_elements(original, rebuilt, swap=p.transfer_syntax_uid == EXPLICIT_VR_BE)
    if p.pixel is not None:
        desc = p.pixel
        signed = bool(desc.pixel_representation)
        ours = normalised(pixel_array(rebuilt, raw=True), desc.bits_stored, desc.bits_allocated, signed)
        theirs = normalised(pixel_array(original, raw=True), desc.bits_stored, desc.bits_allocated, signed)
        assert np.array_equal(ours, theirs)
        assert rebuilt.file_meta.TransferSyntaxUID == EXPLICIT_VR_LE


@pytest.mark.parametrize("target", [IMPLICIT_VR_LE, EXPLICIT_VR_BE, DEFLATED_EXPLICIT_VR_LE])
@pytest.mark.parametrize(
    "name", ["CT_small.dcm", "MR_small_bigendian.dcm", "OBXXXX1A.dcm", "waveform_ecg.dcm"]
)
def test_reencoded_to_other_native_syntaxes(name: str, target: str) -> None:
    p = parsed(name)
    value = None
    if p.pixel is not None:
        frames = native_frames(p)
        assert frames is not None
        value = native_pixel_value(frames, p.pixel, target)
    data = reencode_dataset(
        p.header_prefix, p.header_suffix, p.transfer_syntax_uid, target, pixel_value=value
    )
    rebuilt = _read(part10(data, target, p.sop_class_uid, p.sop_instance_uid))
    original = pydicom_dataset(name)
    swap = (p.transfer_syntax_uid == EXPLICIT_VR_BE) != (target == EXPLICIT_VR_BE)
    _assert_same_elements(original, rebuilt, swap=swap, private=target != IMPLICIT_VR_LE)
    if p.pixel is not None:
        assert np.array_equal(pixel_array(rebuilt, raw=True), pixel_array(original, raw=True))
    again = parse_part10(part10(data, target, p.sop_class_uid, p.sop_instance_uid))
    assert again.transfer_syntax_uid == target


@pytest.mark.parametrize("target", [IMPLICIT_VR_LE, EXPLICIT_VR_BE, DEFLATED_EXPLICIT_VR_LE])
@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small_bigendian.dcm", "OBXXXX1A.dcm"])
def test_the_header_around_a_pixel_value_is_what_reencoding_puts_there(name: str, target: str) -> None:
    # What a retrieve builds in one buffer, the value written into its place, is the re-encoded data set.
    p = parsed(name)
    frames = native_frames(p)
    assert frames is not None and p.pixel is not None
    value = native_pixel_value(frames, p.pixel, target)
    head, tail = reencoded_around_pixels(p.header_prefix, p.header_suffix, p.transfer_syntax_uid, target,
                                         value_length=len(value))
    whole = reencode_dataset(p.header_prefix, p.header_suffix, p.transfer_syntax_uid, target, pixel_value=value)
    joined = head + value + tail
    assert (zlib.decompress(whole, -zlib.MAX_WBITS) if target == DEFLATED_EXPLICIT_VR_LE else whole) == joined


@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "emri_small_RLE.dcm", "SC_rgb_rle_2frame.dcm"])
def test_native_data_set_reencoded_to_an_encapsulated_syntax(name: str) -> None:
    """Header of the native twin + codestreams of the RLE file: pydicom decodes the same pixels."""
    source = parsed(name)
    twin = parsed(name.replace("_RLE", "").replace("_rle", ""))
    assert source.pixel is not None
    _, codestreams = split_encapsulated(source.pixel_value, source.pixel.frames)
    data = reencode_dataset(
        twin.header_prefix,
        twin.header_suffix,
        twin.transfer_syntax_uid,
        RLE_LOSSLESS,
        pixel_value=encapsulate(codestreams),
    )
    rebuilt = _read(part10(data, RLE_LOSSLESS, twin.sop_class_uid, twin.sop_instance_uid))
    assert np.array_equal(rebuilt.pixel_array, pydicom_dataset(name).pixel_array)
    assert rebuilt["PixelData"].is_undefined_length


def test_reencoding_applies_updates_and_drops_stale_offset_tables() -> None:
    p = parsed("SC_rgb_dcmtk_+eb+cy+n1.dcm")
    assert p.pixel is not None
    _, codestreams = split_encapsulated(p.pixel_value, p.pixel.frames)
    prefix = p.header_prefix + (
        b"\xe0\x7f\x01\x00OV\x00\x00\x08\x00\x00\x00" + bytes(8)  # an Extended Offset Table
    )
    data = reencode_dataset(
        prefix,
        p.header_suffix,
        p.transfer_syntax_uid,
        JPEG_BASELINE,
        pixel_value=encapsulate(codestreams),
        updates={"PhotometricInterpretation": "RGB", "PlanarConfiguration": 0, "LossyImageCompression": None},
    )
    rebuilt = _read(part10(data, JPEG_BASELINE, p.sop_class_uid, p.sop_instance_uid))
    assert rebuilt.PhotometricInterpretation == "RGB"
    assert "ExtendedOffsetTable" not in rebuilt and "LossyImageCompression" not in rebuilt
    assert list(generate_frames(rebuilt.PixelData, number_of_frames=1))[0].rstrip(b"\x00") == codestreams[
        0
    ].rstrip(b"\x00")
    with pytest.raises(InvalidDicomError, match="not a DICOM keyword"):
        reencode_dataset(
            p.header_prefix,
            p.header_suffix,
            p.transfer_syntax_uid,
            EXPLICIT_VR_LE,
            updates={"NoSuchKeyword": 1},
        )


def test_reencoding_refuses_a_pixel_value_of_the_wrong_kind() -> None:
    p = parsed("CT_small.dcm")
    with pytest.raises(PixelDataError, match="must start with an item tag"):
        reencode_dataset(
            p.header_prefix, p.header_suffix, p.transfer_syntax_uid, RLE_LOSSLESS, pixel_value=b"\x00" * 8
        )
    with pytest.raises(PixelDataError, match="needs a native"):
        reencode_dataset(
            p.header_prefix,
            p.header_suffix,
            p.transfer_syntax_uid,
            EXPLICIT_VR_LE,
            pixel_value=encapsulate([b"ab"]),
            encapsulated=True,
        )
    with pytest.raises(UnsupportedTransferSyntaxError):
        reencode_dataset(p.header_prefix, p.header_suffix, p.transfer_syntax_uid, "1.2.3")


def test_deflated_instance_is_rebuilt_and_wrapped() -> None:
    p = parsed("image_dfl.dcm")
    data = assemble_dataset(
        p.header_prefix, p.pixel_element_header, p.pixel_value, p.header_suffix, p.transfer_syntax_uid
    )
    # PS3.5 A.5: padded to even length (this one deflates to an odd 4313 bytes), or storescp aborts
    assert len(data) % 2 == 0
    inflated = zlib.decompress(data, -zlib.MAX_WBITS)
    assert inflated == p.header_prefix + p.pixel_element_header + bytes(p.pixel_value) + p.header_suffix
    rebuilt = _read(part10(data, DEFLATED_EXPLICIT_VR_LE, p.sop_class_uid, p.sop_instance_uid))
    assert np.array_equal(rebuilt.pixel_array, pydicom_dataset("image_dfl.dcm").pixel_array)


def test_part10_file_meta() -> None:
    p = parsed("CT_small.dcm")
    dataset = assemble_dataset(
        p.header_prefix, p.pixel_element_header, p.pixel_value, p.header_suffix, p.transfer_syntax_uid
    )
    data = part10(dataset, p.transfer_syntax_uid, p.sop_class_uid, p.sop_instance_uid, source_ae="MODALITY1")
    assert data[:128] == bytes(128) and data[128:132] == b"DICM"
    meta = _read(data).file_meta
    assert meta.MediaStorageSOPClassUID == p.sop_class_uid
    assert meta.MediaStorageSOPInstanceUID == p.sop_instance_uid
    assert meta.TransferSyntaxUID == p.transfer_syntax_uid
    assert (
        meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID == validate_uid(IMPLEMENTATION_CLASS_UID, "x")
    )
    assert meta.ImplementationVersionName == IMPLEMENTATION_VERSION_NAME
    assert meta.SourceApplicationEntityTitle == "MODALITY1"
    assert meta.FileMetaInformationVersion == b"\x00\x01"
    assert data.endswith(dataset)
    assert 132 + 12 + meta.FileMetaInformationGroupLength == len(data) - len(dataset)
    with pytest.raises(InvalidUIDError):
        part10(dataset, p.transfer_syntax_uid, p.sop_class_uid, "1.2.3/../4")
    with pytest.raises(InvalidDicomError, match="AE Title"):
        part10(dataset, p.transfer_syntax_uid, p.sop_class_uid, p.sop_instance_uid, source_ae="X" * 17)
    with pytest.raises(UnsupportedTransferSyntaxError):
        part10(dataset, "1.2.3", p.sop_class_uid, p.sop_instance_uid)
