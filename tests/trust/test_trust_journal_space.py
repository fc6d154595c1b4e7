"""The receive journal gives the space of indexed records back while it runs, not only at the next open."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.archive import _journal
from engine.archive._journal import Journal


def _size(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.glob("*.journal"))


def test_a_drained_journal_starts_a_new_segment_and_deletes_the_old(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_journal, "DRAINED_ROTATE_BYTES", 64 << 10)
    journal = Journal(tmp_path / "journal")
    data = bytes(range(256)) * 64  # 16 KiB a record
    for n in range(40):
        ticket = journal.append(f"1.2.3.{n}", "", "0" * 32, data)
        journal.sync(ticket)
        journal.release(ticket)  # indexed
    # 640 KiB went through; what stays is less than one drained segment
    assert _size(tmp_path / "journal") < 64 << 10 + len(data) + 256
    assert len(list((tmp_path / "journal").glob("*.journal"))) == 1
    journal.close()


def test_pending_records_keep_their_segment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_journal, "DRAINED_ROTATE_BYTES", 64 << 10)
    journal = Journal(tmp_path / "journal")
    data = b"\x01" * (32 << 10)
    held = journal.append("1.2.3.0", "", "0" * 32, data)
    journal.sync(held)
    for n in range(1, 8):
        ticket = journal.append(f"1.2.3.{n}", "", "0" * 32, data)
        journal.sync(ticket)
        journal.release(ticket)
    # a record still waiting to be indexed keeps its segment whole: nothing rotated it away
    assert [r.sop_instance_uid for r in journal.records(held.segment)] == [f"1.2.3.{n}" for n in range(8)]
    journal.release(held)  # the last one indexed: now the drained segment goes
    assert not (tmp_path / "journal" / held.segment).exists()
    journal.close()
