"""The receive path: acknowledged means journalled and durable; a crash before indexing loses nothing."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine.archive import Archive
from engine.archive._journal import Journal
from engine.errors import CorruptDataError
from engine.testing.series import write_ct_series


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_ct_series(tmp_path_factory.mktemp("ct"), 24, rows=256, cols=256)


def test_accepted_instances_are_readable_at_once_and_after_reopen(tmp_path: Path, series: list[Path]) -> None:
    sent = {}
    with Archive.open(tmp_path / "a") as archive:
        for path in series:
            result = archive.accept(path.read_bytes())
            assert result.status == "stored"
            # Reads in this process see an accepted instance even while it is still being transcoded.
            sent[result.sop_instance_uid] = archive.read_instance(result.sop_instance_uid)
        assert archive.accept(series[0].read_bytes()).status == "duplicate"
        assert archive.stats().instances == len(series)
    with Archive.open(tmp_path / "a", readonly=True) as archive:
        assert archive.verify(deep=True) == []
        for sop, data in sent.items():
            assert archive.read_instance(sop) == data
    assert not list((tmp_path / "a" / "journal").glob("*.journal")), "indexed records leave no segment behind"


def test_crash_after_acknowledge_is_recovered_at_open(tmp_path: Path, series: list[Path]) -> None:
    """A process that acknowledges and dies at once (os._exit: no flush, no close) loses nothing."""
    script = textwrap.dedent(
        f"""
        import os, sys
        from engine.archive import Archive
        archive = Archive.open({str(tmp_path / "a")!r})
        for path in sys.argv[1:]:
            archive.accept(open(path, "rb").read())
            print("acknowledged", path, flush=True)
        os._exit(0)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, *map(str, series)], capture_output=True, text=True, check=True, timeout=120
    )
    acknowledged = [line.split(" ", 1)[1] for line in done.stdout.splitlines() if line.startswith("acknowledged")]
    assert len(acknowledged) == len(series)
    with Archive.open(tmp_path / "a") as archive:
        assert archive.stats().instances == len(series)
        assert archive.verify(deep=True) == []
        for path in acknowledged:
            import pydicom

            sop = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
            original = archive.read_instance(sop)
            assert original[132:] != b""
            sent = Path(path).read_bytes()
            meta_end = sent.index(b"\x08\x00", 132 + 12 + 4)  # first group-0008 tag after the file meta
            assert original.endswith(sent[meta_end:])


def test_torn_tail_of_a_journal_is_ignored(tmp_path: Path, series: list[Path]) -> None:
    journal = Journal(tmp_path / "journal")
    data = series[0].read_bytes()
    import pydicom

    sop = str(pydicom.dcmread(series[0], stop_before_pixels=True).SOPInstanceUID)
    ticket = journal.append(sop, "", "0" * 32, data)
    journal.sync(ticket)
    segment = journal.current
    journal.close()
    path = next((tmp_path / "journal").glob("*.journal"))
    with path.open("ab") as f:
        f.write(b"PEJ1" + b"\x10\x00\x00\x00")  # a record cut off after its first bytes
    reopened = Journal(tmp_path / "journal")
    records = list(reopened.records(segment))
    assert [r.sop_instance_uid for r in records] == [sop]
    assert records[0].data == data
    reopened.close()


def test_an_archive_that_failed_to_open_opens_once_mended(tmp_path: Path, series: list[Path]) -> None:
    """A journal record that fails its checksum stops the open, with the reason; the failed open lets go
    of the index, its writer thread and the lock, so the same process opens the archive once it is mended."""
    root = tmp_path / "archive"
    Archive.open(root).close()
    journal = Journal(root / "journal", prefix="other-")
    journal.sync(journal.append("1.2.3.4", "", "0" * 32, series[0].read_bytes()))
    journal.close()  # the record is not released: the segment stays, as after a crash
    [segment] = (root / "journal").glob("other-*.journal")
    damaged = bytearray(segment.read_bytes())
    damaged[-100] ^= 0xFF
    segment.write_bytes(bytes(damaged))
    with pytest.raises(CorruptDataError, match="fails its checksum"):
        Archive.open(root)
    segment.unlink()
    with Archive.open(root) as archive:
        assert archive.stats().instances == 0
