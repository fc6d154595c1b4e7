"""WADO-RS over real HTTP: instance, series and study retrieval, metadata and bulk data."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from web_helpers import Served, split_multipart

from engine.testing.series import write_mr_series
from engine.types import EXPLICIT_VR_LE, HTJ2K_LOSSLESS_RPCL

DICOM_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def _ids(path: object) -> tuple[str, str, str]:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


@pytest.mark.parametrize("name", ["CT_small.dcm", "emri_small.dcm", "SC_rgb.dcm"])
def test_retrieve_instance_with_dicomweb_client_is_pixel_identical(served: Served, name: str) -> None:
    path = served.corpus[name]
    study, series, sop = _ids(path)
    ds = served.client().retrieve_instance(study, series, sop)
    original = pydicom.dcmread(path)
    assert ds.SOPInstanceUID == sop
    # dicomweb-client asks transfer-syntax=*: the stored frames, HTJ2K, come back without transcoding
    assert ds.file_meta.TransferSyntaxUID == HTJ2K_LOSSLESS_RPCL
    np.testing.assert_array_equal(ds.pixel_array, original.pixel_array)


def test_retrieve_series_default_syntax_is_explicit_little_endian(served: Served) -> None:
    datasets = served.client().retrieve_series(served.ct.study_uid, served.ct.series_uid)
    assert len(datasets) == len(served.ct.files)
    originals = {str(pydicom.dcmread(p).SOPInstanceUID): p for p in served.ct.files}
    for ds in datasets:
        assert ds.file_meta.TransferSyntaxUID == EXPLICIT_VR_LE
        original = pydicom.dcmread(originals[str(ds.SOPInstanceUID)])
        np.testing.assert_array_equal(ds.pixel_array, original.pixel_array)


def test_retrieve_instance_in_original_syntax_is_byte_identical(served: Served) -> None:
    path = served.ct.files[3]
    study, series, sop = _ids(path)
    with served.http() as http:
        response = http.get(
            f"/studies/{study}/series/{series}/instances/{sop}",
            headers={"Accept": f'multipart/related; type="application/dicom"; transfer-syntax={EXPLICIT_VR_LE}'},
        )
    assert response.status_code == 200
    [(headers, body)] = split_multipart(response)
    assert headers["content-type"] == f"application/dicom; transfer-syntax={EXPLICIT_VR_LE}"
    original = pydicom.dcmread(path)
    received = pydicom.dcmread(io.BytesIO(body))
    # the data set (after the file meta) is exactly what was received
    assert original.PixelData == received.PixelData
    assert original.to_json_dict() == received.to_json_dict()


def test_an_instance_asked_as_bare_application_dicom_comes_alone(served: Served) -> None:
    """PS3.18 10.4.4: a single-part media type is permitted for an instance resource; it answered multipart."""
    path = served.ct.files[3]
    study, series, sop = _ids(path)
    with served.http() as http:
        response = http.get(f"/studies/{study}/series/{series}/instances/{sop}",
                            headers={"Accept": f"application/dicom; transfer-syntax={EXPLICIT_VR_LE}"})
        everything = http.get(f"/studies/{study}/series/{series}/instances/{sop}", headers={"Accept": "*/*"})
    assert response.status_code == 200
    assert response.headers["content-type"] == f"application/dicom; transfer-syntax={EXPLICIT_VR_LE}"
    assert pydicom.dcmread(io.BytesIO(response.content)).PixelData == pydicom.dcmread(path).PixelData
    assert everything.headers["content-type"].startswith("multipart/related")  # the default stays multipart


def test_retrieve_study_streams_every_instance(served: Served) -> None:
    url = f"/studies/{served.ct.study_uid}"
    with served.http() as http, http.stream("GET", url, headers={"Accept": DICOM_STORED}) as response:
        assert response.status_code == 200
        assert "content-length" not in response.headers  # streamed, not built in memory
        response.read()
    parts = split_multipart(response)
    assert len(parts) == len(served.ct.files)
    assert all(h["content-type"] == f"application/dicom; transfer-syntax={HTJ2K_LOSSLESS_RPCL}" for h, _ in parts)


def test_series_metadata_with_dicomweb_client(served: Served) -> None:
    items = served.client().retrieve_series_metadata(served.ct.study_uid, served.ct.series_uid)
    assert len(items) == len(served.ct.files)
    originals = [pydicom.dcmread(p, stop_before_pixels=True) for p in served.ct.files]
    assert [i["00080018"]["Value"][0] for i in items] == [str(o.SOPInstanceUID) for o in originals]
    first = items[0]
    assert first["00280010"] == {"vr": "US", "Value": [512]}
    assert first["00100010"]["Value"][0]["Alphabetic"] == str(originals[0].PatientName)
    bulk = first["7FE00010"]["BulkDataURI"]
    # dicomweb-client sends "Host: 127.0.0.1" without the port; URIs name the host the request named
    assert f"/studies/{served.ct.study_uid}/series/{served.ct.series_uid}/instances/" in bulk
    with served.http() as http:
        [item, *_] = http.get(f"/studies/{served.ct.study_uid}/series/{served.ct.series_uid}/metadata").json()
    assert item["7FE00010"]["BulkDataURI"].startswith(served.base + "/studies/")


def test_study_metadata_covers_every_series(served: Served) -> None:
    items = served.client().retrieve_study_metadata(served.ct.study_uid)
    assert len(items) == len(served.ct.files)


def test_metadata_gzip_etag_and_304(served: Served) -> None:
    url = f"/studies/{served.ct.study_uid}/series/{served.ct.series_uid}/metadata"
    with served.http() as http:
        plain = http.get(url, headers={"Accept-Encoding": "identity"})
        zipped = http.get(url, headers={"Accept-Encoding": "gzip"})
        etag = plain.headers["etag"]
        again = http.get(url, headers={"If-None-Match": etag})
        other = http.get(url, headers={"If-None-Match": '"something-else"'})
    assert plain.status_code == 200 and "content-encoding" not in plain.headers
    assert zipped.headers["content-encoding"] == "gzip"
    assert int(zipped.headers["content-length"]) < len(plain.content) / 4
    assert (
        json.loads(gzip.decompress(zipped.read()) if zipped.content[:2] == b"\x1f\x8b" else zipped.content)
        == plain.json()
    )
    assert zipped.headers["etag"] == etag
    assert again.status_code == 304 and again.content == b""
    assert other.status_code == 200


def test_pixel_bulkdata_is_native_little_endian(served: Served) -> None:
    path = served.corpus["emri_small.dcm"]
    study, series, sop = _ids(path)
    item = served.client().retrieve_instance_metadata(study, series, sop)
    tail = item["7FE00010"]["BulkDataURI"].split("/studies/", 1)[1]
    data = served.client().retrieve_bulkdata(f"{served.base}/studies/{tail}")
    original = pydicom.dcmread(path).pixel_array
    assert data[0] == original.astype(original.dtype.newbyteorder("<")).tobytes()


def test_non_pixel_bulkdata_by_path(served: Served) -> None:
    path = served.corpus["CT_small.dcm"]
    study, series, sop = _ids(path)
    original = pydicom.dcmread(path)
    binary = [e for e in original if e.VR in ("OB", "OW") and e.tag != 0x7FE00010 and len(e.value) > 800]
    if not binary:
        pytest.skip("CT_small.dcm has no large binary element besides pixel data")
    element = binary[0]
    with served.http() as http:
        response = http.get(
            f"/studies/{study}/series/{series}/instances/{sop}/bulkdata/{int(element.tag):08X}",
            headers={"Accept": "application/octet-stream"},
        )
    assert response.status_code == 200
    assert response.content == element.value


def test_series_metadata_follows_a_growing_series(served: Served, tmp_path: Path) -> None:
    """ETag changes as instances arrive; the cached per-instance JSON equals the uncached instance metadata."""
    files = write_mr_series(tmp_path, 3, seed=23)
    study, series, _ = _ids(files[0])
    client = served.client()
    url = f"/studies/{study}/series/{series}/metadata"
    with served.http() as http:
        client.store_instances([pydicom.dcmread(f) for f in files[:2]])
        before = http.get(url)
        client.store_instances([pydicom.dcmread(files[2])])
        after = http.get(url, headers={"If-None-Match": before.headers["etag"]})
        single = [
            http.get(f"/studies/{study}/series/{series}/instances/{_ids(f)[2]}/metadata").json()[0] for f in files
        ]
    assert len(before.json()) == 2
    assert after.status_code == 200 and after.headers["etag"] != before.headers["etag"]
    assert after.json() == single
