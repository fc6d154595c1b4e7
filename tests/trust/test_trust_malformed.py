"""The malformed-file corpus (tests/trust/malformed/, written by make_malformed.py): every defect is refused
with a reason through `import`, DCMTK storescu (when storescu will send it at all) and STOW-RS, and the
server stays up and answers C-ECHO after each. Files named tolerated_* are read past and stored intact.
"""

from __future__ import annotations

import re
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from engine.archive import Archive
from engine.cli import main
from engine.testing.crash import Source, stow_content_type
from engine.testing.dcmtk import free_port, run_echoscu
from engine.testing.server import ServerHandle, running_server

pytestmark = pytest.mark.dcmtk

CORPUS = Path(__file__).with_name("malformed")
FILES = sorted(p for p in CORPUS.glob("*.dcm"))
REFUSED = [p for p in FILES if not p.name.startswith("tolerated_")]
TOLERATED = [p for p in FILES if p.name.startswith("tolerated_")]
# Defects DCMTK's storescu reads past and re-encodes into a valid data set before sending: the server
# receives nothing malformed, so storing it is right (the module's final verify --deep checks it).
REPAIRED_BY_STORESCU = {
    "unknown_transfer_syntax": "storescu detects the real encoding and sends explicit VR little endian",
}
_RESPONSE = re.compile(r"I: Received Store Response \((.*)\)")


@dataclass(frozen=True, slots=True)
class Served:
    server: ServerHandle
    base: str


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    port = free_port()
    archive = tmp_path_factory.mktemp("malformed") / "archive"
    with running_server(archive, extra_args=["--http-port", str(port)]) as server:
        yield Served(server, f"http://127.0.0.1:{port}")
        assert server.stop() == 0
    log = server.log()
    assert "Traceback" not in log and "C-STORE failed" not in log, log[-5000:]
    with Archive.open(archive, readonly=True) as opened:
        assert opened.verify(deep=True) == []


def test_the_corpus_is_there() -> None:
    assert len(REFUSED) >= 20 and TOLERATED, [p.name for p in FILES]


def _stow(base: str, path: Path) -> httpx.Response:
    boundary = uuid.uuid4().hex
    body = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    return httpx.post(f"{base}/studies", content=body, headers={"content-type": stow_content_type(boundary)}, timeout=60)


def _import(archive: Path, path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["--archive", str(archive), "import", "-q", str(path)])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("path", REFUSED, ids=[p.stem for p in REFUSED])
def test_malformed_file_is_refused_everywhere_with_a_reason(
    path: Path, served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = _import(tmp_path / "archive", path, capsys)
    assert code == 1, err
    [line] = [line for line in err.splitlines() if line.startswith("refused: ")]
    reason = line.split(": ", 2)[2]
    assert reason.strip() and "internal error" not in reason, line

    stow = _stow(served.base, path)
    assert stow.status_code in (400, 409), stow.text
    if stow.status_code == 409:
        [failed] = stow.json()["00081198"]["Value"]
        assert failed["00081197"]["Value"][0] not in (0, 0x0110), failed  # a reason, not "processing failure"
        assert "00081199" not in stow.json()

    server = served.server
    sent = subprocess.run(
        ["storescu", "-v", "-aec", server.ae_title, server.host, str(server.port), str(path)],
        capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    stderr = sent.stderr.decode(errors="replace")  # DCMTK echoes the file's own (non-UTF-8) bytes
    responses = _RESPONSE.findall(stderr)
    if path.stem in REPAIRED_BY_STORESCU:
        assert responses == ["Success"], stderr[-2000:]
    else:
        assert "Success" not in responses, stderr[-2000:]
    print(f"{path.name}: import refused ({reason[:80]}); STOW {stow.status_code}; storescu "
          + (f"answered {responses}" if responses else "would not send it"))
    assert run_echoscu(server.host, server.port, called_ae=server.ae_title).returncode == 0


@pytest.mark.parametrize("path", TOLERATED, ids=[p.stem for p in TOLERATED])
def test_tolerated_defect_is_stored_intact(path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _import(tmp_path / "archive", path, capsys)
    assert code == 0, err
    source = Source.read(path)
    with Archive.open(tmp_path / "archive", readonly=True) as archive:
        assert archive.read_dataset(source.sop_instance_uid) == (source.transfer_syntax_uid, source.dataset)
