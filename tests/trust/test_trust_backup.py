"""Backing up a running archive in the README's order (journal, index snapshot, pixels) while storescu
keeps storing: the copy opens, verifies deep-clean, and holds every instance acknowledged before the
backup began, byte-identical.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import lmdb
import pytest

from engine.archive import Archive
from engine.testing.crash import Source
from engine.testing.series import write_ct_series, write_mr_series
from engine.testing.server import ServerHandle, running_server

pytestmark = pytest.mark.dcmtk


def _copy_tree_of_a_live_folder(source: Path, target: Path) -> int:
    """Copy what is there; files renamed or deleted by the writer meanwhile are skipped (as rsync does)."""
    vanished = 0
    for directory, _, names in os.walk(source):
        out = target / Path(directory).relative_to(source)
        out.mkdir(parents=True, exist_ok=True)
        for name in names:
            try:
                shutil.copy2(Path(directory) / name, out / name)
            except FileNotFoundError:
                vanished += 1
    return vanished


def _store(server: ServerHandle, files: list[Path]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["storescu", "-aec", server.ae_title, server.host, str(server.port), *map(str, files)],
                          capture_output=True, timeout=600, check=False)  # fmt: skip


def test_backup_of_a_running_archive_in_the_documented_order(tmp_path: Path) -> None:
    before = [Source.read(p) for p in write_ct_series(tmp_path / "before", 24, rows=256, cols=256, seed=51)]
    during = [Source.read(p) for p in write_mr_series(tmp_path / "during", 60, seed=52)]
    archive, backup = tmp_path / "archive", tmp_path / "backup"
    with running_server(archive) as server:
        assert _store(server, [s.path for s in before]).returncode == 0
        sender = threading.Thread(target=_store, args=(server, [s.path for s in during]))
        sender.start()
        deadline = time.monotonic() + 60
        while _indexed(archive) <= len(before) and time.monotonic() < deadline:
            time.sleep(0.02)  # back up while the second series is arriving, not before it starts
        vanished = _copy_tree_of_a_live_folder(archive / "journal", backup / "journal")
        (backup / "index").mkdir(parents=True)
        with lmdb.open(str(archive / "index"), readonly=True) as env:
            env.copy(str(backup / "index"))
        vanished += _copy_tree_of_a_live_folder(archive / "pixels", backup / "pixels")
        sender.join()
        assert server.stop() == 0
    print(f"backup taken while storing; {vanished} files vanished during the copy")
    with Archive.open(backup) as copy:  # a writer: replays the journal copy, sweeps newer groups
        assert copy.verify(deep=True) == []
        for source in before:
            assert copy.read_dataset(source.sop_instance_uid) == (source.transfer_syntax_uid, source.dataset)
        copied = [s for s in during if copy.index.has_instance(s.sop_instance_uid)]
        for source in copied:
            assert copy.read_dataset(source.sop_instance_uid) == (source.transfer_syntax_uid, source.dataset)
    print(f"the copy holds {len(before)} instances stored before it and {len(copied)} of {len(during)} stored during it")

def _indexed(archive: Path) -> int:
    with Archive.open(archive, readonly=True) as opened:
        return opened.stats().instances
