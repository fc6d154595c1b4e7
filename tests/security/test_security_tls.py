"""TLS on the DIMSE listener (DCMTK and our SCU, server and mutual authentication, plain clients refused
cleanly, a silent client blocking nobody) and HTTPS on DICOMweb, against a throwaway CA."""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pydicom
import pytest

from engine.archive import Archive
from engine.audit import AuditLog, read_audit
from engine.cli.main import main
from engine.config import load_settings
from engine.errors import ConfigError
from engine.net import DicomServer, Peer, ScuError, ScuOptions, scu_echo, scu_find, scu_get
from engine.security import client_ssl_context, server_ssl_context
from engine.testing.dcmtk import LOOPBACK, run_echoscu, run_storescu
from engine.web import WebServer
from security_helpers import Pki

AE = "SECURE"


def _file(name: str) -> Path:
    path = pydicom.data.get_testdata_file(name)
    assert path is not None
    return Path(path)


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    root = tmp_path_factory.mktemp("tls")
    with Archive(load_settings(archive=root / "archive", dicom={"ae_title": AE})) as opened:
        opened.ingest_file(_file("CT_small.dcm"))
        yield opened


@pytest.fixture(scope="module")
def tls_server(archive: Archive, pki: Pki, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[tuple[DicomServer, Path]]:
    audit_path = tmp_path_factory.mktemp("tls-audit") / "audit.log"
    settings = load_settings(archive=archive.settings.archive, dicom={"host": LOOPBACK, "port": 0, "ae_title": AE})
    with AuditLog(audit_path) as audit:
        server = DicomServer(archive, settings.dicom, audit=audit,
                             ssl_context=server_ssl_context(str(pki.server_cert), str(pki.server_key)))
        server.start()
        try:
            yield server, audit_path
        finally:
            server.stop()


def _tls(pki: Pki, ca: Path | None = None) -> ScuOptions:
    return ScuOptions(calling_ae="OURS", tls=client_ssl_context(str(ca or pki.ca)))


def test_our_scu_echo_store_find_over_tls(tls_server: tuple[DicomServer, Path], pki: Pki, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    host, port = tls_server[0].address
    peer = Peer(AE, host, port)
    assert scu_echo(peer, _tls(pki)) == 0
    [match] = scu_find(peer, "STUDY", {"StudyInstanceUID": "", "PatientID": ""}, options=_tls(pki))
    assert match["StudyInstanceUID"] == str(pydicom.dcmread(_file("CT_small.dcm")).StudyInstanceUID)

    # The CLI: --tls-ca implies --tls; send stores a real file over the TLS association.
    mr = _file("MR_small.dcm")
    common = ["--archive", str(tmp_path / "none")]
    assert main([*common, "send", "--tls-ca", str(pki.ca), "--to", f"{AE}@{host}:{port}", str(mr)]) == 0
    assert "1 completed" in capsys.readouterr().out
    # --tls alone trusts the system's CAs ([tls] ca_file is empty), which never signed the test certificate.
    assert main([*common, "echo", "--tls", f"{AE}@{host}:{port}"]) == 1
    assert "does its certificate verify" in capsys.readouterr().err


def test_a_c_get_over_tls_brings_the_stored_bytes(tls_server: tuple[DicomServer, Path], pki: Pki,
                                                  archive: Archive) -> None:
    # Both ends write their PDUs themselves here (the server's sub-operations, our SCU's responses); a TLS
    # socket has no sendmsg, so this is the path that joins them instead.
    host, port = tls_server[0].address
    study = str(pydicom.dcmread(_file("CT_small.dcm")).StudyInstanceUID)
    received: list[tuple[bytes, str]] = []
    summary = scu_get(Peer(AE, host, port), "STUDY", {"StudyInstanceUID": study},
                      lambda data, syntax: received.append((bytes(data), syntax)), options=_tls(pki))
    assert summary.completed == 1 and summary.failed == 0
    [(data, syntax)] = received
    sop = str(pydicom.dcmread(_file("CT_small.dcm")).SOPInstanceUID)
    assert data == archive.read_dataset(sop, syntax)[1]


@pytest.mark.dcmtk
def test_dcmtk_echo_and_store_over_tls(tls_server: tuple[DicomServer, Path], pki: Pki, archive: Archive) -> None:
    host, port = tls_server[0].address
    done = run_echoscu(host, port, called_ae=AE, extra=["+tla", "+cf", str(pki.ca)])
    assert done.returncode == 0, done.stderr
    rt = _file("rtplan.dcm")
    done = run_storescu(host, port, [rt], called_ae=AE, extra=["+tla", "+cf", str(pki.ca)])
    assert done.returncode == 0, done.stderr
    archive.record(str(pydicom.dcmread(rt).SOPInstanceUID))
    [stored] = [e for e in read_audit(tls_server[1]) if e["what"] == "C-STORE" and e["who"] == "STORESCU"]
    assert stored["outcome"] == "success"


@pytest.mark.dcmtk
def test_plain_clients_fail_cleanly_and_are_audited(tls_server: tuple[DicomServer, Path], pki: Pki) -> None:
    host, port = tls_server[0].address
    done = run_echoscu(host, port, called_ae=AE, timeout=30)
    assert done.returncode != 0
    with pytest.raises(ScuError, match="does the peer need TLS"):
        scu_echo(Peer(AE, host, port), ScuOptions(timeout=10))
    assert scu_echo(Peer(AE, host, port), _tls(pki)) == 0  # the listener is unharmed
    refused = [e for e in read_audit(tls_server[1]) if e["what"] == "association"]
    assert len(refused) >= 2 and all("TLS handshake failed" in str(e["reason"]) for e in refused)


@pytest.mark.dcmtk
def test_clients_verify_the_server_certificate(tls_server: tuple[DicomServer, Path], pki: Pki) -> None:
    host, port = tls_server[0].address
    with pytest.raises(ScuError, match="certificate"):
        scu_echo(Peer(AE, host, port), _tls(pki, pki.other_ca))
    done = run_echoscu(host, port, called_ae=AE, extra=["+tla", "+cf", str(pki.other_ca)], timeout=30)
    assert done.returncode != 0


def test_a_silent_client_does_not_block_the_listener(tls_server: tuple[DicomServer, Path], pki: Pki) -> None:
    host, port = tls_server[0].address
    with socket.create_connection((host, port)):  # connects, never says hello
        assert scu_echo(Peer(AE, host, port), _tls(pki)) == 0


@pytest.mark.dcmtk
def test_mutual_tls_requires_a_client_certificate(archive: Archive, pki: Pki) -> None:
    settings = load_settings(archive=archive.settings.archive, dicom={"host": LOOPBACK, "port": 0, "ae_title": AE})
    context = server_ssl_context(str(pki.server_cert), str(pki.server_key), str(pki.ca))
    with DicomServer(archive, settings.dicom, ssl_context=context) as server:
        host, port = server.address
        done = run_echoscu(host, port, called_ae=AE,
                           extra=["+tls", str(pki.client_key), str(pki.client_cert), "+cf", str(pki.ca)])
        assert done.returncode == 0, done.stderr
        done = run_echoscu(host, port, called_ae=AE, extra=["+tla", "+cf", str(pki.ca)], timeout=30)
        assert done.returncode != 0
        with_cert = client_ssl_context(str(pki.ca), str(pki.client_cert), str(pki.client_key))
        assert scu_echo(Peer(AE, host, port), ScuOptions(tls=with_cert)) == 0
        with pytest.raises(ScuError):
            scu_echo(Peer(AE, host, port), _tls(pki))


def test_https_qido_and_wado(archive: Archive, pki: Pki) -> None:
    web = WebServer(archive, LOOPBACK, 0, certfile=str(pki.server_cert), keyfile=str(pki.server_key))
    host, port = web.start()
    try:
        with httpx.Client(base_url=f"https://{host}:{port}", verify=ssl.create_default_context(cafile=str(pki.ca))) as http:
            studies = http.get("/studies", headers={"Accept": "application/dicom+json"})
            assert studies.status_code == 200
            study = json.loads(studies.content)[0]["0020000D"]["Value"][0]
            metadata = http.get(f"/studies/{study}/metadata")
            assert metadata.status_code == 200 and len(metadata.json()) >= 1
        with httpx.Client(base_url=f"https://{host}:{port}",
                          verify=ssl.create_default_context(cafile=str(pki.other_ca))) as http, \
                pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            http.get("/studies")
        with httpx.Client(base_url=f"http://{host}:{port}") as http:  # plain HTTP to the TLS port
            with pytest.raises(httpx.HTTPError):
                http.get("/studies")
    finally:
        web.stop()


def test_tls_settings_are_checked(tmp_path: Path, pki: Pki) -> None:
    with pytest.raises(ConfigError, match="cert_file and key_file go together"):
        load_settings(archive=tmp_path, tls={"cert_file": str(pki.server_cert)})
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(archive=tmp_path, tls={"cert_file": "missing.pem", "key_file": str(pki.server_key)})
    with pytest.raises(ConfigError, match="client_ca_file needs cert_file"):
        load_settings(archive=tmp_path, tls={"client_ca_file": str(pki.ca)})
    with pytest.raises(ConfigError, match="cannot load"):
        server_ssl_context(str(pki.server_cert), str(pki.client_key))  # a key of another certificate
    # Relative paths are under the archive folder, where engine.toml lives.
    (tmp_path / "tls").mkdir()
    for source, name in ((pki.server_cert, "server.pem"), (pki.server_key, "server.key")):
        (tmp_path / "tls" / name).write_bytes(source.read_bytes())
    (tmp_path / "engine.toml").write_text('[tls]\ncert_file = "tls/server.pem"\nkey_file = "tls/server.key"\n'
                                          "http = false\n")
    tls = load_settings(archive=tmp_path).tls
    assert tls.cert_file == str(tmp_path / "tls" / "server.pem") and tls.dicom_enabled and not tls.http_enabled
