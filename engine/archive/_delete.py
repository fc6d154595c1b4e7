"""Deletion of a study, series or instance: one index transaction, then the pixel groups, crash-safe.

Order, and why each step is safe to interrupt by SIGKILL:
1. Wait for the receive workers, list the instances, rotate the receive journal and wait again: afterwards
   no journal segment on disk holds a record of a listed instance, so recovery at the next open cannot
   bring a deleted instance back (the journal is replayed in full after a crash).
2. One LMDB write transaction removes the records, headers, child lists, secondary keys, aggregates and
   totals and appends one change-log entry per instance. Killed before it commits: nothing was deleted.
3. The instances' pixel groups are removed (each by one rename, then the files). Killed here: the index
   no longer refers to them, and the sweep at the next open (which runs after any unclean shutdown)
   removes them.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Literal

from engine.archive._ingest import Ingestor
from engine.archive._journal import Journal
from engine.archive._receiver import Receiver
from engine.errors import EngineError, NotFoundError
from engine.index import GroupCommitter, Index, IndexReader, IndexStats, IndexWriter
from engine.pixels import LocalPixelStore
from engine.types import InstanceRecord

LOGGER = logging.getLogger(__name__)

DeleteLevel = Literal["study", "series", "instance"]
DELETE_LEVELS: tuple[DeleteLevel, ...] = ("study", "series", "instance")

# A journal segment that still holds a listed instance after the workers finished is waited for this long
# (a worker may be between indexing an instance and releasing its record) before the deletion is refused.
JOURNAL_SETTLE_SECONDS = 5.0


class DeletionDisabledError(EngineError):
    """Deletion is switched off in the configuration ([storage] allow_delete)."""


@dataclass(frozen=True, slots=True)
class DeleteResult:
    """What one deletion removed. Counts of series, studies and patients are those that disappeared."""

    level: DeleteLevel
    uid: str
    sop_instance_uids: tuple[str, ...]
    series: int
    studies: int
    patients: int
    received_bytes: int  # the instances' size as received
    stored_bytes: int  # what `stats` stored_bytes went down by
    reclaimed_bytes: int  # pixel bytes removed from disk now (more follows from the sweep if this failed)
    last_sequence: int  # change-log sequence number of the last deletion entry

    @property
    def instances(self) -> int:
        return len(self.sop_instance_uids)


def check_level(level: str) -> DeleteLevel:
    """`level` as a DeleteLevel; raises ValueError naming the accepted ones."""
    for known in DELETE_LEVELS:
        if level == known:
            return known
    raise ValueError(f"cannot delete at level {level!r}; levels: {', '.join(DELETE_LEVELS)}")


def targets(
    reader: IndexReader, level: DeleteLevel, uid: str, study_uid: str | None, series_uid: str | None
) -> list[str]:
    """SOP Instance UIDs a deletion removes, in study / series order; NotFoundError when unknown or when
    `study_uid` / `series_uid` are given and the object is not inside them.
    """
    if level == "study":
        return [sop for series in reader.series_uids(uid) for sop in reader.instance_uids(series)]
    if level == "series":
        if study_uid is not None and reader.series_record(uid).study_instance_uid != study_uid:
            raise NotFoundError(f"series {uid} is not in study {study_uid}")
        return reader.instance_uids(uid)
    record = reader.get_instance(uid)
    if (study_uid is not None and record.study_instance_uid != study_uid) or (
        series_uid is not None and record.series_instance_uid != series_uid
    ):
        raise NotFoundError(f"instance {uid} is not in series {series_uid} of study {study_uid}")
    return [uid]


@dataclass(frozen=True, slots=True)
class _Removed:
    records: list[InstanceRecord]
    before: IndexStats
    after: IndexStats
    sequence: int


def _remove(writer: IndexWriter, sops: Sequence[str]) -> _Removed:
    before = writer.stats()
    records = [writer.delete_instance(sop) for sop in sops]
    return _Removed(records, before, writer.stats(), writer.last_sequence())


class Deleter:
    """Deletes from a writable archive; one deletion at a time, concurrent with ingest and reads."""

    def __init__(
        self,
        index: Index,
        committer: GroupCommitter,
        pixels: LocalPixelStore,
        ingestor: Ingestor,
        receiver: Receiver,
        journal: Journal,
        on_leftover: Callable[[], None],
    ) -> None:
        """`on_leftover` is called when pixel bytes of deleted instances could not be removed now."""
        self._index = index
        self._committer = committer
        self._pixels = pixels
        self._ingestor = ingestor
        self._receiver = receiver
        self._journal = journal
        self._on_leftover = on_leftover
        self._lock = threading.Lock()

    def delete(
        self, level: DeleteLevel, uid: str, *, study_uid: str | None = None, series_uid: str | None = None
    ) -> DeleteResult:
        """Remove a study, series or instance; see Archive.delete."""
        with self._lock:
            self._receiver.wait()  # instances acknowledged but still being transcoded are deleted too
            sops = self._index.read(lambda r: targets(r, level, uid, study_uid, series_uid))
            self._forget_journalled(sops)
            with self._sop_locks(sops):
                removed: _Removed = self._committer.run(
                    lambda: self._index.write(lambda w: _remove(w, sops))
                ).result()
                reclaimed = self._remove_pixels(removed.records)
        before, after = removed.before, removed.after
        LOGGER.info("deleted %s %s: %d instances, %d pixel bytes reclaimed", level, uid, len(sops), reclaimed)
        return DeleteResult(
            level=level,
            uid=uid,
            sop_instance_uids=tuple(sops),
            series=before.series - after.series,
            studies=before.studies - after.studies,
            patients=before.patients - after.patients,
            received_bytes=before.received_bytes - after.received_bytes,
            stored_bytes=before.stored_bytes - after.stored_bytes,
            reclaimed_bytes=reclaimed,
            last_sequence=removed.sequence,
        )

    def _forget_journalled(self, sops: Sequence[str]) -> None:
        """Return once no journal segment on disk holds a record of `sops`; raises EngineError if one stays.

        Listed instances are indexed, and the receiver journals an instance only while it is not indexed,
        so their records are all in segments that exist now: rotate away from them and let the workers
        release them. A segment stays only while a record in it is unindexed (its store failed and is tried
        again; the next open replays it), so an instance of `sops` in it must not be deleted before then.
        """
        self._journal.rotate()
        self._receiver.wait()
        wanted = set(sops)
        deadline = time.monotonic() + JOURNAL_SETTLE_SECONDS
        while True:
            holding = self._segments_holding(wanted)
            if not holding:
                break
            if time.monotonic() > deadline:
                segment, sop = holding[0]
                raise EngineError(
                    f"instance {sop} is still in receive journal segment {segment}, which holds an instance "
                    "whose storing failed and is tried again (the log says why): delete once it is stored"
                )
            self._receiver.wait()
            time.sleep(0.05)
        _fsync_dir(self._journal.directory)  # the removal of segments is durable before the index forgets

    def _segments_holding(self, wanted: set[str]) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        for segment in self._journal.segments():
            if segment == self._journal.current:
                continue
            try:
                found.extend((segment, r.sop_instance_uid) for r in self._journal.records(segment)
                             if r.sop_instance_uid in wanted)  # fmt: skip
            except FileNotFoundError:
                continue  # released meanwhile
        return found

    @contextmanager
    def _sop_locks(self, sops: Sequence[str]) -> Iterator[None]:
        """Hold the ingest locks of `sops`: no ingest of one of them interleaves with the removal.

        A new ingest of a deleted SOP Instance UID writes generation 0 again, which must find the old
        group gone. Deletions are serialised, so the order the locks are taken in cannot deadlock.
        """
        locks = {id(lock): lock for lock in map(self._ingestor.lock_for, sops)}
        with ExitStack() as stack:
            for lock in locks.values():
                stack.enter_context(lock)
            yield

    def _remove_pixels(self, records: Sequence[InstanceRecord]) -> int:
        reclaimed = 0
        for record in records:
            if record.codec is None:
                continue  # header only: nothing in the pixel store
            try:
                reclaimed += self._pixels.delete_instance(record.sop_instance_uid, record.generation)
            except OSError as exc:
                LOGGER.error("could not remove the pixels of deleted instance %s: %s", record.sop_instance_uid, exc)
                self._on_leftover()
        return reclaimed


def _fsync_dir(path: os.PathLike[str] | str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
