"""QIDO-RS over real HTTP with dicomweb-client: matching, includefield, limit/offset, fuzzymatching."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import httpx
import pydicom
from web_helpers import Served

from engine.archive import Archive
from engine.testing.dcmtk import LOOPBACK
from engine.testing.series import ct_series_datasets
from engine.web import WebServer
from engine.web._qido import INLINE_MATCHES

STUDY_UID, SERIES_UID, SOP_UID, INSTANCE_NUMBER, RETRIEVE_URL = (
    "0020000D",
    "0020000E",
    "00080018",
    "00200013",
    "00081190",
)


def test_search_studies_by_patient_and_wildcard(served: Served) -> None:
    ct = pydicom.dcmread(served.ct.files[0], stop_before_pixels=True)
    client = served.client()
    exact = client.search_for_studies(search_filters={"PatientID": str(ct.PatientID)})
    assert [s[STUDY_UID]["Value"][0] for s in exact] == [served.ct.study_uid]
    study = exact[0]
    assert study["00201208"]["Value"] == [len(served.ct.files)]  # NumberOfStudyRelatedInstances
    assert study["00080061"]["Value"] == ["CT"]  # ModalitiesInStudy
    assert study[RETRIEVE_URL]["Value"][0].endswith(f"/studies/{served.ct.study_uid}")
    wildcard = client.search_for_studies(search_filters={"PatientName": str(ct.PatientName)[:4] + "*"})
    assert served.ct.study_uid in [s[STUDY_UID]["Value"][0] for s in wildcard]
    assert client.search_for_studies(search_filters={"PatientID": "nobody-has-this-id"}) == []


def test_search_series_of_a_study_and_all_series(served: Served) -> None:
    client = served.client()
    series = client.search_for_series(served.ct.study_uid)
    assert [s[SERIES_UID]["Value"][0] for s in series] == [served.ct.series_uid]
    assert series[0]["00201209"]["Value"] == [len(served.ct.files)]
    everything = client.search_for_series(search_filters={"Modality": "CT"})
    assert served.ct.series_uid in [s[SERIES_UID]["Value"][0] for s in everything]


def test_search_instances_in_series_order_with_limit_and_offset(served: Served) -> None:
    client = served.client()
    every = client.search_for_instances(served.ct.study_uid, served.ct.series_uid)
    expected = [str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in served.ct.files]
    assert [i[SOP_UID]["Value"][0] for i in every] == expected
    page = client.search_for_instances(served.ct.study_uid, served.ct.series_uid, limit=5, offset=10)
    assert [i[SOP_UID]["Value"][0] for i in page] == expected[10:15]
    numbered = client.search_for_instances(
        served.ct.study_uid, served.ct.series_uid, search_filters={"InstanceNumber": "3"}
    )
    assert [i[INSTANCE_NUMBER]["Value"] for i in numbered] == [[3]]


def test_includefield_by_keyword_tag_and_all(served: Served) -> None:
    with served.http() as http:
        plain = http.get(
            f"/studies/{served.ct.study_uid}/series/{served.ct.series_uid}/instances", params={"limit": "1"}
        ).json()
        by_keyword = http.get(
            "/instances",
            params={"SeriesInstanceUID": served.ct.series_uid, "includefield": "Manufacturer,00081090", "limit": "1"},
        ).json()
        every = http.get(
            "/instances", params={"SeriesInstanceUID": served.ct.series_uid, "includefield": "all", "limit": "1"}
        ).json()
        study = http.get("/studies", params={"StudyInstanceUID": served.ct.study_uid, "includefield": "all"}).json()
    assert "00100010" not in plain[0]
    assert {"00080070", "00081090"} <= by_keyword[0].keys()
    assert "00100010" in every[0] and "00080060" in every[0]
    # A study's "all" is the study's and its patient's attributes, not those of one of its instances.
    assert {"00100010", "00080020", "00201208"} <= study[0].keys()
    assert not {SOP_UID, SERIES_UID, "00080060", "00280010", INSTANCE_NUMBER} & study[0].keys()


def test_fuzzymatching_is_refused_with_a_warning(served: Served) -> None:
    with served.http() as http:
        response = http.get("/studies", params={"fuzzymatching": "true"})
    assert response.status_code == 200
    assert response.headers["warning"].startswith("299 ")
    assert "fuzzymatching" in response.headers["warning"]


def test_unknown_attribute_and_bad_limit_are_400(served: Served) -> None:
    with served.http() as http:
        unknown = http.get("/studies", params={"NoSuchKeyword": "x"})
        nested = http.get("/studies", params={"00081115.0020000E": "1.2"})
        bad_limit = http.get("/studies", params={"limit": "-1"})
        bad_date = http.get("/studies", params={"StudyDate": "2020-01-01"})
    assert [r.status_code for r in (unknown, nested, bad_limit, bad_date)] == [400, 400, 400, 400]
    assert "NoSuchKeyword" in unknown.json()["error"]


def test_gzipped_answer_and_retrieve_urls_follow_the_host_asked(served: Served) -> None:
    """A search answered gzipped is a gzip member of the plain answer, and each Host header gets its own
    URLs (service roots are cached by what they are made of)."""
    instances = f"/studies/{served.ct.study_uid}/series/{served.ct.series_uid}/instances?limit=4"
    series = f"/studies/{served.ct.study_uid}/series"
    hosts = ("archive.example:8042", "viewer.example")
    with served.http() as http:
        plain = http.get(instances, headers={"Accept-Encoding": "identity"})
        with http.stream("GET", instances, headers={"Accept-Encoding": "gzip"}) as zipped:
            raw = b"".join(zipped.iter_raw())  # as sent, not decoded by httpx
        answers = [http.get(series, headers={"Host": host, "Accept-Encoding": "identity"}) for host in hosts]
        again = http.get(series, headers={"Accept-Encoding": "identity"})
    assert plain.status_code == zipped.status_code == 200
    assert len(plain.content) > 1024 and "content-encoding" not in plain.headers
    assert zipped.headers["content-encoding"] == "gzip"
    assert len(raw) < len(plain.content) and gzip.decompress(raw) == plain.content
    for host, reply in zip(hosts, answers, strict=True):
        assert reply.status_code == 200
        assert json.loads(reply.content)[0][RETRIEVE_URL]["Value"] == [f"http://{host}{series}/{served.ct.series_uid}"]
    assert json.loads(again.content)[0][RETRIEVE_URL]["Value"] == [f"{served.base}{series}/{served.ct.series_uid}"]


def test_a_patient_with_more_studies_than_answered_inline(tmp_path: Path) -> None:
    """Studies of one patient are searched on the event loop up to INLINE_MATCHES, the rest in a worker:
    past that many, every study is still listed once, in order, and limit/offset page through them."""
    count = INLINE_MATCHES + 5
    archive = Archive.open(tmp_path / "archive")
    try:
        for k in range(count):
            [ds] = ct_series_datasets(1, rows=16, cols=16, seed=1000 + k)
            ds.PatientID = "PAT-MANY"
            path = tmp_path / f"study{k}.dcm"
            ds.save_as(path, enforce_file_format=True)
            archive.ingest_file(path)
        server = WebServer(archive, LOOPBACK, 0)
        host, port = server.start()
        try:
            with httpx.Client(base_url=f"http://{host}:{port}", timeout=60) as http:
                every = http.get("/studies", params={"PatientID": "PAT-MANY"}).json()
                page = http.get("/studies", params={"PatientID": "PAT-MANY", "offset": "3", "limit": "31"}).json()
                few = http.get("/studies", params={"PatientID": "PAT-MANY", "limit": "2"}).json()
        finally:
            server.stop()
    finally:
        archive.close()
    uids = [s[STUDY_UID]["Value"][0] for s in every]
    assert len(uids) == count and len(set(uids)) == count and uids == sorted(uids)
    assert [s[STUDY_UID]["Value"][0] for s in page] == uids[3:34]
    assert [s[STUDY_UID]["Value"][0] for s in few] == uids[:2]


def test_every_key_qido_accepts_is_one_the_matcher_matches() -> None:
    """QIDO-RS refuses keys it cannot match (400), C-FIND ignores them (FF01): no key may fall between."""
    from engine.index import ATTRIBUTE_LEVELS
    from engine.index._query import NOT_MATCHED
    from engine.web._qido import ELEMENTS

    assert set(ELEMENTS) - set(ATTRIBUTE_LEVELS) - NOT_MATCHED == set()


def test_person_names_are_json_name_objects() -> None:
    """PS3.18 F.2.2: each name of a PN value is an object of its groups; several names are several values."""
    from engine.web._qido import _element

    assert _element("PN", "Yamada^Tarou=山田^太郎=やまだ^たろう") == {"vr": "PN", "Value": [
        {"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"}]}
    assert _element("PN", "Wang^XiaoDong=王^小東") == {"vr": "PN", "Value": [
        {"Alphabetic": "Wang^XiaoDong", "Ideographic": "王^小東"}]}
    assert _element("PN", "Smith^J\\Doe^J") == {"vr": "PN", "Value": [{"Alphabetic": "Smith^J"}, {"Alphabetic": "Doe^J"}]}
    assert _element("PN", "=山田^太郎") == {"vr": "PN", "Value": [{"Ideographic": "山田^太郎"}]}


def test_control_parameters_are_named_in_lower_case(served: Served) -> None:
    """LIMIT=2 was taken for a control parameter and then not applied: every study came back."""
    with served.http() as http:
        upper = http.get("/studies?LIMIT=2", headers={"Accept": "application/dicom+json"})
        lower = http.get("/studies?limit=2", headers={"Accept": "application/dicom+json"})
    assert upper.status_code == 400 and "'limit'" in upper.json()["error"]
    assert lower.status_code == 200 and len(lower.json()) == 2
