"""STOW-RS over real HTTP: stores through the C-STORE ingest path, PS3.18 responses, partial failure."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from requests.exceptions import HTTPError
from web_helpers import Served, multipart_body, wait_until

from engine.errors import NotFoundError
from engine.testing.series import write_mr_series
from engine.testing.transcodes import workers_held
from engine.web import HTTP_STATUS_TABLE

CONTENT_TYPE = 'multipart/related; type="application/dicom"; boundary={}'
REFERENCED, FAILED, REASON = "00081199", "00081198", "00081197"


def _altered(served: Served, name: str) -> pydicom.Dataset:
    """A stored corpus instance with other content under the same SOP Instance UID: a conflict."""
    ds = pydicom.dcmread(served.corpus[name])
    ds.PatientName = "Someone^Else"
    return ds


def _bytes(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _post(served: Served, parts: list[bytes], path: str = "/studies", content_type: str | None = None) -> object:
    boundary = uuid.uuid4().hex
    with served.http() as http:
        return http.post(
            path,
            content=multipart_body(parts, boundary),
            headers={"Content-Type": content_type or CONTENT_TYPE.format(boundary)},
        )


def test_store_series_with_dicomweb_client_then_retrieve(served: Served) -> None:
    client = served.client()
    datasets = [pydicom.dcmread(p) for p in served.mr_files]
    result = client.store_instances(datasets)
    stored = [str(item.ReferencedSOPInstanceUID) for item in result.ReferencedSOPSequence]
    assert stored == [str(ds.SOPInstanceUID) for ds in datasets]
    assert "FailedSOPSequence" not in result
    study = str(datasets[0].StudyInstanceUID)
    assert result.RetrieveURL.endswith(f"/studies/{study}")
    found = client.search_for_instances(study, str(datasets[0].SeriesInstanceUID))
    assert len(found) == len(datasets)
    back = client.retrieve_instance(study, str(datasets[2].SeriesInstanceUID), str(datasets[2].SOPInstanceUID))
    np.testing.assert_array_equal(back.pixel_array, datasets[2].pixel_array)


def test_partial_failure_is_202_with_reasons(served: Served) -> None:
    good = served.corpus["CT_small.dcm"].read_bytes()  # already stored, same content: a no-op success
    conflict = _bytes(_altered(served, "SC_rgb.dcm"))
    response = _post(served, [good, b"not a DICOM file at all", conflict])
    assert response.status_code == 202
    body = response.json()
    assert len(body[REFERENCED]["Value"]) == 1
    reasons = [item[REASON]["Value"][0] for item in body[FAILED]["Value"]]
    assert reasons == [0xC000, 0x0111]
    assert body[FAILED]["Value"][1]["00081155"]["Value"] == [
        str(pydicom.dcmread(served.corpus["SC_rgb.dcm"]).SOPInstanceUID)
    ]


def test_nothing_stored_is_409(served: Served) -> None:
    response = _post(served, [b"garbage one", b"garbage two"])
    assert response.status_code == 409
    assert [i[REASON]["Value"][0] for i in response.json()[FAILED]["Value"]] == [0xC000, 0xC000]


def test_store_into_another_study_is_refused(served: Served) -> None:
    data = served.corpus["SC_rgb.dcm"].read_bytes()
    response = _post(served, [data], path=f"/studies/{served.ct.study_uid}")
    assert response.status_code == 409
    assert response.json()[FAILED]["Value"][0][REASON]["Value"] == [0xA900]


def test_malformed_multipart_is_400(served: Served) -> None:
    with served.http() as http:
        no_delimiter = http.post(
            "/studies", content=b"just bytes", headers={"Content-Type": CONTENT_TYPE.format("abc")}
        )
        truncated = http.post(
            "/studies",
            content=b"--abc\r\nContent-Type: application/dicom\r\n\r\nxx",
            headers={"Content-Type": CONTENT_TYPE.format("abc")},
        )
        no_boundary = http.post(
            "/studies", content=b"x", headers={"Content-Type": 'multipart/related; type="application/dicom"'}
        )
    assert [r.status_code for r in (no_delimiter, truncated, no_boundary)] == [400, 400, 400]
    assert "malformed multipart" in truncated.json()["error"]


def test_a_body_broken_off_after_a_stored_part_is_202_saying_what_was_stored(served: Served) -> None:
    """Parts are stored as they arrive: when the body then breaks off, the instance stored before is
    reported as stored (202), not hidden behind a 400 that PS3.18 10.5.3 keeps for nothing stored."""
    ds = pydicom.dcmread(served.corpus["SC_rgb.dcm"])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    good = _bytes(ds)
    boundary = "brokenoff"
    body = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + good
            + f"\r\n--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + good[:500])
    with served.http() as http:
        response = http.post("/studies", content=body, headers={"Content-Type": CONTENT_TYPE.format(boundary)})
    assert response.status_code == 202, response.text
    result = response.json()
    assert result[REFERENCED]["Value"][0]["00081155"]["Value"] == [str(ds.SOPInstanceUID)]
    assert [item[REASON]["Value"][0] for item in result[FAILED]["Value"]] == [0xC000]
    assert served.archive.record(str(ds.SOPInstanceUID)) is not None


@pytest.mark.parametrize(
    "content_type",
    ["application/dicom", "application/json", 'multipart/related; type="application/dicom+xml"; boundary=x', ""],
)
def test_wrong_content_type_is_415(served: Served, content_type: str) -> None:
    with served.http() as http:
        response = http.post(
            "/studies", content=b"--x--", headers={"Content-Type": content_type} if content_type else {}
        )
    assert response.status_code == 415


def test_dicomweb_client_sees_409_as_an_error(served: Served) -> None:
    with pytest.raises(HTTPError) as caught:
        served.client().store_instances([_altered(served, "CT_small.dcm")])
    assert caught.value.response.status_code == 409


def test_error_table_maps_every_engine_error_once() -> None:
    kinds = [kind for kind, _ in HTTP_STATUS_TABLE]
    assert len(kinds) == len(set(kinds))
    # subclasses before their bases, or the base would shadow them
    for i, kind in enumerate(kinds):
        assert not any(issubclass(kind, earlier) for earlier in kinds[:i]), kind


def test_parts_are_ingested_while_the_body_still_arrives(served: Served, tmp_path: Path) -> None:
    """The first instance is in the archive before the client has sent the second one."""
    first, second = (p.read_bytes() for p in write_mr_series(tmp_path, 2, seed=11))
    first_sop = str(pydicom.dcmread(io.BytesIO(first), stop_before_pixels=True).SOPInstanceUID)
    boundary = uuid.uuid4().hex
    seen_before_second: list[bool] = []

    def body() -> Iterator[bytes]:
        yield f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + first
        yield f"\r\n--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        seen_before_second.append(wait_until(lambda: served.archive.index.has_instance(first_sop)))
        yield second + f"\r\n--{boundary}--\r\n".encode()

    with served.http() as http:
        response = http.post("/studies", content=body(), headers={"Content-Type": CONTENT_TYPE.format(boundary)})
    assert response.status_code == 200
    assert seen_before_second == [True]
    assert len(response.json()[REFERENCED]["Value"]) == 2


def test_stored_instances_are_found_before_they_are_transcoded(served: Served, tmp_path: Path) -> None:
    """Acknowledged means queryable: QIDO finds a STOW-RS series while its transcodes still wait, and
    reads of its pixels wait for them instead of seeing a record without pixels."""
    files = write_mr_series(tmp_path, 3, seed=21)
    datasets = [pydicom.dcmread(p, stop_before_pixels=True) for p in files]
    study, series = str(datasets[0].StudyInstanceUID), str(datasets[0].SeriesInstanceUID)
    with workers_held(served.archive):
        response = _post(served, [p.read_bytes() for p in files], f"/studies/{study}")
        assert response.status_code == 200, response.text
        with served.http() as http:
            found = http.get(f"/studies/{study}/series/{series}/instances", headers={"Accept": "application/dicom+json"})
            counted = http.get(f"/studies/{study}/series", params={"includefield": "00201209"},
                               headers={"Accept": "application/dicom+json"})  # fmt: skip
        assert found.status_code == 200
        assert sorted(i["00080018"]["Value"][0] for i in found.json()) == sorted(str(d.SOPInstanceUID) for d in datasets)
        assert counted.json()[0]["00201209"]["Value"] == [3]
        assert all(served.archive.index.get_instance(str(d.SOPInstanceUID)).pending for d in datasets)
    sop = str(datasets[1].SOPInstanceUID)
    back = served.client().retrieve_instance(study, series, sop)  # waits for its transcode
    assert back.SOPInstanceUID == sop and back.pixel_array.shape == (datasets[1].Rows, datasets[1].Columns)
    served.archive.wait_for_ingests()
    assert not any(served.archive.index.get_instance(str(d.SOPInstanceUID)).pending for d in datasets)


def test_a_client_taking_only_xml_responses_gets_406_before_anything_is_stored(served: Served) -> None:
    ds = pydicom.dcmread(served.corpus["SC_rgb.dcm"])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    boundary = uuid.uuid4().hex
    with served.http() as http:
        response = http.post("/studies", content=multipart_body([_bytes(ds)], boundary), headers={
            "Content-Type": CONTENT_TYPE.format(boundary), "Accept": "application/dicom+xml"})
    assert response.status_code == 406
    with pytest.raises(NotFoundError):  # nothing was stored
        served.archive.record(str(ds.SOPInstanceUID))
