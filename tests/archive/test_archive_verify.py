"""verify: the index and the pixel store agree; damage and orphans are named; live ingests are not."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from engine.archive import Archive
from engine.pixels import LevelArray
from engine.testing.corpus import pydicom_test_files_dir
from engine.types import CODEC_ZSTD

ORPHAN = "1.2.826.0.1.3680043.8.498.999"


def _orphan(archive: Archive) -> None:
    """A pixel group the index does not know: what an ingest in flight, or a crash, leaves."""
    from engine import codecs
    import numpy as np

    frame = np.arange(64, dtype=np.uint16).reshape(8, 8)
    chunk = codecs.encode_frame(frame, CODEC_ZSTD).data
    archive.pixels.write_instance(ORPHAN, [LevelArray(0, (1, 8, 8), "<u2", CODEC_ZSTD, {}, [chunk])], {})


def _verify_cli(root: Path) -> subprocess.CompletedProcess[str]:
    # Another process, as an administrator's `verify` would be: LMDB opens an environment once a process.
    return subprocess.run(
        [sys.executable, "-m", "engine", "verify", "--archive", str(root)], capture_output=True, text=True, check=False
    )


def test_orphans_are_reported_unless_a_writer_may_still_commit_them(tmp_path: Path) -> None:
    root = tmp_path / "a"
    writer = Archive.open(root)
    writer.ingest(pydicom_test_files_dir().joinpath("CT_small.dcm").read_bytes())
    _orphan(writer)
    live = _verify_cli(root)
    assert live.returncode == 0, "a fresh group beside a live writer is an ingest in flight: " + live.stdout
    writer.close()
    after = _verify_cli(root)
    assert after.returncode != 0
    assert "orphaned pixel group" in after.stdout + after.stderr and ORPHAN in after.stdout + after.stderr
    with Archive.open(root) as again:
        assert again.sweep() == 1
        assert again.verify(deep=True) == []


def test_damaged_chunk_is_named(tmp_path: Path) -> None:
    with Archive.open(tmp_path / "a") as archive:
        result = archive.ingest(pydicom_test_files_dir().joinpath("CT_small.dcm").read_bytes())
        ref = archive.record(result.sop_instance_uid).levels[0].chunks[0]
        path = archive.pixels.root / ref.key
        data = bytearray(path.read_bytes())
        data[ref.offset + ref.length // 2] ^= 0xFF
        path.write_bytes(bytes(data))
        problems = archive.verify()
    assert problems and result.sop_instance_uid in problems[0]


def test_closing_an_archive_releases_its_descriptors(tmp_path: Path) -> None:
    """pynetdicom's select() fails on descriptors numbered past 1024: archives must not leak them."""
    import os

    data = pydicom_test_files_dir().joinpath("CT_small.dcm").read_bytes()

    def open_descriptors() -> int:
        return len(os.listdir("/proc/self/fd"))

    with Archive.open(tmp_path / "warm") as archive:  # lazy imports and codec warm-up happen once
        archive.read_frame(archive.ingest(data).sop_instance_uid, 0)
    before = open_descriptors()
    for k in range(5):
        with Archive.open(tmp_path / f"a{k}") as archive:
            sop = archive.accept(data).sop_instance_uid
            archive.read_instance(sop)
            archive.read_frame(sop, 0, 1)
    assert open_descriptors() == before
