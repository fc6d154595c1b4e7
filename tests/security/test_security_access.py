"""Per-service calling-AE allow-lists against DCMTK storescu / findscu / getscu / movescu, and the audit
lines the listener writes for each store, query, retrieve and refusal."""

from __future__ import annotations

import logging
import re
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest

from engine.archive import Archive
from engine.audit import AuditLog, read_audit
from engine.config import load_settings
from engine.errors import ConfigError, NotFoundError
from engine.net import DicomServer, Peer, ScuError, ScuOptions, scu_echo, scu_find, scu_move
from engine.testing.dcmtk import LOOPBACK, StoreSCP, free_port, run_storescu

pytestmark = pytest.mark.dcmtk

AE = "GUARDED"
_STATUS = re.compile(r"DIMSE Status\s*:\s*0x([0-9a-fA-F]{4})")


@dataclass(frozen=True)
class Guarded:
    host: str
    port: int
    archive: Archive
    audit_path: Path
    dest: StoreSCP
    ct: Path  # stored before the tests, by MODALITY
    ct_study: str

    def audit(self, what: str, who: str) -> list[dict[str, object]]:
        return [e for e in read_audit(self.audit_path) if e["what"] == what and e["who"] == who]


def _file(name: str) -> Path:
    path = pydicom.data.get_testdata_file(name)
    assert path is not None
    return Path(path)


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guarded]:
    root = tmp_path_factory.mktemp("guarded")
    with StoreSCP(root / "dest", ae_title="DEST") as dest:
        settings = load_settings(archive=root / "archive", dicom={
            "host": LOOPBACK, "port": 0, "ae_title": AE,
            "allowed_calling_aes": ["MODALITY", "VIEWER", "WORKSTATION"],
            "allowed_store_aes": ["MODALITY"],
            "allowed_find_aes": ["VIEWER", "WORKSTATION"],
            "allowed_retrieve_aes": ["WORKSTATION"],
            "remote_aes": {"DEST": f"{LOOPBACK}:{dest.port}", "DEAD": f"{LOOPBACK}:{free_port()}"},
        })
        assert settings.audit_path is not None
        with Archive(settings) as archive, AuditLog.from_settings(settings) as audit:
            listener = DicomServer(archive, settings.dicom, audit=audit)
            host, port = listener.start()
            try:
                ct = _file("CT_small.dcm")
                done = run_storescu(host, port, [ct], called_ae=AE, calling_ae="MODALITY")
                assert done.returncode == 0, done.stderr
                study = str(pydicom.dcmread(ct, stop_before_pixels=True).StudyInstanceUID)
                yield Guarded(host, port, archive, settings.audit_path, dest, ct, study)
            finally:
                listener.stop()


def _dcmtk(tool: str, g: Guarded, calling_ae: str, keys: Sequence[str], *extra: str) -> tuple[int | None, str]:
    command = [tool, "-d", "-S", "-aet", calling_ae, "-aec", AE, *extra, g.host, str(g.port)]
    for key in keys:
        command += ["-k", key]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    log = done.stdout + done.stderr
    statuses = [int(s, 16) for s in _STATUS.findall(log)]
    return (statuses[-1] if statuses else None), log


def test_store_allowed_and_refused_with_not_authorized(guarded: Guarded) -> None:
    [stored] = guarded.audit("C-STORE", "MODALITY")
    sop = str(pydicom.dcmread(guarded.ct, stop_before_pixels=True).SOPInstanceUID)
    assert stored["outcome"] == "success" and stored["status"] == 0 and stored["sop"] == sop
    assert stored["studies"] == [guarded.ct_study] and str(stored["from"]).startswith("127.0.0.1:")

    mr = _file("MR_small.dcm")
    done = run_storescu(guarded.host, guarded.port, [mr], called_ae=AE, calling_ae="VIEWER", extra=["-d"])
    assert done.returncode != 0
    assert re.search(r"DIMSE Status\s*:\s*0x0124", done.stdout + done.stderr), done.stderr[-2000:]
    mr_sop = str(pydicom.dcmread(mr, stop_before_pixels=True).SOPInstanceUID)
    with pytest.raises(NotFoundError):
        guarded.archive.record(mr_sop)  # nothing was stored
    [refused] = guarded.audit("C-STORE", "VIEWER")
    assert refused["outcome"] == "refused" and refused["status"] == 0x0124
    assert "allowed_store_aes" in str(refused["reason"])


def test_find_allowed_and_refused(guarded: Guarded) -> None:
    status, log = _dcmtk("findscu", guarded, "VIEWER", ["QueryRetrieveLevel=STUDY", f"StudyInstanceUID={guarded.ct_study}"])
    assert status == 0x0000, log[-2000:]
    assert guarded.ct_study in log
    status, log = _dcmtk("findscu", guarded, "MODALITY", ["QueryRetrieveLevel=STUDY", "StudyInstanceUID="])
    assert status == 0x0124, log[-2000:]

    [found] = guarded.audit("C-FIND", "VIEWER")
    assert found["outcome"] == "success" and found["matches"] == 1 and found["studies"] == [guarded.ct_study]
    assert found["level"] == "STUDY"
    [refused] = guarded.audit("C-FIND", "MODALITY")
    assert refused["outcome"] == "refused" and refused["status"] == 0x0124


def test_get_allowed_and_refused(guarded: Guarded, tmp_path: Path) -> None:
    keys = ["QueryRetrieveLevel=STUDY", f"StudyInstanceUID={guarded.ct_study}"]
    status, log = _dcmtk("getscu", guarded, "WORKSTATION", keys, "-od", str(tmp_path))
    assert status == 0x0000, log[-2000:]
    assert len(list(tmp_path.iterdir())) == 1
    (tmp_path / "no").mkdir()
    status, log = _dcmtk("getscu", guarded, "VIEWER", keys, "-od", str(tmp_path / "no"))
    assert status == 0x0124, log[-2000:]
    assert not list((tmp_path / "no").iterdir())

    [got] = guarded.audit("C-GET", "WORKSTATION")
    assert got["outcome"] == "success" and got["completed"] == 1 and got["failed"] == 0
    assert got["studies"] == [guarded.ct_study]
    [refused] = guarded.audit("C-GET", "VIEWER")
    assert refused["outcome"] == "refused" and refused["status"] == 0x0124


def test_move_allowed_and_refused_at_association(guarded: Guarded) -> None:
    keys = ["QueryRetrieveLevel=STUDY", f"StudyInstanceUID={guarded.ct_study}"]
    before = set(guarded.dest.files())
    status, log = _dcmtk("movescu", guarded, "WORKSTATION", keys, "-aem", "DEST")
    assert status == 0x0000, log[-2000:]
    assert len(set(guarded.dest.files()) - before) == 1

    # No C-MOVE context for VIEWER: movescu cannot even send the request, and DEST hears nothing.
    status, log = _dcmtk("movescu", guarded, "VIEWER", keys, "-aem", "DEST")
    assert status is None and "Move SCU Failed" in log, log[-2000:]
    assert re.search(r"\(Abstract Syntax Not Supported\)\s+D:\s+Abstract Syntax: =MOVEStudyRoot", log), log[-2000:]
    assert len(set(guarded.dest.files()) - before) == 1

    [moved] = guarded.audit("C-MOVE", "WORKSTATION")
    assert moved["outcome"] == "success" and moved["completed"] == 1 and moved["destination"] == "DEST"
    assert moved["studies"] == [guarded.ct_study]
    [refused] = guarded.audit("C-MOVE", "VIEWER")
    assert refused["outcome"] == "refused" and "allowed_retrieve_aes" in str(refused["reason"])


def test_our_scu_sees_the_same_rules(guarded: Guarded) -> None:
    peer = Peer(AE, guarded.host, guarded.port)
    assert scu_echo(peer, ScuOptions(calling_ae="MODALITY")) == 0  # echo is not a restricted service
    with pytest.raises(ScuError, match="0x0124"):
        list(scu_find(peer, "STUDY", {"StudyInstanceUID": ""}, options=ScuOptions(calling_ae="MODALITY")))
    with pytest.raises(ScuError, match="rejected: Rejected Permanent, Service User: Calling AE title not recognised"):
        scu_echo(peer, ScuOptions(calling_ae="STRANGER"))
    with pytest.raises(ScuError, match=r"accepted none of the presentation contexts proposed \(Study Root .*MOVE\)"):
        scu_move(peer, "STUDY", {"StudyInstanceUID": guarded.ct_study}, "DEST", options=ScuOptions(calling_ae="VIEWER"))
    [rejected] = guarded.audit("association", "STRANGER")
    assert rejected["outcome"] == "refused" and "allowed_calling_aes" in str(rejected["reason"])


# pynetdicom's C-MOVE closes the socket of a destination that refused the connection with shutdown() first,
# which fails on an unconnected socket, so the close is skipped and Python closes it when it is collected.
@pytest.mark.filterwarnings("ignore:Exception ignored in.*socket:pytest.PytestUnraisableExceptionWarning")
def test_retrieves_below_study_level_and_failed_moves_are_audited_as_they_went(guarded: Guarded, tmp_path: Path) -> None:
    """A series-level C-GET names the study it disclosed (it said none); a C-MOVE to an unknown or an
    unreachable destination is a failure with status A801 (it said success, status null)."""
    series = str(pydicom.dcmread(guarded.ct, stop_before_pixels=True).SeriesInstanceUID)
    keys = ["QueryRetrieveLevel=SERIES", f"StudyInstanceUID={guarded.ct_study}", f"SeriesInstanceUID={series}"]
    status, log = _dcmtk("getscu", guarded, "WORKSTATION", keys, "-od", str(tmp_path))
    assert status == 0x0000, log[-2000:]
    [got] = [e for e in guarded.audit("C-GET", "WORKSTATION") if e["level"] == "SERIES"]
    assert got["outcome"] == "success" and got["completed"] == 1 and got["studies"] == [guarded.ct_study]
    for destination in ("NOWHERE", "DEAD"):
        status, log = _dcmtk("movescu", guarded, "WORKSTATION", keys, "-aem", destination)
        assert status == 0xA801, log[-2000:]
        [moved] = [e for e in guarded.audit("C-MOVE", "WORKSTATION") if e["destination"] == destination]
        assert moved["outcome"] == "failure" and moved["status"] == 0xA801 and moved["completed"] == 0, (destination, moved)


def test_echo_is_counted_in_the_association_line(guarded: Guarded, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="engine.net")
    peer = Peer(AE, guarded.host, guarded.port)
    assert scu_echo(peer, ScuOptions(calling_ae="VIEWER")) == 0
    lines = [r.getMessage() for r in caplog.records if "association from VIEWER" in r.getMessage()]
    assert lines and lines[-1].endswith("C-ECHO 1"), lines


def test_service_lists_must_name_aes_that_may_associate(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="allowed_store_aes names 'CT'"):
        load_settings(archive=tmp_path, dicom={"allowed_calling_aes": ["MR"], "allowed_store_aes": ["CT"]})
    settings = load_settings(archive=tmp_path, environ={"PACS_ENGINE_DICOM__ALLOWED_FIND_AES": "A, B"})
    assert settings.dicom.allowed_find_aes == ("A", "B")
