"""Ingest of one instance: parse, validate, plan pixels, write chunks, commit the index, acknowledge."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime

import xxhash

from engine import dicom
from engine.archive._plan import PixelPlan, content_hashes, level_infos, plan_pixels
from engine.errors import (
    CodecUnavailableError,
    CorruptDataError,
    DuplicateInstanceError,
    EngineError,
    InvalidUIDError,
    NotFoundError,
    VerificationError,
)
from engine.index import GroupCommitter, Index, IndexEntry, PutOutcome
from engine.pixels import LocalPixelStore
from engine.types import CODEC_ZSTD, PENDING, InstanceRecord, LevelInfo

LOGGER = logging.getLogger(__name__)

# Ingests of the same SOP Instance UID are serialised so that the duplicate check, the chunk write and
# the commit cannot interleave; a fixed set of striped locks keeps that without a growing lock table.
_STRIPES = 256


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What happened to one received instance; returned only once the outcome is durable."""

    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    status: str  # "stored" | "duplicate" | "replaced"
    received_bytes: int
    stored_bytes: int


class Ingestor:
    """Runs ingests from any number of threads into one pixel store and one index writer."""

    def __init__(
        self, index: Index, committer: GroupCommitter, pixels: LocalPixelStore, profile: str, overwrite: bool
    ) -> None:
        self._index = index
        self._committer = committer
        self._pixels = pixels
        self._profile = profile
        self._overwrite = overwrite
        self._locks = [threading.Lock() for _ in range(_STRIPES)]

    def lock_for(self, sop: str) -> threading.Lock:
        """The lock that serialises everything done to one SOP Instance UID."""
        return self._locks[hash(sop) % _STRIPES]

    def existing(self, sop: str) -> InstanceRecord | None:
        try:
            return self._index.get_instance(sop)
        except NotFoundError:
            return None

    def hierarchy_conflict(self, parsed: dicom.ParsedInstance) -> str:
        """Why the index would reject `parsed` at its commit (its series is another study's), or "".

        A C-STORE must hear it before it is acknowledged: an acknowledged instance that can never be
        committed was tried again every few seconds, for ever, and found by no query of its study.
        """
        return self._index.hierarchy_conflict(parsed.study_instance_uid, parsed.series_instance_uid,
                                              parsed.sop_instance_uid)

    def same_as_stored(self, stored: InstanceRecord, parsed: dicom.ParsedInstance) -> bool:
        """Whether `parsed` is the stored instance sent again in another transfer syntax: its header says
        the same (values, not their encoding) and its pixels are the same (the frame hashes recorded).

        The received bytes' digest tells a re-send in the same syntax; a modality or an archive may well
        send an instance again in the syntax this association negotiated, and that is no conflict.
        """
        if stored.pending or stored.transfer_syntax_uid == parsed.transfer_syntax_uid:
            return False  # pending: no frame hashes yet; the same syntax: the digest has decided
        try:
            prefix, suffix = self._index.get_header(stored.sop_instance_uid)
            same_header = dicom.header_content(prefix, suffix, stored.transfer_syntax_uid) == dicom.header_content(
                parsed.header_prefix, parsed.header_suffix, parsed.transfer_syntax_uid)
            return same_header and content_hashes(parsed) == stored.frame_hashes
        except EngineError as exc:  # what cannot be read or compared is not the same
            LOGGER.info("%s: not compared with the stored instance: %s", stored.sop_instance_uid, exc)
            return False

    def ingest(self, parsed: dicom.ParsedInstance, *, acknowledged: bool = False) -> IngestResult:
        """Store `parsed` durably; see Archive.ingest for what it raises, and ingest_async for
        `acknowledged`."""
        return self.ingest_async(parsed, acknowledged=acknowledged).result()

    def ingest_async(self, parsed: dicom.ParsedInstance, *, acknowledged: bool = False) -> Future[IngestResult]:
        """Transcode, verify and write `parsed` on this thread; the future resolves once it is committed.

        What `ingest` would raise before the commit is raised here; what the commit raises is the
        future's. A bulk import hands the next file to this thread instead of waiting for the fsync.

        `acknowledged`: the instance was acknowledged from the journal, which stores it now: its pending
        record (see announce) is replaced.
        Native pixel data that the profile's codec cannot store verified (CharLS fails on some noise) is kept
        with the general-purpose lossless codec instead: a valid instance is never refused for our codec.
        """
        dataset_bytes = received_size(parsed)
        digest = dataset_digest(parsed)
        sop = parsed.sop_instance_uid
        lock = self.lock_for(sop)
        lock.acquire()  # released when the commit is done (on the committer's thread) or on a failure
        try:
            previous = self.existing(sop)
            if previous is not None and previous.pending and acknowledged:
                previous = None  # this ingest is what the pending record waits for
            if previous is not None:
                if previous.digest == digest or self.same_as_stored(previous, parsed):
                    lock.release()
                    return _resolved(result_for(previous, "duplicate"))
                if previous.pending:  # another instance with its UID is being stored: its turn first
                    raise pending_conflict_error(sop)
                if not self._overwrite:
                    raise conflict_error(sop)
            generation = previous.generation + 1 if previous is not None else 0
            try:
                plan = plan_pixels(parsed, self._profile)
            except (VerificationError, CodecUnavailableError) as exc:
                if parsed.pixel is None or parsed.encapsulated:
                    raise
                LOGGER.warning("%s: %s; keeping its pixel data with zstd instead", sop, exc)
                plan = plan_pixels(parsed, CODEC_ZSTD)  # frames and levels as with any codec
            record, written = self._write_pixels(parsed, plan, dataset_bytes, digest, generation)
            entry = IndexEntry(
                record=record,
                header_prefix=parsed.header_prefix,
                header_suffix=parsed.header_suffix,
                overwrite=self._overwrite,
            )
            try:
                commit = self._committer.submit(entry)
            except BaseException:
                if written:
                    self._pixels.delete_instance(sop, generation)
                raise
        except BaseException:
            lock.release()
            raise
        result: Future[IngestResult] = Future()
        result.set_running_or_notify_cancel()
        commit.add_done_callback(lambda done: self._finish(done, result, record, written, lock))
        return result

    def announce(self, parsed: dicom.ParsedInstance, digest: str) -> Future[PutOutcome]:
        """Commit `parsed`'s pending record (no pixels) for queries; call with its SOP lock held, after
        checking that no record is stored for it. The instance must be durable elsewhere (the journal)
        and stored later by ingest_async(acknowledged=True): this record says it exists, not where its
        pixels are. The future's outcome is "conflict" if a record was stored meanwhile (nothing changes).
        """
        record = self._record(parsed, received_size(parsed), 0, digest, 0, None, (), layout=PENDING)
        return self._committer.submit(IndexEntry(record, parsed.header_prefix, parsed.header_suffix))

    def _finish(
        self,
        commit: Future[PutOutcome],
        result: Future[IngestResult],
        record: InstanceRecord,
        written: bool,
        lock: threading.Lock,
    ) -> None:
        """After the commit: drop chunks the index does not reference, release the SOP's lock, resolve."""
        sop, generation = record.sop_instance_uid, record.generation
        try:
            try:
                outcome = commit.result()
            except BaseException:
                # The index is the source of truth: chunks it does not reference must not stay.
                if written:
                    self._pixels.delete_instance(sop, generation)
                raise
            if outcome.status == "replaced" and outcome.previous is not None and outcome.previous.codec:
                self._pixels.delete_instance(sop, outcome.previous.generation)
            if outcome.status not in ("stored", "replaced"):
                if written:
                    self._pixels.delete_instance(sop, generation)
                if outcome.status == "rejected":  # it contradicts the hierarchy, e.g. its series is another study's
                    raise InvalidUIDError(outcome.reason or f"{sop} contradicts the index")
                # Impossible while the stripe lock is held, unless another process writes this archive.
                raise CorruptDataError(f"index refused {sop}: {outcome.status}")
            value = result_for(record, outcome.status)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's future
            lock.release()
            result.set_exception(exc)
            return
        lock.release()
        result.set_result(value)

    def _write_pixels(
        self,
        parsed: dicom.ParsedInstance,
        plan: PixelPlan | None,
        received: int,
        digest: str,
        generation: int,
    ) -> tuple[InstanceRecord, bool]:
        levels: tuple[LevelInfo, ...] = ()
        stored = len(parsed.header_prefix) + len(parsed.header_suffix)
        if plan is not None:
            refs = self._pixels.write_instance(
                parsed.sop_instance_uid,
                plan.arrays,
                {"sop_instance_uid": parsed.sop_instance_uid, "codec": plan.codec or ""},
                generation=generation,
                sync=False,  # made durable by the committer's pixel sync before the index commit
            )
            levels = level_infos(plan, refs)
            stored += sum(r.length for array_refs in refs for r in array_refs)
        return self._record(parsed, received, stored, digest, generation, plan, levels), plan is not None

    @staticmethod
    def _record(
        parsed: dicom.ParsedInstance,
        received: int,
        stored: int,
        digest: str,
        generation: int,
        plan: PixelPlan | None,
        levels: tuple[LevelInfo, ...],
        *,
        layout: str | None = None,
    ) -> InstanceRecord:
        return InstanceRecord(
            sop_instance_uid=parsed.sop_instance_uid,
            sop_class_uid=parsed.sop_class_uid,
            study_instance_uid=parsed.study_instance_uid,
            series_instance_uid=parsed.series_instance_uid,
            transfer_syntax_uid=parsed.transfer_syntax_uid,
            received_bytes=received,
            stored_bytes=stored,
            digest=digest,
            instance_number=parsed.instance_number,
            pixel=parsed.pixel,
            codec=plan.codec if plan else None,
            levels=levels,
            frame_hashes=plan.frame_hashes if plan else (),
            encapsulation=plan.encapsulation if plan else None,
            pixel_tail=plan.pixel_tail if plan else b"",
            pixel_element_header=parsed.pixel_element_header,
            received_at=datetime.now(UTC).isoformat(timespec="milliseconds"),
            query=dict(parsed.query),
            generation=generation,
            layout=layout or (plan.layout if plan else "frames"),
        )


def _resolved(value: IngestResult) -> Future[IngestResult]:
    future: Future[IngestResult] = Future()
    future.set_result(value)
    return future


def parse(data: bytes | memoryview, transfer_syntax_uid: str | None) -> dicom.ParsedInstance:
    """A Part-10 file when `transfer_syntax_uid` is None or empty, else a bare data set in that syntax."""
    if transfer_syntax_uid:
        return dicom.parse_dataset(data, transfer_syntax_uid)
    return dicom.parse_part10(data)


def pending_conflict_error(sop: str) -> DuplicateInstanceError:
    return DuplicateInstanceError(
        f"SOP Instance {sop} is being stored from an earlier send with different content; "
        "send this one again once that one is stored"
    )


def conflict_error(sop: str) -> DuplicateInstanceError:
    return DuplicateInstanceError(
        # The reason first: a C-STORE's Error Comment keeps 64 characters, and a UID takes up to 64.
        f"a different instance with this SOP Instance UID is stored (overwrite is off in the configuration): {sop}"
    )


def result_for(record: InstanceRecord, status: str) -> IngestResult:
    return IngestResult(
        sop_instance_uid=record.sop_instance_uid,
        study_instance_uid=record.study_instance_uid,
        series_instance_uid=record.series_instance_uid,
        status=status,
        received_bytes=record.received_bytes,
        stored_bytes=record.stored_bytes,
    )


def dataset_digest(parsed: dicom.ParsedInstance) -> str:
    """Digest of the data set as received, so a file and a network send of the same data set match."""
    h = xxhash.xxh3_128()
    for part in (parsed.header_prefix, parsed.pixel_element_header, parsed.pixel_value, parsed.header_suffix):
        h.update(part)
    return h.hexdigest()


def received_size(parsed: dicom.ParsedInstance) -> int:
    return (
        len(parsed.header_prefix)
        + len(parsed.pixel_element_header)
        + len(parsed.pixel_value)
        + len(parsed.header_suffix)
    )
