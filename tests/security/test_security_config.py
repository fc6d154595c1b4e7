"""[tls] / [auth] / [audit] settings and their errors, password hashes, `pacs-engine hash-password`, the audit
appender, and `pacs-engine serve` wired up with all of them (TLS DIMSE, HTTPS, tokens, ARCHIVE/audit.log)."""

from __future__ import annotations

import io
import os
import re
import ssl
import stat
import threading
from pathlib import Path

import httpx
import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from security_helpers import Pki

from engine.audit import AuditLog, local_user, read_audit
from engine.cli.main import main
from engine.config import load_settings
from engine.errors import ConfigError
from engine.net import Peer, ScuOptions, scu_echo
from engine.security import check_password_hash, client_ssl_context, hash_password, new_token, verify_password
from engine.testing.dcmtk import free_port
from engine.testing.server import running_server

HASH = hash_password("correct horse")


def _toml(tmp_path: Path, text: str) -> Path:
    (tmp_path / "engine.toml").write_text(text, encoding="utf-8")
    return tmp_path


def test_auth_tables_are_read(tmp_path: Path) -> None:
    archive = _toml(tmp_path, f'''
[auth]
realm = "Radiology"
[auth.tokens.viewer]
token = "{"t" * 32}"
role = "read"
[auth.users.alice]
password_hash = "{HASH}"
role = "write"
''')
    auth = load_settings(archive=archive).auth
    assert auth.enabled and auth.realm == "Radiology"
    assert [(c.name, c.role, c.secret) for c in auth.tokens] == [("viewer", "read", "t" * 32)]
    assert [(c.name, c.role) for c in auth.users] == [("alice", "write")]
    assert not load_settings(archive=tmp_path / "elsewhere").auth.enabled


@pytest.mark.parametrize(("text", "message"), [
    ('[auth.tokens.a]\ntoken = "' + "t" * 32 + '"\nrole = "admin"\n', "role 'admin' is not one of read, write"),
    ('[auth.tokens.a]\ntoken = "short"\nrole = "read"\n', "at least 16"),
    ('[auth.tokens.a]\ntoken = "' + "t" * 32 + '"\nrole = "read"\n[auth.tokens.b]\ntoken = "' + "t" * 32
     + '"\nrole = "write"\n', "also given to another name"),
    ('[auth.tokens.a]\nrole = "read"\n', "needs exactly token and role"),
    ('[auth.users.bob]\npassword_hash = "plain text"\nrole = "read"\n', "expected scrypt"),
    ('[auth.users.bob]\npassword_hash = "scrypt$3$8$1$AAAAAAAAAAA$AAAA"\nrole = "read"\n', "out of range"),
    ('[auth]\nsecret = 1\n', "has no setting 'secret'"),
    ('[auth]\nrealm = "a\\"b"\n', "without quotes"),
    ('[audit]\nenabled = "perhaps"\n', "not a valid bool"),
    ('[tls]\ncert = "x"\n', "has no setting 'cert'"),
    ('[storage]\nworkers = -1\n', "[storage] workers -1 must be 0 or more"),  # not a traceback from the pool
    ('[storage]\ncommit_batch = 0\n', "[storage] commit_batch 0 must be 1 or more"),
])
def test_bad_security_settings_say_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(archive=_toml(tmp_path, text))


def test_audit_path_defaults_under_the_archive(tmp_path: Path) -> None:
    assert load_settings(archive=tmp_path).audit_path == tmp_path / "audit.log"
    assert load_settings(archive=tmp_path, audit={"path": "logs/trail.jsonl"}).audit_path == tmp_path / "logs/trail.jsonl"
    assert load_settings(archive=tmp_path, environ={"PACS_ENGINE_AUDIT__ENABLED": "false"}).audit_path is None


@settings(max_examples=5, deadline=None)  # scrypt costs tens of milliseconds per hash, by design
@given(st.text(min_size=1, max_size=40))
def test_password_hashes_verify_only_their_password(password: str) -> None:
    encoded = hash_password(password)
    check_password_hash(encoded)
    assert verify_password(password, encoded)
    assert not verify_password(password + "x", encoded)
    assert hash_password(password) != encoded  # a new salt each time


def test_hash_password_command(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret pass\n"))
    assert main(["hash-password", "--stdin", "--user", "alice"]) == 0
    out, err = capsys.readouterr()
    assert verify_password("s3cret pass", out.strip())
    assert "[auth.users.alice]" in err and out.strip() in err
    assert main(["hash-password", "--new-token"]) == 0
    token = capsys.readouterr().out.strip()
    assert len(token) == 43 and token != new_token()
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    assert main(["hash-password", "--stdin"]) == 1


def test_audit_lines_from_many_threads_stay_whole(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "audit.log"
    with AuditLog(path) as audit:
        def write(n: int) -> None:
            for k in range(200):
                audit.record("C-STORE", who=f"AE{n}", where="127.0.0.1:1", outcome="success", status=0,
                             studies=["1.2.3"], sop=f"1.2.3.{n}.{k}", note="x" * 500)

        threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        with pytest.raises(ValueError, match="outcome"):
            audit.record("C-STORE", who="a", where="b", outcome="fine")
    lines = read_audit(path)
    assert len(lines) == 1600 and len({line["sop"] for line in lines}) == 1600
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    AuditLog(None).record("C-STORE", who="a", where="b", outcome="success")  # disabled: nothing, no error


def test_a_command_line_deletion_can_be_audited(tmp_path: Path) -> None:
    """What `pacs-engine delete` (or any local tool) writes: who runs it, from "local", which studies."""
    settings = load_settings(archive=tmp_path)
    with AuditLog.from_settings(settings) as audit:
        audit.record("delete", who=local_user(), where="local", outcome="success", studies=["1.2.3", "1.2.3"],
                     instances=2, bytes=1024)
    [line] = read_audit(tmp_path / "audit.log")
    assert str(line["who"]).startswith("cli:") and line["studies"] == ["1.2.3"] and line["instances"] == 2


def test_serve_with_tls_https_tokens_and_the_default_audit_file(tmp_path: Path, pki: Pki) -> None:
    archive = tmp_path / "archive"
    archive.mkdir()
    token = "t" * 32
    (archive / "engine.toml").write_text(f'''
[tls]
cert_file = "{pki.server_cert}"
key_file = "{pki.server_key}"
[auth.tokens.pacs]
token = "{token}"
role = "write"
''', encoding="utf-8")
    http_port = free_port()
    with running_server(archive, extra_args=["--http-port", str(http_port)]) as server:
        assert server.http_port == http_port  # running_server waited for this DICOMweb readiness line
        peer = Peer(server.ae_title, server.host, server.port)
        assert scu_echo(peer, ScuOptions(tls=client_ssl_context(str(pki.ca)))) == 0
        ct = pydicom.data.get_testdata_file("CT_small.dcm")
        assert ct is not None
        tls_args = ["--archive", str(archive), "send", "--tls-ca", str(pki.ca), "--to", str(peer), ct]
        assert main(tls_args) == 0
        verify = ssl.create_default_context(cafile=str(pki.ca))
        with httpx.Client(base_url=f"https://127.0.0.1:{http_port}", verify=verify) as http:
            assert http.get("/studies").status_code == 401
            found = http.get("/studies", headers={"Authorization": f"Bearer {token}"})
            assert found.status_code == 200 and len(found.json()) == 1
        log = server.log_path.read_text()
        assert "TLS, max PDU" in log and "https://" in log
    events = read_audit(archive / "audit.log")
    assert [e["what"] for e in events if e["outcome"] == "success"] == ["C-STORE", "QIDO-RS"]
    assert events[0]["studies"] == [str(pydicom.dcmread(ct, stop_before_pixels=True).StudyInstanceUID)]
