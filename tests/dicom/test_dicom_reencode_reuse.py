"""Explicit VR LE headers reused as they are for an encapsulated target: same elements as re-encoding."""

from __future__ import annotations

import io

import pydicom
import pytest
from pydicom.encaps import encapsulate as pydicom_encapsulate

from engine import dicom
from engine.testing.corpus import pydicom_test_files_dir
from engine.types import EXPLICIT_VR_LE, JPEG2000_LOSSLESS, RLE_LOSSLESS


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "examples_rgb_color.dcm"])
def test_reused_header_reads_back_with_every_element(name: str) -> None:
    data = (pydicom_test_files_dir() / name).read_bytes()
    parsed = dicom.parse_part10(data)
    assert parsed.transfer_syntax_uid == EXPLICIT_VR_LE
    value = pydicom_encapsulate([b"\xff\x4f\xff\x51" + b"\x00" * 60])
    fast = dicom.reencode_dataset(parsed.header_prefix, parsed.header_suffix, EXPLICIT_VR_LE, JPEG2000_LOSSLESS,
                                  pixel_value=value)  # fmt: skip
    # An update forces the pydicom re-encoding path; it changes nothing here (the same value).
    photometric = pydicom.dcmread(io.BytesIO(data)).PhotometricInterpretation
    slow = dicom.reencode_dataset(parsed.header_prefix, parsed.header_suffix, EXPLICIT_VR_LE, JPEG2000_LOSSLESS,
                                  pixel_value=value, updates={"PhotometricInterpretation": photometric})  # fmt: skip
    assert fast.startswith(parsed.header_prefix), "the header bytes are reused"
    a = pydicom.dcmread(io.BytesIO(dicom.part10(fast, JPEG2000_LOSSLESS, parsed.sop_class_uid, parsed.sop_instance_uid)))
    b = pydicom.dcmread(io.BytesIO(dicom.part10(slow, JPEG2000_LOSSLESS, parsed.sop_class_uid, parsed.sop_instance_uid)))
    assert [e.tag for e in a] == [e.tag for e in b]
    for element in b:
        assert a[element.tag].value == element.value, element.keyword


def test_group_length_of_the_pixel_group_takes_the_re_encoding_path() -> None:
    data = (pydicom_test_files_dir() / "CT_small.dcm").read_bytes()
    parsed = dicom.parse_part10(data)
    prefix = parsed.header_prefix + b"\xe0\x7f\x00\x00UL\x04\x00\x00\x00\x00\x00"
    value = pydicom_encapsulate([b"\x00" * 64])
    out = dicom.reencode_dataset(prefix, parsed.header_suffix, EXPLICIT_VR_LE, RLE_LOSSLESS, pixel_value=value)
    assert not out.startswith(prefix)
