"""Status codes and CORS over real HTTP: 404 unknown UIDs, 406 media types, 400 bad parameters, preflight."""

from __future__ import annotations

import pydicom
import pytest
from web_helpers import Served

UNKNOWN = "1.2.3.4.5.6.7.8.9"


def _instance_path(served: Served) -> str:
    ds = pydicom.dcmread(served.ct.files[0], stop_before_pixels=True)
    return f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"


def test_unknown_uids_are_404(served: Served) -> None:
    instance = _instance_path(served)
    ct = f"/studies/{served.ct.study_uid}/series/{served.ct.series_uid}"
    urls = [
        f"/studies/{UNKNOWN}",
        f"/studies/{UNKNOWN}/metadata",
        f"{ct.replace(served.ct.series_uid, UNKNOWN)}/metadata",
        f"/studies/{UNKNOWN}/series/{served.ct.series_uid}/metadata",  # a series under the wrong study
        f"{ct}/instances/{UNKNOWN}",
        f"{ct}/instances/{UNKNOWN}/frames/1",
        f"{instance}/frames/99",
        f"{instance}/frames/1?level=9",
        f"{instance}/bulkdata/00091234",
    ]
    with served.http() as http:
        responses = [http.get(url) for url in urls]
    assert [r.status_code for r in responses] == [404] * len(urls)
    assert all(r.json()["error"] for r in responses)


@pytest.mark.parametrize(
    ("suffix", "accept"),
    [
        ("", 'multipart/related; type="image/gif"'),
        ("", "application/dicom+xml"),
        ("/frames/1", "image/gif"),
        ("/frames/1", 'multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.2'),
        ("/rendered", "image/gif"),
        ("/metadata", "application/dicom+xml"),
    ],
)
def test_unacceptable_media_types_are_406(served: Served, suffix: str, accept: str) -> None:
    with served.http() as http:
        response = http.get(_instance_path(served) + suffix, headers={"Accept": accept})
    assert response.status_code == 406
    assert "available as" in response.json()["error"]


def test_bad_parameters_are_400(served: Served) -> None:
    instance = _instance_path(served)
    urls = [
        f"{instance}/frames/one",
        f"{instance}/frames/0",
        f"{instance}/frames/1?level=x",
        f"{instance}/rendered?window=40",
        f"{instance}/rendered?window=40,400,SIGMOIDAL",
        "/studies/1..2/metadata",
        "/studies/not-a-uid",
    ]
    with served.http() as http:
        responses = [http.get(url) for url in urls]
    assert [r.status_code for r in responses] == [400] * len(urls)


def test_cors_on_responses_and_preflight(served: Served) -> None:
    origin = {"Origin": "http://viewer.example"}
    with served.http() as http:
        frame = http.get(
            _instance_path(served) + "/frames/1", headers={**origin, "Accept": "image/jphc", "Range": "bytes=0-9"}
        )
        preflight = http.options(
            "/studies",
            headers={
                **origin,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "range, accept",
            },
        )
        error = http.get(f"/studies/{UNKNOWN}/metadata", headers=origin)
    assert frame.status_code == 206
    assert frame.headers["access-control-allow-origin"] == "*"
    exposed = {h.strip().lower() for h in frame.headers["access-control-expose-headers"].split(",")}
    assert {"content-range", "content-type", "content-length"} <= exposed
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert "GET" in preflight.headers["access-control-allow-methods"]
    assert "range" in preflight.headers["access-control-allow-headers"].lower()
    assert error.status_code == 404 and error.headers["access-control-allow-origin"] == "*"
