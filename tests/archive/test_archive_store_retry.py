"""An acknowledged instance whose store fails is stored once it can be, without a restart.

The network path acknowledges an instance once its bytes are in the receive journal and stores it
behind the sender. When that store fails (here: something else fills the disk after the acknowledgement)
the instance stays pending and is tried again; and an archive opened while such instances still cannot be
stored opens all the same, serving what it holds, and stores them once there is room.

A real tmpfs, so ENOSPC comes from the kernel wherever the store's writes fall.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pydicom
import pytest

from engine.archive import Archive
from engine.archive._receiver import MAX_BACKLOG
from engine.errors import EngineError, NotStoredYetError
from engine.testing.crash import Source
from engine.testing.dcmtk import LOOPBACK
from engine.testing.disk import MountError, fill_leaving, mounted_tmpfs
from engine.testing.series import write_ct_series
from engine.testing.transcodes import workers_held
from engine.web import WebServer

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root (CI runs as root)")

DISK_MB = 24
SLACK = 48 << 10  # left free by the ballast: index pages and small files fit, a 512 x 512 CT chunk does not
STORED_TIMEOUT = 60.0  # retries start 1 s apart and double


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    try:
        with mounted_tmpfs(tmp_path / "small", DISK_MB) as mount:
            yield mount
    except MountError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> list[Source]:
    return [Source.read(p) for p in write_ct_series(tmp_path_factory.mktemp("retry-ct"), 4, seed=5)]


def _accept_then_fill(archive: Archive, sources: list[Source], mount: Path) -> Path:
    """Acknowledge `sources` while no worker stores them, then fill the disk; returns the ballast."""
    with workers_held(archive):
        for source in sources:
            assert archive.accept(source.dataset, source.transfer_syntax_uid).status == "stored"
        archive.wait_for_ingests(stored=False)  # their pending records are committed: queries find them
        return fill_leaving(mount, SLACK)


def _pending(archive: Archive, sources: list[Source]) -> list[bool]:
    return [archive.index.get_instance(s.sop_instance_uid).pending for s in sources]


def _replacement(source: Source) -> bytes:
    """`source` as a Part-10 file with other content under the same SOP Instance UID."""
    changed = pydicom.dcmread(source.path)
    changed.PatientName = "Other^Person"
    out = io.BytesIO()
    changed.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _wait_until_stored(archive: Archive, sources: list[Source]) -> float:
    """Seconds until every one of `sources` is stored, by the archive's own retries (nothing reads them)."""
    started = time.monotonic()
    while any(_pending(archive, sources)):
        assert time.monotonic() - started < STORED_TIMEOUT, f"still pending: {_pending(archive, sources)}"
        time.sleep(0.02)
    return time.monotonic() - started


def _check_stored(archive: Archive, sources: list[Source]) -> None:
    for source in sources:
        assert archive.read_dataset(source.sop_instance_uid) == (source.transfer_syntax_uid, source.dataset)
    assert archive.verify(deep=True) == []


def test_a_store_that_fails_after_the_acknowledgement_is_retried_until_it_succeeds(
    disk: Path, sources: list[Source]
) -> None:
    with Archive.open(disk / "archive") as archive:
        ballast = _accept_then_fill(archive, sources, disk)
        # A read stores what it waits for on its own thread: here that attempt fails for want of room.
        with pytest.raises(NotStoredYetError, match="still being stored"):
            archive.read_dataset(sources[0].sop_instance_uid)
        archive.wait_for_ingests()  # every first attempt ends, failing for want of room
        assert all(_pending(archive, sources))
        # Reads wait for none of them now (ingests_pending: whether a wait would wait): the retries are
        # the archive's, and a read answers at once that the instance is not stored yet.
        assert not archive.ingests_pending()
        with pytest.raises(NotStoredYetError):
            archive.read_dataset(sources[-1].sop_instance_uid)
        # Waiting for their retries they hold no backlog slot, so senders are not held up behind them.
        assert archive._receiver._backlog._value == MAX_BACKLOG  # type: ignore[union-attr]
        ballast.unlink()
        print(f"stored {_wait_until_stored(archive, sources):.2f} s after the room was freed")
        assert not archive.ingests_pending()
        assert archive._receiver._backlog._value == MAX_BACKLOG  # type: ignore[union-attr]
        _check_stored(archive, sources)
    assert list((disk / "archive" / "journal").glob("*.journal")) == [], "every journal record was released"


def test_an_archive_opens_while_journalled_instances_cannot_be_stored(
    disk: Path, sources: list[Source], tmp_path: Path
) -> None:
    stored_before = [Source.read(p) for p in write_ct_series(tmp_path / "before", 2, seed=6)]
    with Archive.open(disk / "archive") as archive:
        for source in stored_before:
            archive.ingest_file(source.path)
        ballast = _accept_then_fill(archive, sources, disk)
    # Closed with the acknowledged instances unstored: they are in the journal, and pending in the index.
    assert list((disk / "archive" / "journal").glob("*.journal"))
    with Archive.open(disk / "archive") as archive:  # the disk is still full: the replay cannot store them
        assert all(_pending(archive, sources))
        with pytest.raises(NotStoredYetError):
            archive.read_dataset(sources[-1].sop_instance_uid)
        _check_stored(archive, stored_before)  # what was stored before is served meanwhile
        ballast.unlink()
        print(f"stored {_wait_until_stored(archive, sources):.2f} s after the room was freed")
        _check_stored(archive, sources)
    assert list((disk / "archive" / "journal").glob("*.journal")) == []
    with Archive.open(disk / "archive") as archive:
        assert not any(_pending(archive, sources))
        assert archive.stats().instances == len(sources) + len(stored_before)


def test_a_viewer_is_told_to_come_back_until_the_instance_is_stored(disk: Path, sources: list[Source]) -> None:
    """Over DICOMweb: QIDO-RS finds the acknowledged series at once; WADO-RS of an instance whose store
    failed answers 503 with Retry-After, and the instance itself once the archive could store it."""
    header = pydicom.dcmread(sources[0].path, stop_before_pixels=True)
    study, series, sop = header.StudyInstanceUID, header.SeriesInstanceUID, sources[0].sop_instance_uid
    with Archive.open(disk / "archive") as archive:
        ballast = _accept_then_fill(archive, sources, disk)
        server = WebServer(archive, LOOPBACK, 0)
        host, port = server.start()
        try:
            with httpx.Client(base_url=f"http://{host}:{port}", timeout=60) as client:
                found = client.get(f"/studies/{study}/series/{series}/instances",
                                   headers={"Accept": "application/dicom+json"})
                assert found.status_code == 200 and len(found.json()) == len(sources)
                url = f"/studies/{study}/series/{series}/instances/{sop}"
                accept = {"Accept": 'multipart/related; type="application/dicom"; '
                                    f"transfer-syntax={sources[0].transfer_syntax_uid}"}
                refused = client.get(url, headers=accept)
                assert refused.status_code == 503, refused.text
                assert refused.headers["Retry-After"] == "1"
                assert "still being stored" in refused.json()["error"]
                ballast.unlink()
                _wait_until_stored(archive, sources)
                served = client.get(url, headers=accept)
                assert served.status_code == 200
                assert sources[0].dataset[-4096:] in served.content  # the pixel data's last bytes, as sent
        finally:
            server.stop()


def test_a_replacement_of_an_instance_that_cannot_be_stored_is_refused_at_once(
    disk: Path, sources: list[Source]
) -> None:
    """With overwrite on, a replacement waits for the instance it replaces to be stored; one whose store
    keeps failing would hold the sender for as long, so the replacement is refused (C-STORE 0xA702)."""
    (disk / "archive").mkdir()
    (disk / "archive" / "engine.toml").write_text("[storage]\noverwrite = true\n")
    replacement = _replacement(sources[0])
    # The archive closes before the sender is joined: a close ends what waits on the archive.
    with ThreadPoolExecutor(1) as sender, Archive.open(disk / "archive") as archive:
        ballast = _accept_then_fill(archive, sources[:1], disk)
        archive.wait_for_ingests()  # its first attempt fails for want of room
        refused = sender.submit(archive.accept, replacement)
        with pytest.raises(NotStoredYetError, match="a replacement is taken once it is stored"):
            refused.result(timeout=30)
        ballast.unlink()
        _wait_until_stored(archive, sources[:1])
        assert archive.accept(replacement).status == "replaced"
        back = pydicom.dcmread(io.BytesIO(archive.read_instance(sources[0].sop_instance_uid)))
        assert back.PatientName == "Other^Person"
        assert archive.verify(deep=True) == []


def test_an_instance_waiting_for_a_retry_is_deleted_only_once_stored(disk: Path, sources: list[Source]) -> None:
    """Its journal record would bring it back at the next open: the deletion is refused, and says why."""
    (disk / "archive").mkdir()
    (disk / "archive" / "engine.toml").write_text("[storage]\nallow_delete = true\n")
    sop = sources[0].sop_instance_uid
    with Archive.open(disk / "archive") as archive:
        ballast = _accept_then_fill(archive, sources[:1], disk)
        archive.wait_for_ingests()  # its first attempt fails for want of room
        with pytest.raises(EngineError, match="delete once it is stored"):
            archive.delete_instance(sop)
        assert _pending(archive, sources[:1]) == [True]
        ballast.unlink()
        _wait_until_stored(archive, sources[:1])
        assert archive.delete_instance(sop).sop_instance_uids == (sop,)
    with Archive.open(disk / "archive") as archive:  # and the journal does not bring it back
        assert archive.stats().instances == 0
