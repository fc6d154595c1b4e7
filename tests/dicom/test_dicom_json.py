"""dataset_to_json: the DICOM JSON model of stored header bytes, with bulk data URIs."""

from __future__ import annotations

import json
from typing import Any

import pytest

import pydicom

from dicom_corpus import corpus, good_names, parsed
from engine.dicom import dataset_to_json
from engine.errors import InvalidDicomError


def _pydicom_json(name: str) -> dict[str, Any]:
    ds = pydicom.dcmread(corpus()[name])  # a fresh copy: the shared cached one must stay intact
    for tag in [t for t in ds.keys() if t.group == 0x7FE0 or t.element == 0]:
        del ds[tag]
    return ds.to_json_dict()


@pytest.mark.parametrize(
    "name", ["CT_small.dcm", "MR_small_bigendian.dcm", "rtplan.dcm", "test-SR.dcm", "JPEG2000.dcm"]
)
def test_json_without_bulk_data_matches_pydicom(name: str) -> None:
    p = parsed(name)
    ours = dataset_to_json(p.header_prefix, p.header_suffix, p.transfer_syntax_uid)
    theirs = _pydicom_json(name)
    assert "7FE00010" not in ours
    if name == "MR_small_bigendian.dcm":  # binary values are given little endian, pydicom keeps file order
        assert ours.keys() == theirs.keys()
        return
    assert ours == theirs


def test_bulk_data_uris_name_every_large_value_by_its_path() -> None:
    p = parsed("waveform_ecg.dcm")
    seen: list[str] = []

    def uri(path: str) -> str:
        seen.append(path)
        return f"https://pacs.example/bulk/{path}"

    ours = dataset_to_json(p.header_prefix, p.header_suffix, p.transfer_syntax_uid, uri)
    waveform = ours["54000100"]["Value"][0]["54001010"]
    assert waveform == {"vr": "OW", "BulkDataURI": "https://pacs.example/bulk/54000100.0.54001010"}
    assert "54000100.1.54001010" in seen


def test_pixel_data_is_bulk_data_when_uris_are_built() -> None:
    p = parsed("MR-SIEMENS-DICOM-WithOverlays.dcm")
    ours = dataset_to_json(
        p.header_prefix,
        p.header_suffix,
        p.transfer_syntax_uid,
        lambda path: f"bulk/{path}",
        pixel_tag=p.pixel_tag,
        pixel_vr=p.pixel_vr,
    )
    assert ours["7FE00010"] == {"vr": "OW", "BulkDataURI": "bulk/7FE00010"}
    assert ours["60003000"]["BulkDataURI"] == "bulk/60003000"
    assert (
        ours["00100010"]["Value"] == _pydicom_json("MR-SIEMENS-DICOM-WithOverlays.dcm")["00100010"]["Value"]
    )
    assert list(ours) == sorted(ours)


@pytest.mark.parametrize("name", good_names())
def test_direct_conversion_equals_pydicoms_for_every_corpus_file(name: str) -> None:
    """The elements converted straight from their bytes come out exactly as pydicom converts them, with
    and without bulk data URIs, for every file of pydicom's test data and pydicom-data."""
    p = parsed(name)

    def uri(path: str) -> str:
        return f"bulk/{path}"

    for bulk in (None, uri):
        try:
            reference = dataset_to_json(p.header_prefix, p.header_suffix, p.transfer_syntax_uid, bulk,
                                        pixel_tag=p.pixel_tag, pixel_vr=p.pixel_vr, direct=False)
        except InvalidDicomError as exc:
            with pytest.raises(InvalidDicomError):
                dataset_to_json(p.header_prefix, p.header_suffix, p.transfer_syntax_uid, bulk,
                                pixel_tag=p.pixel_tag, pixel_vr=p.pixel_vr)
            pytest.skip(f"pydicom cannot convert this header either: {exc}")
        direct = dataset_to_json(p.header_prefix, p.header_suffix, p.transfer_syntax_uid, bulk,
                                 pixel_tag=p.pixel_tag, pixel_vr=p.pixel_vr)
        assert json.dumps(direct) == json.dumps(reference)  # values and their types (1 vs 1.0) alike
