"""DICOMweb DELETE of studies, series and instances: 405 unless enabled, gone from QIDO, C-FIND and WADO."""

from __future__ import annotations

import random
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom.data import get_testdata_file
from web_helpers import Served, multipart_body

from engine.archive import Archive
from engine.config import DicomSettings
from engine.net import DicomServer
from engine.net._scu import Peer, scu_find
from engine.testing.dcmtk import LOOPBACK, free_port
from engine.testing.series import SeriesFiles, write_ct_series, write_mr_series
from engine.testing.server import running_server
from engine.web import WebServer

STOW = 'multipart/related; type="application/dicom"; boundary={}'


def dataset_bytes(data: bytes) -> tuple[str, bytes]:
    """(SOP Instance UID, the data set bytes after the file meta) of Part-10 bytes."""
    import io

    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    return str(ds.SOPInstanceUID), data[132 + 12 + int(ds.file_meta.FileMetaInformationGroupLength) :]


@dataclass(frozen=True, slots=True)
class Template:
    root: Path
    ct: SeriesFiles
    mr: SeriesFiles  # second series of the CT's study
    other: Path  # CT_small.dcm: a study of its own
    sent: dict[str, bytes]  # SOP UID -> data set bytes


@dataclass(frozen=True, slots=True)
class Node:
    """A writable archive with deletion on, served over DICOMweb and DIMSE on loopback."""

    archive: Archive
    http: httpx.Client
    peer: Peer


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory, ct_series: SeriesFiles) -> Template:
    base = tmp_path_factory.mktemp("web-delete")
    mr = SeriesFiles.from_files(write_mr_series(base / "mr", 4, seed=11, study_uid=ct_series.study_uid))
    other = Path(get_testdata_file("CT_small.dcm"))
    paths = (*ct_series.files, *mr.files, other)
    with Archive.open(base / "template") as archive:
        for path in paths:
            archive.ingest_file(path)
    return Template(base / "template", ct_series, mr, other, dict(dataset_bytes(p.read_bytes()) for p in paths))


@pytest.fixture
def node(template: Template, tmp_path: Path) -> Iterator[Node]:
    shutil.copytree(template.root, tmp_path / "a")
    with Archive.open(tmp_path / "a", storage={"allow_delete": True}) as archive:
        web = WebServer(archive, LOOPBACK, 0)
        host, port = web.start()
        dimse = DicomServer(archive, DicomSettings(ae_title="DELTEST", host=LOOPBACK, port=0))
        _, dimse_port = dimse.start()
        try:
            with httpx.Client(base_url=f"http://{host}:{port}", timeout=60) as http:
                yield Node(archive, http, Peer("DELTEST", LOOPBACK, dimse_port))
        finally:
            dimse.stop()
            web.stop()


def sop_of(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def assert_gone_and_rest_intact(node: Node, template: Template, deleted: set[str]) -> None:
    """Deleted instances are absent from QIDO, C-FIND and WADO; every other one retrieves byte-identical."""
    qido = {i["00080018"]["Value"][0] for i in node.http.get("/instances", params={"limit": 1000}).json()}
    assert qido == set(template.sent) - deleted
    found = {m["SOPInstanceUID"] for m in scu_find(node.peer, "IMAGE", {"SOPInstanceUID": ""}, model="PATIENT")}
    assert found == set(template.sent) - deleted
    for sop in deleted:
        record_path = f"/studies/{template.ct.study_uid}/series/{template.ct.series_uid}/instances/{sop}"
        assert node.http.get(record_path).status_code == 404
    for sop in set(template.sent) - deleted:
        record = node.archive.record(sop)
        path = f"/studies/{record.study_instance_uid}/series/{record.series_instance_uid}/instances/{sop}"
        response = node.http.get(path, headers={"Accept": 'multipart/related; type="application/dicom"'})
        assert response.status_code == 200
        assert response.content.count(template.sent[sop]) == 1, f"{sop} does not retrieve as sent"
    assert node.archive.verify(deep=True) == []
    assert {s for s, _ in node.archive.pixels.instance_dirs()} == {
        s for s in set(template.sent) - deleted if node.archive.record(s).codec is not None
    }


def test_delete_is_405_unless_enabled(served: Served) -> None:
    sop = sop_of(served.ct.files[0])
    paths = (
        f"/studies/{served.ct.study_uid}",
        f"/studies/{served.ct.study_uid}/series/{served.ct.series_uid}",
        f"/studies/{served.ct.study_uid}/series/{served.ct.series_uid}/instances/{sop}",
    )
    with served.http() as http:
        for path in paths:
            response = http.delete(path)
            assert response.status_code == 405
            assert "allow_delete" in response.json()["error"]
            assert "GET" in response.headers["allow"]
        assert http.get(paths[2]).status_code == 200


def test_delete_instance(node: Node, template: Template) -> None:
    sop = sop_of(template.ct.files[2])
    study, series = template.ct.study_uid, template.ct.series_uid
    stored = node.archive.record(sop).stored_bytes
    sequence = node.archive.index.last_sequence()
    response = node.http.delete(f"/studies/{study}/series/{series}/instances/{sop}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["level"], body["uid"], body["instances"], body["series"], body["studies"]) == (
        "instance", sop, 1, 0, 0
    )  # fmt: skip
    assert body["stored_bytes"] == stored and body["reclaimed_bytes"] > 0
    [series_match] = node.http.get(f"/studies/{study}/series", params={"SeriesInstanceUID": series}).json()
    assert series_match["00201209"]["Value"] == [len(template.ct.files) - 1]  # NumberOfSeriesRelatedInstances
    metadata = node.http.get(f"/studies/{study}/series/{series}/metadata").json()
    assert sop not in {m["00080018"]["Value"][0] for m in metadata}
    assert len(metadata) == len(template.ct.files) - 1
    assert [(c.op, c.sop_instance_uid) for c in node.archive.index.changes(since=sequence)] == [("delete", sop)]
    assert node.http.delete(f"/studies/{study}/series/{series}/instances/{sop}").status_code == 404
    assert_gone_and_rest_intact(node, template, {sop})


def test_delete_series_and_study(node: Node, template: Template) -> None:
    study = template.ct.study_uid
    response = node.http.delete(f"/studies/{study}/series/{template.mr.series_uid}")
    assert response.status_code == 200, response.text
    assert (response.json()["instances"], response.json()["series"]) == (len(template.mr.files), 1)
    [study_match] = node.http.get("/studies", params={"StudyInstanceUID": study}).json()
    assert study_match["00080061"]["Value"] == ["CT"]  # ModalitiesInStudy
    assert study_match["00201206"]["Value"] == [1]  # NumberOfStudyRelatedSeries
    [c_find] = scu_find(node.peer, "STUDY", {"StudyInstanceUID": study, "ModalitiesInStudy": ""})
    assert c_find["ModalitiesInStudy"] == "CT"
    mr = {sop_of(p) for p in template.mr.files}
    assert_gone_and_rest_intact(node, template, mr)

    response = node.http.delete(f"/studies/{study}")
    assert response.status_code == 200, response.text
    assert (response.json()["instances"], response.json()["studies"]) == (len(template.ct.files), 1)
    assert node.http.get("/studies", params={"StudyInstanceUID": study}).json() == []
    assert list(scu_find(node.peer, "STUDY", {"StudyInstanceUID": study})) == []
    assert node.http.get(f"/studies/{study}").status_code == 404
    assert_gone_and_rest_intact(node, template, mr | {sop_of(p) for p in template.ct.files})
    assert node.archive.stats().instances == 1


def test_unknown_misplaced_and_malformed(node: Node, template: Template) -> None:
    study, series = template.ct.study_uid, template.ct.series_uid
    sop = sop_of(template.ct.files[0])
    other_study = str(pydicom.dcmread(template.other, stop_before_pixels=True).StudyInstanceUID)
    assert node.http.delete("/studies/1.2.3.4").status_code == 404
    assert node.http.delete(f"/studies/{study}/series/1.2.3.4").status_code == 404
    assert node.http.delete(f"/studies/{study}/series/{series}/instances/1.2.3.4").status_code == 404
    assert node.http.delete(f"/studies/{other_study}/series/{series}").status_code == 404  # not in that study
    assert node.http.delete(f"/studies/{study}/series/{template.mr.series_uid}/instances/{sop}").status_code == 404
    assert node.http.delete("/studies/1.2.x").status_code == 400
    assert node.archive.stats().instances == len(template.sent)


def test_cors_preflight_allows_delete(node: Node, template: Template) -> None:
    response = node.http.options(
        f"/studies/{template.ct.study_uid}",
        headers={"Origin": "http://viewer.example", "Access-Control-Request-Method": "DELETE"},
    )
    assert response.status_code == 200
    assert "DELETE" in response.headers["access-control-allow-methods"]


# -- crash safety: `serve` killed while DELETEs stream in ----------------------------------------------


@pytest.fixture(scope="module")
def crash_series(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_ct_series(tmp_path_factory.mktemp("crash-ct"), 12, rows=256, cols=256, seed=4)


def _crash_round(
    archive_dir: Path, files: list[Path], delay: float, *, after_first: bool
) -> tuple[dict[str, bytes], set[str], set[str]]:
    """STOW the files into a fresh `serve`, DELETE them one by one, SIGKILL `delay` s after the deleting
    began (`after_first`: after the first deletion was answered, so the kill lands among the deletions).

    Returns (SOP -> data set bytes sent, deletions acknowledged, deletions sent but not answered).
    """
    sent = dict(dataset_bytes(p.read_bytes()) for p in files)
    meta = pydicom.dcmread(files[0], stop_before_pixels=True)
    study, series = str(meta.StudyInstanceUID), str(meta.SeriesInstanceUID)
    acked: set[str] = set()
    in_flight: set[str] = set()
    port = free_port()
    env = {"PACS_ENGINE_STORAGE__ALLOW_DELETE": "1"}
    with running_server(archive_dir, extra_args=["--http-port", str(port)], env=env) as server:
        base = f"http://{LOOPBACK}:{port}"  # running_server waited for the DICOMweb port too
        boundary = uuid.uuid4().hex
        with httpx.Client(base_url=base, timeout=60) as http:
            stored = http.post(
                "/studies", content=multipart_body([p.read_bytes() for p in files], boundary),
                headers={"Content-Type": STOW.format(boundary)},
            )  # fmt: skip
            assert stored.status_code == 200, stored.text

            def delete_all() -> None:
                for sop in sent:
                    in_flight.add(sop)
                    try:
                        response = http.delete(f"/studies/{study}/series/{series}/instances/{sop}")
                    except httpx.TransportError:
                        return
                    assert response.status_code == 200, response.text
                    in_flight.discard(sop)
                    acked.add(sop)

            # Deletions start at once: the STOWed instances are still being transcoded from the journal.
            worker = threading.Thread(target=delete_all)
            worker.start()
            while after_first and not acked and worker.is_alive():
                time.sleep(0.001)
            time.sleep(delay)
            server.kill()
            worker.join(timeout=60)
    return sent, acked, in_flight


def _check_round(archive_dir: Path, sent: dict[str, bytes], acked: set[str], in_flight: set[str]) -> None:
    with Archive.open(archive_dir) as archive:  # recovers the journal and sweeps, as serve would
        indexed = set(archive.index.iter_instance_uids())
        assert not indexed & acked, "an acknowledged deletion came back"
        assert set(sent) - acked - in_flight <= indexed, "an instance nobody deleted is missing"
        for sop in indexed:
            assert archive.read_dataset(sop)[1] == sent[sop]
        assert archive.verify(deep=True) == []
        assert archive.stats().instances == len(indexed)
        assert {sop for sop, _ in archive.pixels.instance_dirs()} == indexed
        assert archive.pixels.temp_dirs() == []


def _crash_rounds(tmp_path: Path, files: list[Path], rounds: int, seed: int) -> list[int]:
    """Odd rounds kill among the deletions, even ones anywhere from the first DELETE on (it may wait for
    the STOWed instances to be transcoded from the journal first)."""
    rng = random.Random(seed)
    deleted = []
    for i in range(rounds):
        after_first = i % 2 == 0
        delay = rng.uniform(0.0, 0.15 if after_first else 0.5)
        sent, acked, in_flight = _crash_round(tmp_path / f"a{i}", files, delay, after_first=after_first)
        _check_round(tmp_path / f"a{i}", sent, acked, in_flight)
        deleted.append(len(acked))
        shutil.rmtree(tmp_path / f"a{i}")
    return deleted


@pytest.mark.timeout(300)
def test_serve_killed_while_deleting_keeps_the_archive_consistent(tmp_path: Path, crash_series: list[Path]) -> None:
    deleted = _crash_rounds(tmp_path, crash_series, rounds=2, seed=1128)
    print("deletions acknowledged before each kill:", deleted)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_serve_killed_while_deleting_many_times(tmp_path: Path, crash_series: list[Path]) -> None:
    deleted = _crash_rounds(tmp_path, crash_series, rounds=20, seed=99)
    print("deletions acknowledged before each kill:", deleted)
    # The kills are spread over the deletions: some rounds end part-way through them.
    assert any(0 < n < len(crash_series) for n in deleted)
