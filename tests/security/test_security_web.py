"""DICOMweb authentication and authorisation (tokens, Basic users with scrypt hashes, roles), CORS with
credentials, the open-server warning, and the audit line of every request."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pydicom
import pytest

from engine.archive import Archive
from engine.audit import AuditLog, read_audit
from engine.config import AuthSettings, Credential, load_settings
from engine.security import hash_password
from engine.testing.dcmtk import LOOPBACK
from engine.web import WebServer
from engine.web._auth import Authenticator, Identity
from engine.web._server import is_loopback

READ_TOKEN = "read-token-" + "r" * 24
WRITE_TOKEN = "write-token-" + "w" * 24
AUTH = AuthSettings(
    tokens=(Credential("reader", "read", READ_TOKEN), Credential("uploader", "write", WRITE_TOKEN)),
    users=(Credential("alice", "read", hash_password("alice's password")),
           Credential("bob", "write", hash_password("bob's password"))),
)
DICOM_JSON = {"Accept": "application/dicom+json"}


@dataclass(frozen=True)
class Site:
    url: str
    archive: Archive
    audit_path: Path
    study: str

    def client(self, **headers: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def audit(self) -> list[dict[str, object]]:
        return read_audit(self.audit_path)


def _file(name: str) -> Path:
    path = pydicom.data.get_testdata_file(name)
    assert path is not None
    return Path(path)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("web-auth")
    ct = _file("CT_small.dcm")
    with Archive(load_settings(archive=root / "archive")) as archive, AuditLog(root / "audit.log") as audit:
        archive.ingest_file(ct)
        server = WebServer(archive, LOOPBACK, 0, auth=AUTH, audit=audit)
        host, port = server.start()
        try:
            study = str(pydicom.dcmread(ct, stop_before_pixels=True).StudyInstanceUID)
            yield Site(f"http://{host}:{port}", archive, root / "audit.log", study)
        finally:
            server.stop()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _stow(client: httpx.Client, path: Path) -> httpx.Response:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + path.read_bytes()
            + f"\r\n--{boundary}--\r\n".encode())
    headers = {"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
               "Accept": "application/dicom+json"}
    return client.post("/studies", content=body, headers=headers)


def test_missing_and_bad_credentials_get_401_with_challenges(site: Site) -> None:
    with site.client() as http:
        response = http.get("/studies", headers=DICOM_JSON)
        assert response.status_code == 401
        assert response.headers.get_list("www-authenticate") == [
            'Bearer realm="pacs-engine"', 'Basic realm="pacs-engine", charset="UTF-8"']
        assert response.json()["error"] == "authentication required: no credentials"
        assert http.get("/studies", headers=_bearer("not-a-token-" + "x" * 20)).status_code == 401
        assert http.get("/studies", headers={"Authorization": "Digest abc"}).status_code == 401
        assert http.get("/studies", headers={"Authorization": "Basic !!!"}).status_code == 401
        assert http.get("/studies", auth=("alice", "wrong")).status_code == 401
        assert http.get("/studies", auth=("nobody", "alice's password")).status_code == 401
    refused = [e for e in site.audit() if e["outcome"] == "refused" and e["status"] == 401]
    assert len(refused) >= 6 and all(e["who"] == "anonymous" for e in refused)
    assert any("unknown bearer token" in str(e["reason"]) for e in refused)


def test_read_role_reads_but_may_not_write(site: Site) -> None:
    for headers, auth in (({**_bearer(READ_TOKEN)}, None), ({}, ("alice", "alice's password"))):
        with site.client(**headers) as http:
            studies = http.get("/studies", headers=DICOM_JSON, auth=auth)
            assert studies.status_code == 200 and studies.json()[0]["0020000D"]["Value"] == [site.study]
            assert http.get(f"/studies/{site.study}/metadata", auth=auth).status_code == 200
            assert http.head(f"/studies/{site.study}/metadata", auth=auth).status_code == 200
            refused = _stow(http, _file("MR_small.dcm")) if auth is None else http.post(
                "/studies", content=b"", auth=auth)
            assert refused.status_code == 403 and "may not POST" in refused.json()["error"]
            assert http.delete(f"/studies/{site.study}", auth=auth).status_code == 403
    site.archive.record(str(pydicom.dcmread(_file("CT_small.dcm")).SOPInstanceUID))  # still there
    forbidden = [e for e in site.audit() if e["status"] == 403]
    assert {(e["who"], e["what"]) for e in forbidden} >= {("reader", "STOW-RS"), ("reader", "DELETE"),
                                                         ("alice", "STOW-RS"), ("alice", "DELETE")}


def test_write_role_stores_and_the_audit_names_the_study(site: Site) -> None:
    mr = _file("MR_small.dcm")
    with site.client(**_bearer(WRITE_TOKEN)) as http:
        response = _stow(http, mr)
    assert response.status_code == 200, response.text
    ds = pydicom.dcmread(mr, stop_before_pixels=True)
    site.archive.record(str(ds.SOPInstanceUID))
    [line] = [e for e in site.audit() if e["what"] == "STOW-RS" and e["who"] == "uploader"]
    assert line["outcome"] == "success" and line["status"] == 200 and line["stored"] == 1 and line["failed"] == 0
    assert line["studies"] == [str(ds.StudyInstanceUID)] and line["method"] == "POST"
    assert str(line["from"]).startswith("127.0.0.1:")

    with site.client() as http:
        assert _stow(http, mr).status_code == 401
        stored = http.post("/studies", content=b"--x--", auth=("bob", "bob's password"),
                           headers={"Content-Type": "multipart/related; type=\"application/dicom\"; boundary=x"})
        assert stored.status_code == 400 and "no parts" in stored.text.lower()  # bob may write: the STOW handler answers


def test_queries_and_retrieves_are_audited_with_their_study(site: Site) -> None:
    with site.client(**_bearer(READ_TOKEN)) as http:
        assert http.get("/studies", params={"StudyInstanceUID": site.study}, headers=DICOM_JSON).status_code == 200
        assert http.get(f"/studies/{site.study}/series", headers=DICOM_JSON).status_code == 200
        assert http.get(f"/studies/{site.study}", headers={"Accept": "multipart/related; type=application/dicom"}
                        ).status_code == 200
    lines = [e for e in site.audit() if e["who"] == "reader" and e["status"] == 200]
    query = next(e for e in lines if e["what"] == "QIDO-RS" and "StudyInstanceUID=" in str(e["path"]))
    assert query["studies"] == [site.study] and query["outcome"] == "success"
    series = next(e for e in lines if e["path"] == f"/studies/{site.study}/series")
    assert series["what"] == "QIDO-RS" and series["studies"] == [site.study]
    retrieve = next(e for e in lines if e["path"] == f"/studies/{site.study}")
    assert retrieve["what"] == "WADO-RS" and retrieve["studies"] == [site.study] and retrieve["method"] == "GET"
    assert all(str(e["time"]).endswith("Z") for e in lines)


def test_cors_preflight_and_viewer_files_need_no_credentials(site: Site) -> None:
    with site.client() as http:
        preflight = http.options("/studies", headers={
            "Origin": "https://viewer.example", "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization"})
        assert preflight.status_code == 200
        assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
        refused = http.get("/studies", headers={"Origin": "https://viewer.example"})
        assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == "*"
        assert "WWW-Authenticate" in refused.headers["access-control-expose-headers"]
        assert http.get("/").status_code == 200 and http.get("/viewer/viewer.js").status_code == 200
    assert not [e for e in site.audit() if str(e.get("path", "")).startswith("/viewer/")]


def test_open_dicomweb_on_a_public_address_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3") and not is_loopback("pacs.example")
    with Archive(load_settings(archive=tmp_path / "a")) as archive:
        for auth, warning in ((None, "open to anyone"), (AUTH, "over plain HTTP")):
            caplog.clear()
            server = WebServer(archive, "0.0.0.0", 0, auth=auth)
            with caplog.at_level(logging.WARNING, logger="engine.web._server"):
                server.start()
            server.stop()
            assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
                next(r.getMessage() for r in caplog.records if warning in r.getMessage())]
        caplog.clear()
        server = WebServer(archive, LOOPBACK, 0)  # loopback: nobody else can reach it, no warning
        with caplog.at_level(logging.WARNING, logger="engine.web._server"):
            server.start()
        server.stop()
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_without_auth_everything_is_open_and_audited_as_anonymous(tmp_path: Path) -> None:
    with Archive(load_settings(archive=tmp_path / "a")) as archive, AuditLog(tmp_path / "audit.log") as audit:
        archive.ingest_file(_file("CT_small.dcm"))
        server = WebServer(archive, LOOPBACK, 0, audit=audit)
        host, port = server.start()
        try:
            with httpx.Client(base_url=f"http://{host}:{port}") as http:
                assert http.get("/studies", headers=DICOM_JSON).status_code == 200
        finally:
            server.stop()
    [line] = read_audit(tmp_path / "audit.log")
    assert line["who"] == "anonymous" and line["what"] == "QIDO-RS" and line["outcome"] == "success"


def test_a_verified_basic_login_is_remembered_and_a_changed_password_is_not() -> None:
    auth = Authenticator(AUTH)
    key, cached = auth.cached_basic("bob", "bob's password")
    assert cached is None
    assert auth.verify_basic(key, "bob", "bob's password") == Identity("bob", "write")
    assert auth.cached_basic("bob", "bob's password")[1] == Identity("bob", "write")
    wrong_key, cached = auth.cached_basic("bob", "bob's passwore")
    assert cached is None and wrong_key != key
    assert auth.verify_basic(wrong_key, "bob", "bob's passwore") is None
    assert auth.bearer(WRITE_TOKEN) == Identity("uploader", "write") and auth.bearer(WRITE_TOKEN[:-1]) is None


def test_a_delete_is_audited_like_any_request(tmp_path: Path) -> None:
    settings = load_settings(archive=tmp_path / "a", storage={"allow_delete": True})
    ct = _file("CT_small.dcm")
    study = str(pydicom.dcmread(ct, stop_before_pixels=True).StudyInstanceUID)
    with Archive(settings) as archive, AuditLog(tmp_path / "audit.log") as audit:
        archive.ingest_file(ct)
        server = WebServer(archive, LOOPBACK, 0, auth=AUTH, audit=audit)
        host, port = server.start()
        try:
            with httpx.Client(base_url=f"http://{host}:{port}", headers=_bearer(WRITE_TOKEN)) as http:
                assert http.delete(f"/studies/{study}").status_code == 200
                assert http.delete(f"/studies/{study}").status_code == 404
        finally:
            server.stop()
    deleted, missing = read_audit(tmp_path / "audit.log")
    assert (deleted["what"], deleted["who"], deleted["outcome"], deleted["status"]) == ("DELETE", "uploader", "success", 200)
    assert deleted["studies"] == [study] and deleted["method"] == "DELETE"
    assert (missing["outcome"], missing["status"]) == ("failure", 404)
