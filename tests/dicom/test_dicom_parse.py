"""parse_part10 / parse_dataset over every real file: refusals, exact header bytes, query values."""

from __future__ import annotations

import io
import zlib

import pydicom
import pytest
from pydicom.multival import MultiValue

from dicom_corpus import (
    REFUSED,
    corpus,
    dataset_bytes,
    file_bytes,
    good_names,
    names,
    parsed,
    pydicom_dataset,
)
from engine.dicom import QUERY_ELEMENTS, assemble_dataset, parse_dataset, parse_part10
from engine.errors import InvalidDicomError, UnsupportedTransferSyntaxError
from engine.types import DEFLATED_EXPLICIT_VR_LE, EXPLICIT_VR_BE, EXPLICIT_VR_LE, IMPLICIT_VR_LE


def test_corpus_is_there() -> None:
    assert len(names()) > 140, "pydicom test files and pydicom-data must both be installed"
    assert set(REFUSED) <= set(names())


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_bad_files_are_refused_with_their_reason(name: str) -> None:
    error, words = REFUSED[name]
    with pytest.raises(error) as caught:
        parse_part10(file_bytes(name))
    assert words in str(caught.value)


@pytest.mark.parametrize("name", good_names())
def test_parts_reassemble_to_the_received_data_set(name: str) -> None:
    p = parsed(name)
    whole = p.header_prefix + p.pixel_element_header + bytes(p.pixel_value) + p.header_suffix
    assert whole == dataset_bytes(name)
    same = assemble_dataset(
        p.header_prefix, p.pixel_element_header, p.pixel_value, p.header_suffix, p.transfer_syntax_uid
    )
    if p.transfer_syntax_uid == DEFLATED_EXPLICIT_VR_LE:
        assert zlib.decompress(same, -zlib.MAX_WBITS) == whole
    else:
        assert same == whole
        assert file_bytes(name).endswith(same)


@pytest.mark.parametrize("name", good_names())
def test_identity_and_pixel_element_agree_with_pydicom(name: str) -> None:
    p = parsed(name)
    ds = pydicom_dataset(name)
    assert p.sop_class_uid == ds.SOPClassUID
    assert p.sop_instance_uid == ds.SOPInstanceUID
    assert p.study_instance_uid == ds.StudyInstanceUID
    assert p.series_instance_uid == ds.SeriesInstanceUID
    assert p.transfer_syntax_uid == ds.file_meta.TransferSyntaxUID
    pixel_keywords = [k for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData") if k in ds]
    assert (p.pixel is not None) == bool(pixel_keywords)
    if p.pixel is None:
        assert p.pixel_value == b"" and p.pixel_element_header == b"" and p.header_suffix == b""
        return
    element = ds[pixel_keywords[0]]
    assert p.pixel_vr == element.VR
    assert p.encapsulated == (element.is_undefined_length)
    assert p.pixel.rows == ds.Rows and p.pixel.columns == ds.Columns
    assert p.pixel.frames == int(ds.get("NumberOfFrames") or 1)
    assert p.pixel.bits_allocated == ds.BitsAllocated
    assert p.pixel.photometric == ds.PhotometricInterpretation
    if not p.encapsulated:
        assert bytes(p.pixel_value) == element.value


def _pydicom_text(value: object) -> str:
    if isinstance(value, MultiValue):
        return "\\".join(str(v) for v in value)
    return "" if value is None else str(value)


@pytest.mark.parametrize("name", good_names())
def test_query_values_match_pydicom(name: str) -> None:
    p = parsed(name)
    ds = pydicom_dataset(name)
    for keyword, (tag, _) in QUERY_ELEMENTS.items():
        if tag not in ds:
            assert keyword not in p.query
            continue
        expected = _pydicom_text(ds[tag].value).strip()
        assert p.query[keyword].strip() == expected, keyword


@pytest.mark.parametrize(
    "charset_file", ["chrH31.dcm", "chrX1.dcm", "chrI2.dcm", "chrH32.dcm", "chrGreek.dcm"]
)
def test_person_names_in_other_character_sets_are_decoded(charset_file: str) -> None:
    source = pydicom.dcmread(pydicom.data.get_charset_files(charset_file)[0])
    ds = pydicom.dcmread(corpus()["CT_small.dcm"])
    ds.SpecificCharacterSet = source.SpecificCharacterSet
    ds.PatientName = source.PatientName
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    p = parse_part10(buffer.getvalue())
    assert p.query["PatientName"] == str(source.PatientName)
    assert any(ord(c) > 127 for c in p.query["PatientName"])
    assert p.query["SpecificCharacterSet"] == _pydicom_text(source.SpecificCharacterSet)


def test_padded_pixel_data_keeps_its_excess_as_tail() -> None:
    p = parsed("MR_small_padded.dcm")
    assert p.pixel is not None
    assert len(p.pixel_value) == 8192 + 128


@pytest.mark.parametrize(
    ("name", "syntax", "sop_class"),
    [
        ("ExplVR_LitEndNoMeta.dcm", EXPLICIT_VR_LE, "1.2.840.10008.5.1.4.1.1.481.8"),
        ("ExplVR_BigEndNoMeta.dcm", EXPLICIT_VR_BE, "1.2.840.10008.5.1.4.1.1.481.8"),
        ("rtstruct.dcm", IMPLICIT_VR_LE, "1.2.840.10008.5.1.4.1.1.481.3"),
        ("OT-PAL-8-face.dcm", IMPLICIT_VR_LE, "1.2.840.10008.5.1.4.1.1.7"),
    ],
)
def test_bare_data_sets_parse_with_their_syntax(name: str, syntax: str, sop_class: str) -> None:
    data = file_bytes(name)
    p = parse_dataset(data, syntax)
    assert p.sop_class_uid == sop_class
    assert p.header_prefix + p.pixel_element_header + bytes(p.pixel_value) + p.header_suffix == data


def test_no_meta_is_not_a_data_set_either() -> None:
    # It opens with a stray byte before an explicit VR element: no syntax reads it.
    for syntax in (IMPLICIT_VR_LE, EXPLICIT_VR_LE):
        with pytest.raises(InvalidDicomError, match="truncated|invalid VR"):
            parse_dataset(file_bytes("no_meta.dcm"), syntax)


def test_data_set_declared_with_the_wrong_vr_encoding_is_read_as_what_it_is() -> None:
    implicit = dataset_bytes("MR_small_implicit.dcm")
    p = parse_dataset(implicit, EXPLICIT_VR_LE)
    assert p.transfer_syntax_uid == IMPLICIT_VR_LE
    explicit = dataset_bytes("MR_small.dcm")
    q = parse_dataset(explicit, IMPLICIT_VR_LE)
    assert q.transfer_syntax_uid == EXPLICIT_VR_LE
    assert bytes(p.pixel_value) == bytes(q.pixel_value)
    with pytest.raises(InvalidDicomError, match="requires explicit VR"):
        parse_dataset(implicit, EXPLICIT_VR_BE)


def test_unknown_transfer_syntax_is_refused() -> None:
    data = dataset_bytes("CT_small.dcm")
    with pytest.raises(UnsupportedTransferSyntaxError, match="1.2.3.4"):
        parse_dataset(data, "1.2.3.4")
    ds = pydicom.dcmread(corpus()["test-SR.dcm"])
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.94"  # JPIP Referenced: not stored by us
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    with pytest.raises(UnsupportedTransferSyntaxError, match=r"1\.2\.840\.10008\.1\.2\.4\.94"):
        parse_part10(buffer.getvalue())


def test_pixel_value_is_a_view_not_a_copy() -> None:
    data = dataset_bytes("693_UNCI.dcm")
    p = parse_dataset(data, EXPLICIT_VR_LE)
    assert isinstance(p.pixel_value, memoryview)
    assert p.pixel_value.obj is data


def test_empty_and_tiny_inputs_are_refused() -> None:
    with pytest.raises(InvalidDicomError, match="empty"):
        parse_dataset(b"", EXPLICIT_VR_LE)
    with pytest.raises(InvalidDicomError, match="truncated"):
        parse_dataset(b"\x08\x00", EXPLICIT_VR_LE)
    with pytest.raises(InvalidDicomError, match="DICM"):
        parse_part10(b"\x00" * 131)


def test_every_corpus_name_is_unique() -> None:
    paths = corpus()
    assert len(paths) == len(set(paths.values()))
