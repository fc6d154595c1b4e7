"""The receive path: acknowledged means journalled and durable; a crash before indexing loses nothing."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine.archive import Archive
from engine.archive._journal import Journal
from engine.errors import NotFoundError
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


def _sop(path: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def _crashed_journal(root: Path, files: list[Path]) -> tuple[Path, list[int]]:
    """An archive whose journal holds `files` acknowledged and never indexed, as a crash leaves it; returns
    the segment and each record's offset."""
    Archive.open(root).close()
    journal = Journal(root / "journal", prefix="other-")
    offsets = []
    for path in files:
        ticket = journal.append(_sop(path), "", "0" * 32, path.read_bytes())
        journal.sync(ticket)
        offsets.append(ticket.data_offset)
    journal.close()  # the records are not released: the segment stays, as after a crash
    [segment] = (root / "journal").glob("other-*.journal")
    return segment, offsets


@pytest.mark.parametrize("damage", ["checksum", "magic", "length"])
def test_a_damaged_journal_record_costs_only_itself(tmp_path: Path, series: list[Path], damage: str) -> None:
    """The records after a damaged one are still stored, the archive opens, and the damaged segment is
    kept aside to inspect; a stray file named like a segment is no reason to refuse to open either."""
    root = tmp_path / "archive"
    segment, offsets = _crashed_journal(root, series[:3])
    damaged = bytearray(segment.read_bytes())
    if damage == "checksum":
        damaged[offsets[1] + 1000] ^= 0xFF  # inside the second data set
    elif damage == "magic":
        record = damaged.rfind(b"PEJ1", 0, offsets[1])
        damaged[record : record + 4] = b"JUNK"  # the second record's magic: its length cannot be trusted
    else:
        record = damaged.rfind(b"PEJ1", 0, offsets[1])
        damaged[record + 8 : record + 16] = (1 << 40).to_bytes(8, "little")  # a data length past the end
    segment.write_bytes(bytes(damaged))
    (root / "journal" / "local-old.journal").write_bytes(b"not a journal at all")
    with Archive.open(root) as archive:
        assert archive.stats().instances == 2
        for path in (series[0], series[2]):
            archive.record(_sop(path))
        with pytest.raises(NotFoundError):
            archive.record(_sop(series[1]))
        assert archive.verify(deep=True) == []
    assert segment.with_suffix(".damaged").exists() and not segment.exists()


@pytest.mark.parametrize("tail", ["zeroed record", "zeros after the records"])
def test_zeros_at_the_end_are_a_torn_tail(tmp_path: Path, series: list[Path], tail: str) -> None:
    """After a power loss the unsynced tail may read as zeros: what is there was never acknowledged, and
    it is no damage (no segment is set aside, nothing is logged as lost)."""
    root = tmp_path / "archive"
    segment, offsets = _crashed_journal(root, series[:2])
    damaged = bytearray(segment.read_bytes())
    if tail == "zeroed record":
        damaged[offsets[1] :] = bytes(len(damaged) - offsets[1])
    else:
        damaged += bytes(4096)
    segment.write_bytes(bytes(damaged))
    with Archive.open(root) as archive:
        assert archive.stats().instances == (1 if tail == "zeroed record" else 2)
    assert not list((root / "journal").glob("*.journal")) and not list((root / "journal").glob("*.damaged"))


def test_a_replacement_is_not_undone_by_the_journal_record_of_what_it_replaced(tmp_path: Path, series: list[Path]) -> None:
    """Replacements are stored directly, never journalled: replaying the first version's record after a
    crash put the older instance back over an acknowledged replacement."""
    import io

    import pydicom

    root = tmp_path / "a"
    changed = pydicom.dcmread(series[0])
    changed.PatientName = "Replaced^Version"
    replacement = io.BytesIO()
    changed.save_as(replacement, enforce_file_format=True)
    with Archive.open(root, storage={"overwrite": True}) as archive:
        archive.accept(series[0].read_bytes())
        archive.wait_for_ingests()
        [segment] = (root / "journal").glob("*.journal")  # released, kept until it rotates or closes
        journalled = segment.read_bytes()
        assert archive.accept(replacement.getvalue()).status == "replaced"
    segment.write_bytes(journalled)  # what a crash instead of this close would have left
    with Archive.open(root, storage={"overwrite": True}) as archive:
        back = pydicom.dcmread(io.BytesIO(archive.read_instance(_sop(series[0]))))
        assert back.PatientName == "Replaced^Version"
        assert archive.verify(deep=True) == []


def test_an_archive_that_failed_to_open_opens_once_mended(tmp_path: Path, series: list[Path]) -> None:
    """A journal segment that cannot be read stops the open, with the reason; the failed open lets go of
    the index, its writer thread and the lock, so the same process opens the archive once it is mended."""
    root = tmp_path / "archive"
    Archive.open(root).close()
    unreadable = root / "journal" / "other-000000000001.journal"
    unreadable.mkdir()  # a directory where a segment should be
    with pytest.raises(IsADirectoryError):
        Archive.open(root)
    unreadable.rmdir()
    with Archive.open(root) as archive:
        assert archive.stats().instances == 0
