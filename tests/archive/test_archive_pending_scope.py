"""A read of one study waits for what is still being transcoded in that study, not for other studies,
and stores it itself ahead of the workers; a query waits only until the pending record of what was
acknowledged is visible."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pydicom

from engine.archive import Archive
from engine.testing.crash import Source
from engine.testing.series import write_mr_series
from engine.testing.transcodes import workers_held


def test_waiting_for_one_study_skips_another_studys_backlog(tmp_path: Path) -> None:
    [held] = write_mr_series(tmp_path / "held", 1, rows=64, cols=64, seed=1)
    [other] = write_mr_series(tmp_path / "other", 1, rows=64, cols=64, seed=2)
    held_ds, other_ds = (pydicom.dcmread(p, stop_before_pixels=True) for p in (held, other))
    assert held_ds.StudyInstanceUID != other_ds.StudyInstanceUID
    with Archive.open(tmp_path / "archive") as archive:
        with workers_held(archive):
            archive.accept(held.read_bytes())
            archive.accept(other.read_bytes())
            returned = threading.Event()

            def wait_for_other() -> None:
                archive.wait_for_ingests(study=str(other_ds.StudyInstanceUID))  # stores `other` itself
                returned.set()

            waiter = threading.Thread(target=wait_for_other, daemon=True)
            waiter.start()
            waiter.join(120)  # a hang guard only: it would never return if it waited for the held study
            assert returned.is_set(), "a wait scoped to one study waited for another study's instance"
            assert not archive.index.get_instance(str(other_ds.SOPInstanceUID)).pending
            # The non-blocking check agrees: pending in the held study and its series, and overall.
            assert archive.ingests_pending(study=str(held_ds.StudyInstanceUID))
            assert archive.ingests_pending(series=str(held_ds.SeriesInstanceUID))
            assert archive.ingests_pending()
            assert not archive.ingests_pending(study=str(other_ds.StudyInstanceUID))
            # Queries need only the pending record: it is committed without the transcode.
            archive.wait_for_ingests(study=str(held_ds.StudyInstanceUID), stored=False)
            assert not archive.ingests_pending(study=str(held_ds.StudyInstanceUID), stored=False)
            pending = archive.index.get_instance(str(held_ds.SOPInstanceUID))
            assert pending.pending and pending.codec is None and pending.query["StudyInstanceUID"]
            assert archive.series_uids(str(held_ds.StudyInstanceUID)) == [str(held_ds.SeriesInstanceUID)]
        archive.wait_for_ingests()
        assert not archive.ingests_pending()
        stored = archive.index.get_instance(str(held_ds.SOPInstanceUID))
        assert not stored.pending and stored.codec is not None
        assert archive.stats().instances == 2
        changes = [(c.op, c.sop_instance_uid) for c in archive.index.changes()]
        assert changes.count(("store", str(held_ds.SOPInstanceUID))) == 1  # logged once: when stored


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine", *args], capture_output=True, text=True, timeout=120, check=False)


def test_another_process_sees_a_pending_record_and_cannot_read_its_pixels(tmp_path: Path) -> None:
    """A reader without the writer's wait (`ls`, `export`, `verify` while `serve` runs) finds the
    instance and is told that its pixels are still being stored, instead of reading a record that
    points at no pixels; verify counts it as in flight, not as a problem."""
    [held] = write_mr_series(tmp_path / "held", 1, rows=64, cols=64, seed=3)
    sop = str(pydicom.dcmread(held, stop_before_pixels=True).SOPInstanceUID)
    where = ("--archive", str(tmp_path / "archive"))
    with Archive.open(tmp_path / "archive") as writer:
        with workers_held(writer):
            writer.accept(held.read_bytes())
            writer.wait_for_ingests(stored=False)
            assert writer.index.get_instance(sop).pending
            listed = _cli("ls", "instances", *where)
            assert listed.returncode == 0 and sop in listed.stdout
            exported = _cli("export", "--out", str(tmp_path / "out"), "--sop", sop, *where)
            assert exported.returncode != 0
            assert "still being stored" in exported.stderr, exported.stderr
            checked = _cli("verify", "--deep", *where)
            assert checked.returncode == 0, checked.stdout + checked.stderr  # in flight, not missing
        writer.wait_for_ingests()
        assert writer.read_instance(sop)
        assert writer.verify(deep=True) == []


def test_a_copy_taken_while_storing_drops_pending_records_its_journal_lacks(tmp_path: Path) -> None:
    """The README's backup order copies the journal, then an index snapshot: an instance that arrived
    between the two is pending in the snapshot and absent from the copied journal. The copy's first
    writable open removes that record (the copy does not hold the instance) and verifies clean."""
    [kept] = write_mr_series(tmp_path / "kept", 1, rows=64, cols=64, seed=4)
    [late] = write_mr_series(tmp_path / "late", 1, rows=64, cols=64, seed=5)
    late_sop = str(pydicom.dcmread(late, stop_before_pixels=True).SOPInstanceUID)
    source, backup = tmp_path / "archive", tmp_path / "backup"
    with Archive.open(source) as writer:
        writer.ingest_file(kept)
        shutil.copytree(source / "journal", backup / "journal")  # (1) the journal, before `late` arrives
        with workers_held(writer):
            writer.accept(late.read_bytes())
            writer.wait_for_ingests(stored=False)
            (backup / "index").mkdir()
            snapshot = f"import lmdb; lmdb.open({str(source / 'index')!r}, readonly=True).copy({str(backup / 'index')!r})"
            subprocess.run([sys.executable, "-c", snapshot], check=True, timeout=60)  # (2) the index
        writer.wait_for_ingests()
    shutil.copytree(source / "pixels", backup / "pixels")  # (3) the pixels
    with Archive.open(backup) as copy:
        assert not copy.index.has_instance(late_sop)
        assert copy.stats().instances == 1
        assert copy.verify(deep=True) == []


def test_a_read_stores_what_it_waits_for_ahead_of_the_workers(tmp_path: Path) -> None:
    """A viewer opening a study that has just arrived waits for that study's instances, not for the
    backlog queued before them: the reading thread stores what it waits for itself."""
    files = write_mr_series(tmp_path / "mr", 3, rows=64, cols=64, seed=6)
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in files]
    sops = [str(h.SOPInstanceUID) for h in headers]
    with Archive.open(tmp_path / "archive") as archive:
        with workers_held(archive):
            for path in files:
                archive.accept(path.read_bytes())
            archive.wait_for_ingests(stored=False)
            read: list[object] = []
            reader = threading.Thread(target=lambda: read.append(archive.read_frame(sops[1], 0)), daemon=True)
            reader.start()
            reader.join(60)  # a hang guard: without the reader storing it, this waits for the gate
            assert read, "the read waited for the workers"
            assert (read[0] == pydicom.dcmread(files[1]).pixel_array).all()
            assert not archive.index.get_instance(sops[1]).pending
            assert archive.index.get_instance(sops[0]).pending  # not read: still the workers' turn
            series = str(headers[0].SeriesInstanceUID)
            waiter = threading.Thread(target=lambda: archive.wait_for_ingests(series=series), daemon=True)
            waiter.start()
            waiter.join(60)
            assert not waiter.is_alive() and not any(archive.index.get_instance(s).pending for s in sops)
        archive.wait_for_ingests()
        assert archive.stats().instances == 3
        assert archive.verify(deep=True) == []
        assert [archive.read_dataset(s)[1] for s in sops] == [Source.read(p).dataset for p in files]
