"""A query of one study waits for what is still being transcoded in that study, not for other studies."""

from __future__ import annotations

import threading
from pathlib import Path

import pydicom
import pytest

from engine.archive import Archive
from engine.errors import NotFoundError
from engine.testing.series import write_mr_series


def test_waiting_for_one_study_skips_another_studys_backlog(tmp_path: Path) -> None:
    [held] = write_mr_series(tmp_path / "held", 1, rows=64, cols=64, seed=1)
    [other] = write_mr_series(tmp_path / "other", 1, rows=64, cols=64, seed=2)
    held_ds, other_ds = (pydicom.dcmread(p, stop_before_pixels=True) for p in (held, other))
    assert held_ds.StudyInstanceUID != other_ds.StudyInstanceUID
    with Archive.open(tmp_path / "archive") as archive:
        archive.accept(held.read_bytes())
        # Its transcode needs this instance's ingest lock: holding it keeps the instance pending.
        lock = archive._ingestor.lock_for(str(held_ds.SOPInstanceUID))  # type: ignore[union-attr]
        lock.acquire()
        try:
            archive.accept(other.read_bytes())
            returned = threading.Event()

            def wait_for_other() -> None:
                archive.wait_for_ingests(study=str(other_ds.StudyInstanceUID))
                returned.set()

            waiter = threading.Thread(target=wait_for_other, daemon=True)
            waiter.start()
            waiter.join(120)  # a hang guard only: it would never return if it waited for the held study
            assert returned.is_set(), "a wait scoped to one study waited for another study's instance"
            assert archive.index.get_instance(str(other_ds.SOPInstanceUID)).sop_instance_uid
            with pytest.raises(NotFoundError):
                archive.index.get_instance(str(held_ds.SOPInstanceUID))  # still pending: the wait skipped it
            archive.wait_for_ingests(0.05, study=str(held_ds.StudyInstanceUID))  # bounded: returns regardless
            # The non-blocking check agrees: pending in the held study and its series, and overall.
            assert archive.ingests_pending(study=str(held_ds.StudyInstanceUID))
            assert archive.ingests_pending(series=str(held_ds.SeriesInstanceUID))
            assert archive.ingests_pending()
            assert not archive.ingests_pending(study=str(other_ds.StudyInstanceUID))
            with pytest.raises(NotFoundError):
                archive.index.get_instance(str(held_ds.SOPInstanceUID))
        finally:
            lock.release()
        archive.wait_for_ingests()
        assert not archive.ingests_pending()
        assert archive.index.get_instance(str(held_ds.SOPInstanceUID)).sop_instance_uid
