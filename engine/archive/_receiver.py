"""Network receive path: acknowledge once the bytes are journalled, transcode behind the senders.

DESIGN.md's DIMSE table shows why: a C-STORE association is strictly request/response, so every
millisecond spent before the response caps one sender's rate. Parsing and validation stay before the
response (bad input is still refused with a reason); native pixel data, whose encoding cannot fail on
valid input, is transcoded by a worker pool after the journal has made the received bytes durable.
Compressed input is ingested before the response, since only decoding it shows whether it is corrupt.

Transcoding yields to receiving. Measured on 2 cores with a 300-slice CT: pynetdicom needs about one
core per association, verified HTJ2K transcoding about 8 ms of CPU per slice, so transcoding alongside
the sender held it to 0.5-0.65x the rate of a pynetdicom SCP that only writes files, while with the
transcoding out of the way the same path ran at 1.03x. So workers wait while instances keep arriving
(until QUIET_SECONDS pass without one) unless the backlog passes HIGH_WATER or a reader is waiting for
an instance: a burst is acknowledged at wire speed and indexed right after it.

Queries do not wait for that. Right after the acknowledgement the instance's pending record (its query
attributes and header, no pixels: Ingestor.announce) is committed in the background, and the transcode
replaces it. The 300-slice CT over one association was queryable 2.4 s after the first C-STORE with
queries waiting for transcoding (Orthanc: 1.6 s), and once acknowledged (0.8 s) with pending records.
Reads of pixels and whole instances still wait for the transcode of what they read, and do it on their
own thread when no worker has started it: a viewer opening a study that has just arrived waits for
that study, not for the backlog queued before it.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, replace
from pathlib import Path

from engine import dicom
from engine.archive._ingest import (
    Ingestor,
    IngestResult,
    conflict_error,
    dataset_digest,
    parse,
    received_size,
    result_for,
)
from engine.archive._journal import Journal, JournalRecord, Ticket, read_data
from engine.errors import (
    ClosedError,
    EngineError,
    IdentityMismatchError,
    InvalidUIDError,
    NotStoredYetError,
    StorageFullError,
)
from engine.index import PutOutcome

LOGGER = logging.getLogger(__name__)

# Acknowledged-but-not-yet-stored instances at most (their bytes wait in the journal, not in memory);
# senders wait beyond it. Two 300-slice series arrive at wire speed; more is held to the transcode rate,
# because reads of pixels wait for pending instances: at 2048, eight senders kept ~2,000 pending (a
# minute of transcoding on 2 cores), and queries, which then waited for transcodes too, waited that long.
MAX_BACKLOG = 640
# Past this many pending, workers transcode even while instances arrive (backpressure, steady state).
HIGH_WATER = 512
# Workers start once no instance has arrived for this long.
QUIET_SECONDS = 0.05
# Room kept free beyond the pixels of pending instances: index pages of their commits, metadata files.
ROOM_MARGIN = 2 << 20
# An acknowledged instance whose store failed (a disk filled by something else, an I/O error) stays
# pending, its bytes in the journal, and is tried again after this long, doubling up to RETRY_MAX_SECONDS;
# reads of it answer at once that it is not stored yet. Without this it stayed unreadable until the
# archive was opened again.
RETRY_FIRST_SECONDS = 1.0
RETRY_MAX_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class _Pending:
    digest: str
    future: Future[None]  # stored (or failed, logged)
    visible: Future[PutOutcome]  # its pending record committed (or refused): queries need no more
    study: str  # a query of one study or series waits only for what is pending in it
    series: str
    syntax: str  # what _store needs, for whichever thread stores it
    ticket: Ticket
    # Failed attempts to store it so far. Its backlog slot is held from the acknowledgement until the
    # first attempt ends (failures == 0): one waiting for a retry gives it back, so instances that
    # cannot be stored never stall the senders behind them (one replayed at open never takes one).
    failures: int = 0


class Receiver:
    """Accepts instances from the network: journal, acknowledge, then ingest in the background."""

    def __init__(
        self, ingestor: Ingestor, journal: Journal, workers: int, overwrite: bool, pixel_root: Path | None = None
    ) -> None:
        """`pixel_root`: the local directory of the pixel store, whose free space must hold what is pending."""
        self._ingestor = ingestor
        self._journal = journal
        self._overwrite = overwrite
        self._pool = ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 2, thread_name_prefix="transcode")
        self._pending: dict[str, _Pending] = {}
        self._lock = threading.Lock()
        self._backlog = threading.BoundedSemaphore(MAX_BACKLOG)
        self._last_arrival = 0.0  # time.monotonic() of the latest accept
        self._readers_waiting = 0  # readers blocked on pending instances: transcode for them at once
        # Instances a worker or a reader took on. Weak: a claim lasts as long as its future can still be
        # reached by the worker's queued turn or a reader's wait, so neither can take it on again.
        self._claimed: weakref.WeakSet[Future[None]] = weakref.WeakSet()
        self._closing = threading.Event()
        self._retries: dict[Future[None], threading.Timer] = {}  # failed instances' next attempts
        self._unstored = 0  # instances whose store failed for good in this process: the next open
        self._reserved = 0  # bytes the transcodes of pending instances may still write
        self._pixel_root = pixel_root
        self._same_volume = pixel_root is None or os.stat(pixel_root).st_dev == os.stat(journal.directory).st_dev

    def recover(self, segments: list[str]) -> int:
        """Ingest journalled instances a crash (or a failed store) left unindexed; returns how many were.

        One that cannot be stored now (the disk is still full) stays pending and is tried again like a
        failed store at run time, so the archive opens and serves what it holds meanwhile. A segment goes
        once every record in it is indexed.
        """
        count = 0
        for segment in segments:
            kept = 0
            damage: list[str] = []
            for record in self._journal.records(segment, damage):
                known = self._ingestor.existing(record.sop_instance_uid)
                if known is not None and not known.pending and known.digest != record.digest:
                    # Only an instance the archive did not hold is journalled; replacements are stored
                    # directly. A stored version with other content was accepted after this record, and
                    # replaying it would put the older one back.
                    LOGGER.info("journalled %s was replaced since; not replayed", record.sop_instance_uid)
                    continue
                try:
                    parsed = parse(record.data, record.transfer_syntax_uid)
                except EngineError as exc:  # it parsed when it was received: keep it for a fixed version
                    LOGGER.error("journalled instance %s does not parse (%s); kept in %s", record.sop_instance_uid,
                                 exc, segment)
                    self._journal.adopt(record)  # never released here: its segment stays
                    with self._lock:
                        self._unstored += 1
                    kept += 1
                    continue
                try:
                    result = self._ingestor.ingest(parsed, acknowledged=True)
                except (EngineError, OSError) as exc:
                    kept += 1
                    self._keep_recovered(record, parsed, exc)
                    continue
                count += result.status != "duplicate"  # indexed before the crash: nothing to do
            if damage and not kept:
                LOGGER.error("receive journal segment %s was damaged (%s): every intact record is stored; the "
                             "segment is kept as %s", segment, "; ".join(damage), self._journal.set_aside(segment))
            elif not kept:
                self._journal.drop_segment(segment)
        return count

    def _keep_recovered(self, record: JournalRecord, parsed: dicom.ParsedInstance, error: BaseException) -> None:
        """Hold a journalled instance the replay could not store as pending, with a retry scheduled."""
        sop = record.sop_instance_uid
        ticket = self._journal.adopt(record)
        with self._lock:
            self._reserved += _room(ticket.data_length)  # released as _finish does
        if self._ingestor.existing(sop) is None:  # the crash came before its pending record's commit
            visible = self._ingestor.announce(parsed, record.digest)
        else:
            visible = Future()  # queries find it already
            visible.set_result(PutOutcome(sop, "duplicate"))
        pending = _Pending(record.digest, Future(), visible, parsed.study_instance_uid,
                           parsed.series_instance_uid, record.transfer_syntax_uid, ticket)
        with self._lock:
            self._pending[sop] = pending
            self._schedule_retry(sop, pending, error)

    def accept(self, data: bytes | memoryview, transfer_syntax_uid: str | None,
               named: tuple[str, str] | None = None) -> IngestResult:
        """Validate and durably journal one instance; see Archive.accept."""
        self._last_arrival = time.monotonic()
        parsed = parse(data, transfer_syntax_uid)
        if named is not None:
            _check_named(parsed, *named)
        if conflict := self._ingestor.hierarchy_conflict(parsed):
            raise InvalidUIDError(conflict)
        if parsed.encapsulated:
            return self._ingestor.ingest(parsed)
        # Taken before any SOP lock: waiting for room while holding one could block the very worker
        # (same lock stripe) whose completion makes room.
        self._backlog.acquire()
        queued = False
        try:
            result, queued = self._accept_native(parsed, transfer_syntax_uid, data)
        finally:
            if not queued:
                self._backlog.release()
        return result if result is not None else self._ingestor.ingest(parsed)

    def _accept_native(
        self, parsed: dicom.ParsedInstance, transfer_syntax_uid: str | None, data: bytes | memoryview
    ) -> tuple[IngestResult | None, bool]:
        """Journal and queue native input (True: it keeps the caller's backlog slot), or say it is a
        duplicate; a None result means: a replacement, to ingest synchronously.
        """
        sop = parsed.sop_instance_uid
        digest = dataset_digest(parsed)
        while True:
            with self._ingestor.lock_for(sop):
                pending = self._pending_for(sop)
                if pending is None:
                    known = self._ingestor.existing(sop)
                    if known is None:
                        ticket, future = self._journal_and_register(parsed, transfer_syntax_uid, digest, data)
                        break
                    if known.digest == digest or self._ingestor.same_as_stored(known, parsed):
                        return result_for(known, "duplicate"), False
                    if not self._overwrite:
                        raise conflict_error(sop)
                elif pending.digest == digest:
                    return _accepted(parsed, "duplicate"), False
                elif not self._overwrite:
                    raise conflict_error(sop)
                elif pending.failures:  # a replacement would wait as long as the store keeps failing
                    raise NotStoredYetError(
                        f"instance {sop} is acknowledged and its store failed (it is tried again): "
                        "a replacement is taken once it is stored"
                    )
            if pending is None:
                return None, False
            pending.future.exception()  # a replacement waits for the instance it replaces, then retries
        self._pool.submit(self._transcode, sop, transfer_syntax_uid or "", ticket, future)
        return _accepted(parsed, "stored"), True

    def _journal_and_register(
        self, parsed: dicom.ParsedInstance, syntax: str | None, digest: str, data: bytes | memoryview
    ) -> tuple[Ticket, Future[None]]:
        """Make the received bytes durable and mark the instance pending (caller holds its SOP lock)."""
        self._reserve(len(data))
        try:
            ticket = self._journal.append(parsed.sop_instance_uid, syntax or "", digest, data)
            self._journal.sync(ticket)
        except BaseException:
            self._unreserve(len(data))
            raise
        try:
            visible = self._ingestor.announce(parsed, digest)  # committed after the acknowledgement
        except BaseException:  # the committer is closed: refused, so not to be stored from the journal
            self._journal.release(ticket)
            self._unreserve(len(data))
            raise
        future: Future[None] = Future()
        with self._lock:
            self._pending[parsed.sop_instance_uid] = _Pending(
                digest, future, visible, parsed.study_instance_uid, parsed.series_instance_uid, syntax or "", ticket
            )
        return ticket, future

    def _reserve(self, size: int) -> None:
        """Refuse (StorageFullError) an instance the disk could not hold until it is transcoded.

        Acknowledged means readable: journalled on a disk without room to transcode it, an instance would
        be acknowledged and yet missing from the index until the next open ingests it from the journal.
        """
        room = _room(size)
        with self._lock:
            pending = self._reserved + room + ROOM_MARGIN
            needs = [(self._journal.directory, size + (pending if self._same_volume else 0))]
            if not self._same_volume and self._pixel_root is not None:
                needs.append((self._pixel_root, pending))
            for path, need in needs:
                stat = os.statvfs(path)
                free = stat.f_bavail * stat.f_frsize
                if free < need:
                    raise StorageFullError(
                        errno.ENOSPC,
                        f"no room to store this instance: {free} bytes free on the volume of {path}, "
                        f"{need} needed for it and the {len(self._pending)} instances being stored",
                    )
            self._reserved += room

    def _unreserve(self, size: int) -> None:
        with self._lock:
            self._reserved -= _room(size)

    def _pending_for(self, sop: str) -> _Pending | None:
        with self._lock:
            return self._pending.get(sop)

    def _wait_turn(self) -> None:
        """Hold a worker back while instances keep arriving, unless the backlog or a reader needs it."""
        while not self._closing.is_set():
            quiet_for = time.monotonic() - self._last_arrival
            if quiet_for >= QUIET_SECONDS or self._readers_waiting or len(self._pending) >= HIGH_WATER:
                return
            self._closing.wait(QUIET_SECONDS - quiet_for)

    def _transcode(self, sop: str, syntax: str, ticket: Ticket, future: Future[None]) -> None:
        """A worker's turn at one journalled instance: store it, unless a reader already did (see wait)."""
        self._wait_turn()
        if self._claim(future):
            self._store(sop, syntax, ticket, future)

    def _claim(self, future: Future[None]) -> bool:
        """Whether the caller is the one thread to store the instance of `future` (a worker or a reader)."""
        with self._lock:
            if future in self._claimed:
                return False
            self._claimed.add(future)
            return True

    def _store(self, sop: str, syntax: str, ticket: Ticket, future: Future[None]) -> None:
        """Transcode and write one journalled instance; its commit finishes it (see _finish).

        A worker does not wait for the commit's fsync: it takes the next instance while the index
        commits this one. Waiting left the two workers idle most of the time (a 300-slice burst took
        four times its transcode CPU to index).
        """
        try:
            data = read_data(self._journal.directory, ticket.segment, ticket.data_offset, ticket.data_length)
            committed = self._ingestor.ingest_async(parse(data, syntax), acknowledged=True)
        except BaseException as exc:  # noqa: BLE001 - reported through the instance's future
            self._finish(sop, ticket, future, exc)
            return
        committed.add_done_callback(lambda done: self._finish(sop, ticket, future, done.exception()))

    def _finish(self, sop: str, ticket: Ticket, future: Future[None], error: BaseException | None) -> None:
        """Resolve a pending instance: release its journal record once indexed, free its backlog slot.

        A failed attempt keeps the instance pending for another one (unless closing).
        """
        if error is not None:
            retried, slot = self._retry_later(sop, future, error)
            if retried:
                if slot:
                    self._backlog.release()
                future.set_exception(error)  # this attempt's waiters go on; the next attempt has its own future
                return
        try:
            if error is None:
                try:
                    self._journal.release(ticket)
                except OSError as exc:  # indexed all the same; the segment goes at the next open
                    LOGGER.warning("could not release the journal record of %s: %s", sop, exc)
                future.set_result(None)
            else:  # still durable in the journal: the next open ingests it again
                with self._lock:
                    self._unstored += 1
                if isinstance(error, EngineError):
                    LOGGER.error("acknowledged instance %s is journalled but not yet stored: %s", sop, error)
                else:
                    LOGGER.error("acknowledged instance %s is journalled but not yet stored", sop, exc_info=error)
                future.set_exception(error)
        finally:
            with self._lock:
                current, slot = self._pending.get(sop), True
                if current is not None and current.future is future:
                    slot = not current.failures  # not held while it waited for a retry
                    del self._pending[sop]
            if slot:
                self._backlog.release()
            self._unreserve(ticket.data_length)

    def _retry_later(self, sop: str, future: Future[None], error: BaseException) -> tuple[bool, bool]:
        """Replace the failed attempt `future` of `sop` by a new one, scheduled: (done, whether the failed
        attempt held a backlog slot, which the caller releases); (False, _) when closing."""
        with self._lock:
            current = self._pending.get(sop)
            if self._closing.is_set() or current is None or current.future is not future:
                return False, False
            self._schedule_retry(sop, replace(current, future=Future()), error)
            return True, not current.failures

    def _schedule_retry(self, sop: str, pending: _Pending, error: BaseException) -> None:
        """Register `pending` (one more failure) and start the timer of its next attempt; holds the lock."""
        pending = replace(pending, failures=pending.failures + 1)
        self._pending[sop] = pending
        delay = min(RETRY_FIRST_SECONDS * 2 ** (pending.failures - 1), RETRY_MAX_SECONDS)
        timer = threading.Timer(delay, self._retry, args=(sop, pending.future))
        timer.daemon = True
        self._retries[pending.future] = timer
        timer.start()
        LOGGER.error("acknowledged instance %s is journalled but could not be stored (attempt %d: %s); trying "
                     "again in %.0f s", sop, pending.failures, error, delay)

    def _retry(self, sop: str, future: Future[None]) -> None:
        """A retry timer fired: queue the attempt for a worker, unless it was superseded or taken."""
        with self._lock:
            self._retries.pop(future, None)
            pending = self._pending.get(sop)
            if self._closing.is_set() or pending is None or pending.future is not future:
                return
            try:
                self._pool.submit(self._transcode, sop, pending.syntax, pending.ticket, future)
            except RuntimeError:  # the pool has shut down: close() resolves what is left
                pass

    def holds(self, sop: str) -> bool:
        """Whether `sop` was acknowledged (or replayed from the journal) and is not stored yet."""
        with self._lock:
            return sop in self._pending

    def pending(self, *, study: str | None = None, series: str | None = None, stored: bool = True) -> bool:
        """Whether any instance acknowledged (of `study` / `series` when given) is not stored yet, or
        with `stored` False, not visible to queries yet."""
        with self._lock:
            return any(_unresolved(self._chosen(None, study, series), stored))

    def _chosen(self, sop: str | None, study: str | None, series: str | None) -> list[tuple[str, _Pending]]:
        """The pending instances a wait is about (caller holds the lock)."""
        if sop is not None:
            return [(sop, self._pending[sop])] if sop in self._pending else []
        return [(key, p) for key, p in self._pending.items()
                if (study is None or p.study == study) and (series is None or p.series == series)]

    def wait(
        self, sop: str | None = None, timeout: float | None = None, *, study: str | None = None,
        series: str | None = None, stored: bool = True,
    ) -> None:
        """Wait until `sop` (or every instance acknowledged so far, of `study` / `series` when given) is
        stored, or with `stored` False, visible to queries; errors stay logged. With `timeout`, return
        after that many seconds even if some are still being transcoded. Instances whose store failed
        and waits for a retry are not waited for: their reads answer at once that they are not stored.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            chosen = self._chosen(sop, study, series)
            futures = _unresolved(chosen, stored)
            if not futures:
                return
            if stored:  # a reader waits for pixels: transcode now, instead of waiting for quiet
                self._readers_waiting += 1
        try:
            # What a reader waits for is stored on its own thread, ahead of the workers' queue: a viewer
            # opening a study that has just arrived waits for its instances, not for everyone's backlog.
            for key, p in chosen if stored else ():
                if deadline is not None and time.monotonic() > deadline:
                    break
                if not p.failures and self._claim(p.future):
                    self._store(key, p.syntax, p.ticket, p.future)
            for f in futures:
                f.exception(None if deadline is None else max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            LOGGER.debug("answering from the index while %d acknowledged instances are still transcoded", len(futures))
        finally:
            if stored:
                with self._lock:
                    self._readers_waiting -= 1

    def close(self) -> int:
        """Transcode everything acknowledged (no more waiting for quiet), then stop the workers; the
        last commits finish when the archive closes its committer, after this. Returns how many
        instances are left to the next open: those waiting for a retry stay in the journal."""
        self._closing.set()
        with self._lock:
            timers, self._retries = list(self._retries.values()), {}
        for timer in timers:
            timer.cancel()
        self._pool.shutdown(wait=True)
        with self._lock:
            waiting = [(sop, p) for sop, p in self._pending.items() if p.failures and not p.future.done()]
        for sop, p in waiting:
            if self._claim(p.future):  # not taken by a reader meanwhile
                self._finish(sop, p.ticket, p.future, ClosedError(
                    f"the archive closed before {sop} could be stored; the next open stores it from the journal"))
        with self._lock:
            return self._unstored


def _room(size: int) -> int:
    """What the transcode of a data set of `size` bytes may write: lossless output of pixels that do not
    compress, with container overhead."""
    return size + size // 8


def _unresolved(chosen: list[tuple[str, _Pending]], stored: bool) -> list[Future[None]] | list[Future[PutOutcome]]:
    """What a wait for the `chosen` pending instances waits on: their storing, or with `stored` False their
    pending records' commits; unresolved ones only. Not the retries of failed stores: a read would wait
    as long as the failure lasts, and each reader trying them itself would burn the CPU meanwhile."""
    if stored:
        return [p.future for _, p in chosen if not p.failures and not p.future.done()]
    return [p.visible for _, p in chosen if not p.visible.done()]


def _accepted(parsed: dicom.ParsedInstance, status: str) -> IngestResult:
    return IngestResult(
        sop_instance_uid=parsed.sop_instance_uid,
        study_instance_uid=parsed.study_instance_uid,
        series_instance_uid=parsed.series_instance_uid,
        status=status,
        received_bytes=received_size(parsed),
        stored_bytes=0,  # known once transcoded
    )


def _check_named(parsed: dicom.ParsedInstance, sop_class: str, sop_instance: str) -> None:
    """Raise IdentityMismatchError unless the data set is the instance its request names.

    PS3.4 B.2.3: 'Data Set does not match SOP Class' (A900), as DCMTK's storescp answers too. Stored as
    the data set says, the SCU would be told one instance is stored while the archive holds another, and
    a data set of a non-storage class (a worklist item, say) could come in under a storage class's name.
    """
    # The reason first: an Error Comment keeps 64 characters.
    if parsed.sop_class_uid != sop_class:
        raise IdentityMismatchError(f"SOP Class UID is not the request's: data set {parsed.sop_class_uid}, "
                                    f"request {sop_class or '(none)'}")
    if parsed.sop_instance_uid != sop_instance:
        raise IdentityMismatchError(f"SOP Instance UID is not the request's: data set {parsed.sop_instance_uid}, "
                                    f"request {sop_instance or '(none)'}")
