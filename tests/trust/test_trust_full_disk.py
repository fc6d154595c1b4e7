"""A full disk: the instance that does not fit is refused (C-STORE 0xA700, STOW-RS 507, import), what was
acknowledged before stays readable, the server stays up, and storing resumes once space is freed.

A real tmpfs, so ENOSPC comes from the kernel and hits the receive journal, the pixel store and the LMDB
index wherever it falls. The index starts with a 1 MiB map so it has to grow on the way.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from engine.archive import Archive
from engine.errors import StorageFullError
from engine.testing.crash import Source, stow_acknowledged, stow_content_type
from engine.testing.dcmtk import free_port, run_echoscu
from engine.testing.disk import MountError, fill_leaving, mounted_tmpfs
from engine.testing.series import write_ct_series
from engine.testing.server import ServerHandle, running_server

pytestmark = [
    pytest.mark.dcmtk,
    pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root (CI runs as root)"),
]

DISK_MB = 32
FILLER_MB = 6
INDEX_ROOM_MB = 2  # what the index may fill in the LMDB test
FREE_MB = 14  # what a ballast file leaves for the archive: a few passes fill it
PASS_FILES = 30  # a pass past the first refusal only sends more to be refused
_RESPONSE = re.compile(r"I: Received Store Response \((.*)\)")
_SENDING = re.compile(r"I: Sending file: (.*)")


@dataclass(frozen=True, slots=True)
class Disk:
    mount: Path
    archive: Path  # a link into the tmpfs, so that logs written beside it stay off the full disk


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Disk]:
    """A DISK_MB tmpfs holding a FILLER_MB file `filler` to delete later; skipped where mount fails."""
    try:
        with mounted_tmpfs(tmp_path / "small", DISK_MB) as mount_point:
            (mount_point / "filler").write_bytes(os.urandom(FILLER_MB << 20))
            fill_leaving(mount_point, FREE_MB << 20)
            (mount_point / "archive").mkdir()
            (mount_point / "archive" / "engine.toml").write_text("[storage]\nindex_map_size_mb = 1\n")
            (tmp_path / "archive").symlink_to(mount_point / "archive")
            yield Disk(mount_point, tmp_path / "archive")
    except MountError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> list[Source]:
    """More 512 x 512 CT slices (60 MiB as received, about 15 stored) than FREE_MB holds."""
    files = write_ct_series(tmp_path_factory.mktemp("full-ct"), 120, seed=21)
    return [Source.read(p) for p in files]


def _storescu(server: ServerHandle, sources: list[Source]) -> list[tuple[Source, str]]:
    """Send with one storescu association (continuing after failures); (source, response text) per file."""
    by_path = {str(s.path): s for s in sources}
    command = ["storescu", "-v", "-nh", "-aec", server.ae_title, server.host, str(server.port), *by_path]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    results: list[tuple[Source, str]] = []
    current: Source | None = None
    for line in done.stderr.splitlines():
        if sending := _SENDING.match(line):
            current = by_path[sending.group(1).strip()]
        elif (response := _RESPONSE.match(line)) and current is not None:
            results.append((current, response.group(1)))
            current = None
    return results


def _stored(archive_dir: Path) -> int:
    """Instances stored, not only acknowledged: their transcodes no longer reserve room on the disk."""
    with Archive.open(archive_dir, readonly=True) as archive:
        return sum(not archive.index.get_instance(sop).pending for sop in archive.index.iter_instance_uids())


def _fill(server: ServerHandle, archive_dir: Path, sources: list[Source]) -> tuple[list[Source], list[tuple[Source, str]], int]:
    """Send passes of what is not stored yet until a pass stores nothing: the disk is full then.

    The server refuses an instance while the instances it acknowledged and is still transcoding might
    need the space, so one pass may be refused early; between passes everything acknowledged is stored.
    """
    acked: list[Source] = []
    passes = 0
    while True:
        passes += 1
        results = _storescu(server, [s for s in sources if s not in acked][:PASS_FILES])
        stored = [s for s, text in results if text == "Success"]
        refused = [(s, text) for s, text in results if text != "Success"]
        acked += stored
        deadline = time.monotonic() + 60
        while _stored(archive_dir) < len(acked) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not stored:
            return acked, refused, passes


def _stow(base: str, source: Source) -> httpx.Response:
    boundary = uuid.uuid4().hex
    body = (
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + source.path.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return httpx.post(f"{base}/studies", content=body, headers={"content-type": stow_content_type(boundary)}, timeout=60)


def _check_archive(archive_dir: Path, acked: list[Source]) -> None:
    with Archive.open(archive_dir, readonly=True) as archive:
        for source in acked:
            assert archive.read_dataset(source.sop_instance_uid) == (source.transfer_syntax_uid, source.dataset)
    verify = subprocess.run(
        [sys.executable, "-m", "engine", "--archive", str(archive_dir), "verify", "--deep"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_serve_on_a_full_disk_refuses_then_resumes(small_disk: Disk, many: list[Source]) -> None:
    archive_dir = small_disk.archive
    port = free_port()
    with running_server(archive_dir, extra_args=["--http-port", str(port)]) as server:
        base = f"http://127.0.0.1:{port}"
        acked, refused, passes = _fill(server, archive_dir, many[:-2])
        print(f"storescu: {len(acked)} stored, {len(refused)} refused after {passes} passes")
        assert acked and refused
        assert all("OutOfResources" in text for _, text in refused), refused
        assert run_echoscu(server.host, server.port, called_ae=server.ae_title).returncode == 0
        # STOW-RS of one more instance: no room either
        full = _stow(base, many[-2])
        assert full.status_code == 507, full.text
        assert full.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0xA700]
        # what was acknowledged reads back while the disk is full
        for source in acked[:: max(1, len(acked) // 8)]:
            got = httpx.get(f"{base}/studies/{_study(source)}/series/{_series(source)}/instances/{source.sop_instance_uid}/metadata")
            assert got.status_code == 200, got.text
        (small_disk.mount / "filler").unlink()
        again = _storescu(server, [refused[0][0]])
        assert [text for _, text in again] == ["Success"], again
        stowed = _stow(base, many[-1])
        assert stowed.status_code == 200, stowed.text
        assert stow_acknowledged(stowed) == {many[-1].sop_instance_uid}
        acked += [refused[0][0], many[-1]]
        assert server.stop() == 0, server.log()[-3000:]
    assert "Traceback" not in server.log(), server.log()[-5000:]
    _check_archive(archive_dir, acked)


def _study(source: Source) -> str:
    return _uids(source)[0]


def _series(source: Source) -> str:
    return _uids(source)[1]


def _uids(source: Source) -> tuple[str, str]:
    import pydicom

    ds = pydicom.dcmread(source.path, stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)


def test_import_on_a_full_disk_refuses_then_resumes(small_disk: Disk, many: list[Source]) -> None:
    archive_dir = small_disk.archive
    command = [sys.executable, "-m", "engine", "--archive", str(archive_dir), "import", "-q", "-j", "2"]
    first = subprocess.run([*command, *(str(s.path) for s in many)], capture_output=True, text=True, timeout=600, check=False)
    assert first.returncode == 1, first.stdout + first.stderr
    refused = [line for line in first.stderr.splitlines() if line.startswith("refused: ")]
    assert refused and all("full" in line or "out of disk space" in line for line in refused), first.stderr[-3000:]
    assert "Traceback" not in first.stderr and "internal error" not in first.stderr
    with Archive.open(archive_dir, readonly=True) as archive:
        stored = {sop for sop in (s.sop_instance_uid for s in many) if archive.index.has_instance(sop)}
    print(f"import: {len(stored)} stored, {len(refused)} refused")
    assert 0 < len(stored) < len(many)
    _check_archive(archive_dir, [s for s in many if s.sop_instance_uid in stored])
    (small_disk.mount / "filler").unlink()
    # Enough room now for a few more: they go in, and whatever still does not fit is refused cleanly again.
    second = subprocess.run([*command, *(str(s.path) for s in many)], capture_output=True, text=True, timeout=600, check=False)
    assert "Traceback" not in second.stderr and "internal error" not in second.stderr
    summary = json.dumps(second.stdout.splitlines()[:1])
    assert f"already present {len(stored)}" in summary, summary
    with Archive.open(archive_dir, readonly=True) as archive:
        now = {s.sop_instance_uid for s in many if archive.index.has_instance(s.sop_instance_uid)}
    assert now > stored
    _check_archive(archive_dir, [s for s in many if s.sop_instance_uid in now])


_RT_UID = "1.2.826.0.1.3680043.8.498.77.000000"


@functools.cache
def _rt_plan() -> bytes:
    import io

    import pydicom
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("rtplan.dcm"))
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = _RT_UID
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _header_only(number: int) -> bytes:
    """A real RT Plan (no pixel data: only the index grows) under a new SOP Instance UID."""
    return _rt_plan().replace(_RT_UID.encode(), f"{_RT_UID[:-6]}{number:06d}".encode())


def test_the_index_on_a_full_disk_refuses_cleanly_and_goes_on_after(small_disk: Disk, many: list[Source]) -> None:
    """Some CT slices, then header-only instances (only the index grows) until the LMDB write itself fails.

    The index starts with a 1 MiB map and has to grow it several times on the way.
    """
    stored = many[:10]
    with Archive.open(small_disk.archive) as archive:
        for source in stored:
            archive.ingest(source.path.read_bytes())
        fill_leaving(small_disk.mount, INDEX_ROOM_MB << 20, "ballast-2")
        headers = 0
        with pytest.raises(StorageFullError) as caught:
            while headers < 100_000:
                archive.ingest(_header_only(headers))
                headers += 1
        print(f"index full after {len(stored)} CT and {headers} RT Plan instances: {caught.value}")
        print(f"index size {(small_disk.archive / 'index' / 'data.mdb').stat().st_size} bytes")
        assert "index at " in str(caught.value) and "out of disk space" in str(caught.value)
        assert (small_disk.archive / "index" / "data.mdb").stat().st_size > 1 << 20, "the 1 MiB map grew"
        assert archive.stats().instances == len(stored) + headers
        assert archive.verify() == []
        (small_disk.mount / "filler").unlink()
        archive.ingest(_header_only(headers))  # room again: the same index takes writes
        assert archive.stats().instances == len(stored) + headers + 1
    _check_archive(small_disk.archive, stored)
