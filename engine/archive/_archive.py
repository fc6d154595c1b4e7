"""The Archive: the one place where the pixel store and the index meet (ingest, retrieve, verify)."""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np

from engine import codecs, dicom
from engine.archive._delete import DeleteLevel, Deleter, DeleteResult, DeletionDisabledError, check_level
from engine.archive._ingest import Ingestor, IngestResult, parse
from engine.archive._journal import Journal
from engine.archive._receiver import Receiver
from engine.archive._retrieve import Retriever, resolve_syntax
from engine.archive._verify import IndexScan, scan_index, sweep_orphans, verify_archive
from engine.config import Settings, load_settings
from engine.errors import ClosedError, CodecUnavailableError, EngineError
from engine.index import GroupCommitter, Index, IndexWriter
from engine.pixels import LocalPixelStore
from engine.types import InstanceRecord

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ArchiveStats:
    patients: int
    studies: int
    series: int
    instances: int
    received_bytes: int
    stored_bytes: int

    @property
    def ratio(self) -> float:
        """Received bytes over stored bytes (0 for an empty archive)."""
        return self.received_bytes / self.stored_bytes if self.stored_bytes else 0.0


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ArchiveInUseError(EngineError):
    """Another process has this archive open for writing."""


class Archive:
    """An archive folder (index/ + pixels/) opened for reading, or for writing by one process.

    A writer holds an exclusive lock on ARCHIVE/.lock, sweeps orphans left by a crash at open, and owns
    the index's single writer thread. Readers (export, ls, stats, verify) share the folder with it.
    """

    def __init__(self, settings: Settings, *, readonly: bool = False) -> None:
        self.settings = settings
        self.readonly = readonly
        self._closed = False
        root = settings.archive
        root.mkdir(parents=True, exist_ok=True)
        codecs.warm_up()  # before any thread encodes or decodes: see engine/codecs/_warmup.py
        self._lock_fd = self._lock(root) if not readonly else None
        try:
            self.index = Index(
                settings.index_path, map_size=settings.storage.index_map_size_mb << 20, readonly=readonly
            )
            self.pixels = LocalPixelStore(settings.pixels_path)
            self._retriever = Retriever(self.pixels)
            self._committer: GroupCommitter | None = None
            self._ingestor: Ingestor | None = None
            self._receiver: Receiver | None = None
            self._journal: Journal | None = None
            self._deleter: Deleter | None = None
            self._needs_sweep = False  # pixel bytes of deleted instances are left: sweep at the next open
            if not readonly:
                # The sweep reads every record: only worth it after a shutdown that was not clean.
                clean = root / ".clean-shutdown"
                scan: IndexScan | None = None
                if not clean.exists():
                    scan = scan_index(self.index)
                    swept = sweep_orphans(self.index, self.pixels, scan)
                    if swept:
                        LOGGER.warning(
                            "removed %d orphaned pixel groups left by an interrupted ingest or deletion", swept
                        )
                else:
                    clean.unlink()
                    _fsync_dir(root)
                # Chunks are written without per-file fsync; one syncfs per index batch makes them durable
                # before the transaction that acknowledges them (measured: 2x the instances/s).
                self._committer = GroupCommitter(
                    self.index, batch=settings.storage.commit_batch, before_commit=self.pixels.sync
                )
                self._ingestor = Ingestor(
                    self.index,
                    self._committer,
                    self.pixels,
                    settings.storage.profile,
                    settings.storage.overwrite,
                )
                self._journal = Journal(root / "journal")
                self._receiver = Receiver(
                    self._ingestor, self._journal, settings.storage.workers, settings.storage.overwrite,
                    pixel_root=self.pixels.root,
                )  # fmt: skip
                unfinished = [s for s in self._journal.segments() if s != self._journal.current]
                recovered = self._receiver.recover(unfinished)
                if recovered:
                    LOGGER.warning("ingested %d acknowledged instances left in the receive journal", recovered)
                if scan is not None and scan.pending:
                    # Not those the replay could not store yet: they stay pending, to be tried again.
                    self._drop_unrecovered([sop for sop in scan.pending if not self._receiver.holds(sop)])
                self._deleter = Deleter(
                    self.index, self._committer, self.pixels, self._ingestor, self._receiver, self._journal,
                    on_leftover=self._leave_for_sweep,
                )  # fmt: skip
        except BaseException:
            self._abandon()
            raise

    def _abandon(self) -> None:
        """Release what a failed open took: an archive that did not open can be opened again later."""
        for part in ("_receiver", "_committer", "_journal", "index", "pixels"):
            resource = getattr(self, part, None)
            if resource is None:
                continue
            try:
                resource.close()
            except Exception:  # the open's own error is the one to report
                LOGGER.debug("closing %s after a failed open", part, exc_info=True)
        self._unlock()

    @classmethod
    def open(
        cls,
        archive: Path | str,
        *,
        readonly: bool = False,
        storage: Mapping[str, object] | None = None,
        dicom: Mapping[str, object] | None = None,
        http: Mapping[str, object] | None = None,
    ) -> Archive:
        """Open ARCHIVE with its engine.toml (if any), the environment, and explicit setting overrides."""
        settings = load_settings(archive=archive, storage=storage or {}, dicom=dicom or {}, http=http or {})
        return cls(settings, readonly=readonly)

    def _lock(self, root: Path) -> int:
        fd = os.open(root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise ArchiveInUseError(f"archive {root} is open for writing by pid {holder}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def close(self) -> None:
        """Flush pending commits and release the archive."""
        if self._closed:
            return
        self._closed = True
        # Every acknowledged instance is indexed before the index closes, but those whose store failed:
        # they stay in the journal and pending, and may have left pixel bytes to sweep.
        if self._receiver is not None and self._receiver.close():
            self._needs_sweep = True
        if self._committer is not None:
            self._committer.close()
        if self._journal is not None:
            self._journal.close()
        if not self.readonly and not self._needs_sweep:
            # Everything is committed and the journal is empty: the next writer may skip the sweep.
            (self.settings.archive / ".clean-shutdown").touch()
            _fsync_dir(self.settings.archive)
        self.index.close()
        # Cached chunk descriptors too: pynetdicom's select() fails on descriptors numbered past 1024,
        # so a process that opens archives (or serves many files) must not accumulate them.
        self.pixels.close()
        self._unlock()

    def __enter__(self) -> Archive:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- ingest ---------------------------------------------------------------------------------------
    def ingest(self, data: bytes | memoryview, transfer_syntax_uid: str | None = None, *, source: str = "") -> IngestResult:
        """Store one instance durably and say what happened.

        `data` is a Part-10 file when `transfer_syntax_uid` is None, else a bare data set in that syntax
        (what a C-STORE SCP receives). Thread-safe; concurrent calls share index transactions.
        Raises InvalidDicomError (and its InvalidUIDError / PixelDataError), UnsupportedTransferSyntaxError,
        DuplicateInstanceError, VerificationError, CodecUnavailableError, StorageFullError, ClosedError.
        """
        if self._ingestor is None or self._closed:
            raise ClosedError("the archive is closed or open read-only")
        result = self._ingestor.ingest(parse(data, transfer_syntax_uid))
        LOGGER.debug("%s %s from %s", result.status, result.sop_instance_uid, source or "?")
        return result

    def accept(self, data: bytes | memoryview, transfer_syntax_uid: str | None = None, *,
               named: tuple[str, str] | None = None) -> IngestResult:
        """Take an instance from the network: return once it is validated and durable.

        `named` is the (SOP Class UID, SOP Instance UID) the request names (a C-STORE's Affected ones):
        a data set that is another instance raises IdentityMismatchError before anything is stored.

        Native pixel data is durable in the receive journal when this returns. Its pending record (query
        attributes and header, see InstanceRecord.pending) is committed moments later, and a worker pool
        transcodes and stores it behind the senders (pixel reads in this process wait for that; a crash
        before it is finished is recovered at the next open). Compressed input is ingested before
        returning, since only decoding it shows whether it is corrupt. Raises what `ingest` raises.
        """
        if self._receiver is None or self._closed:
            raise ClosedError("the archive is closed or open read-only")
        return self._receiver.accept(data, transfer_syntax_uid, named)

    def wait_for_ingests(
        self, timeout: float | None = None, *, study: str | None = None, series: str | None = None,
        stored: bool = True,
    ) -> None:
        """Wait until every instance acknowledged so far by `accept` (of `study` / `series` when given)
        is stored (or failed, logged); with `stored` False, until its pending record is visible to
        queries, which takes milliseconds, not the transcode.

        With `timeout`, return after that many seconds even if some are still being transcoded. A read
        of one study or series names it, so it waits only for that study's or series' pending
        instances, not for everyone else's.
        """
        if self._receiver is not None:
            self._receiver.wait(None, timeout, study=study, series=series, stored=stored)

    def ingests_pending(self, *, study: str | None = None, series: str | None = None, stored: bool = True) -> bool:
        """Whether `wait_for_ingests` with the same scope would wait: a check that never blocks."""
        return self._receiver is not None and self._receiver.pending(study=study, series=series, stored=stored)

    def ingest_file(self, path: Path | str) -> IngestResult:
        """Read a Part-10 file and ingest it; see `ingest`."""
        with open(path, "rb") as f:
            return self.ingest(f.read(), source=str(path))

    def ingest_file_async(self, path: Path | str) -> Future[IngestResult]:
        """Read, transcode and write a Part-10 file on this thread; the future resolves once it is durable.

        For bulk imports: the calling thread goes on to the next file while the index commit (and its
        fsync) is under way. Raises what `ingest` raises before the commit; the future holds the rest.
        """
        if self._ingestor is None or self._closed:
            raise ClosedError("the archive is closed or open read-only")
        with open(path, "rb") as f:
            data = f.read()
        return self._ingestor.ingest_async(parse(data, None))

    # -- delete ---------------------------------------------------------------------------------------
    def delete(
        self, level: DeleteLevel | str, uid: str, *, study_uid: str | None = None, series_uid: str | None = None
    ) -> DeleteResult:
        """Remove a study, a series or an instance ("study", "series", "instance") and say what went.

        `study_uid` / `series_uid` optionally name where the object must be (NotFoundError otherwise).
        Crash-safe: after a kill at any moment each instance is either fully readable or absent from the
        index, and pixel bytes left behind are removed by the sweep at the next open. Instances still
        being transcoded from the network are waited for and deleted too. Raises DeletionDisabledError
        unless [storage] allow_delete is on, NotFoundError, InvalidUIDError, ValueError (unknown level),
        ClosedError (closed or read-only), StorageFullError.
        """
        if self._deleter is None or self._closed:
            raise ClosedError("deleting needs the archive open for writing")
        if not self.settings.storage.allow_delete:
            raise DeletionDisabledError(
                f"deletion is disabled for archive {self.settings.archive}: set allow_delete = true in its "
                "[storage] settings (engine.toml) or PACS_ENGINE_STORAGE__ALLOW_DELETE=1"
            )
        for value, what in ((uid, "UID"), (study_uid, "Study Instance UID"), (series_uid, "Series Instance UID")):
            if value is not None:
                dicom.validate_uid(value, what)
        return self._deleter.delete(check_level(level), uid, study_uid=study_uid, series_uid=series_uid)

    def delete_study(self, study_uid: str) -> DeleteResult:
        """Remove every instance of a study; see delete."""
        return self.delete("study", study_uid)

    def delete_series(self, series_uid: str) -> DeleteResult:
        """Remove every instance of a series; see delete."""
        return self.delete("series", series_uid)

    def delete_instance(self, sop_uid: str) -> DeleteResult:
        """Remove one instance; see delete."""
        return self.delete("instance", sop_uid)

    def _drop_unrecovered(self, sops: list[str]) -> None:
        """Remove the pending records that the journal replay did not replace with stored instances.

        A pending record is committed after its instance is journalled, and the journal keeps it until
        the stored record replaces the pending one, so after a crash the replay finishes every one. What
        is left comes from a copy: a backup whose journal was copied before the instance arrived, and
        whose index snapshot was taken after. The copy does not hold that instance; its record goes. So
        does the record of an instance whose journal record was damaged (the journal logged which).
        """
        committer = self._committer
        assert committer is not None

        def drop(writer: IndexWriter) -> list[str]:  # still pending after the replay, in one transaction
            return [writer.delete_instance(sop).sop_instance_uid for sop in sops
                    if (record := writer.find_instance(sop)) is not None and record.pending]

        dropped = committer.run(lambda: self.index.write(drop)).result()
        if dropped:
            LOGGER.warning("removed %d records of instances acknowledged but absent from the receive journal "
                           "(a damaged journal record, or an archive copied while it was storing): %s",
                           len(dropped), ", ".join(dropped[:10]))

    def _leave_for_sweep(self) -> None:
        self._needs_sweep = True

    # -- retrieve -------------------------------------------------------------------------------------
    def _settled(self, sop_uid: str | None = None, *, stored: bool = True) -> None:
        """Reads see every instance this process acknowledged: stored, even one still being transcoded
        when it is acknowledged, or with `stored` False, at least its pending record."""
        if self._receiver is not None:
            self._receiver.wait(sop_uid, stored=stored)

    def record(self, sop_uid: str) -> InstanceRecord:
        """The index record of an instance, once stored if this process acknowledged it. In a process
        that did not, it may be pending (InstanceRecord.pending) and its pixel reads raise
        NotStoredYetError. Raises NotFoundError."""
        self._settled(sop_uid)
        return self.index.get_instance(sop_uid)

    def read_dataset(self, sop_uid: str, syntax: str = "original") -> tuple[str, bytes | bytearray]:
        """(transfer syntax UID, data set bytes without file meta) of an instance; see read_instance."""
        return self._read_dataset(sop_uid, syntax)[1:]

    def _read_dataset(self, sop_uid: str, syntax: str) -> tuple[InstanceRecord, str, bytes | bytearray]:
        self._settled(sop_uid)
        record, prefix, suffix = self.index.get_instance_and_header(sop_uid)
        target = resolve_syntax(record, syntax)
        return record, target, self._retriever.dataset(record, prefix, suffix, target)

    def read_instance(self, sop_uid: str, syntax: str = "original") -> bytes:
        """A Part-10 file of the instance in `syntax`: "original", "explicit", "stored" or a UID.

        Raises NotFoundError, UnsupportedTransferSyntaxError, CorruptDataError.
        """
        record, target, dataset = self._read_dataset(sop_uid, syntax)
        return dicom.part10(dataset, target, record.sop_class_uid, sop_uid)

    def read_frame(self, sop_uid: str, frame: int, level: int = 0) -> np.ndarray:
        """Pixels of frame `frame` (0-based) at resolution `level` (0 = full). Raises NotFoundError."""
        return self._retriever.frame(self.record(sop_uid), frame, level)

    def read_packed_pixels(self, sop_uid: str) -> bytes:
        """The whole Pixel Data value of packed data (1-bit, 4:2:2: the "raw" layout), exactly as received.

        Raises NotFoundError, and CodecUnavailableError for an instance whose frames are stored one by one.
        """
        record = self.record(sop_uid)
        if record.layout != "raw":
            raise CodecUnavailableError(f"{sop_uid}: pixel data is stored frame by frame, not packed")
        return self._retriever.raw_bytes(record)

    def read_frame_encoded(self, sop_uid: str, frame: int) -> tuple[str, bytes]:
        """(transfer syntax, codestream) of a frame exactly as stored, without decoding."""
        return self._retriever.frame_encoded(self.record(sop_uid), frame)

    def read_frame_prefix(self, sop_uid: str, frame: int, level: int) -> bytes:
        """The first bytes of a frame's stored codestream that decode it at `level`."""
        return self._retriever.frame_prefix(self.record(sop_uid), frame, level)

    # -- browse ---------------------------------------------------------------------------------------
    def study_uids(self) -> list[str]:
        self._settled(stored=False)
        return self.index.study_uids()

    def series_uids(self, study_uid: str) -> list[str]:
        self._settled(stored=False)
        return self.index.series_uids(study_uid)

    def instance_uids(self, series_uid: str) -> list[str]:
        self._settled(stored=False)
        return self.index.instance_uids(series_uid)

    def stats(self) -> ArchiveStats:
        self._settled()
        s = self.index.stats()
        return ArchiveStats(
            patients=s.patients,
            studies=s.studies,
            series=s.series,
            instances=s.instances,
            received_bytes=s.received_bytes,
            stored_bytes=s.stored_bytes,
        )

    # -- integrity ------------------------------------------------------------------------------------
    def verify(self, deep: bool = False) -> list[str]:
        """Problems found: index and pixel store disagree, chunk length/checksum, (deep) frame hashes."""
        self._settled()
        live = self.readonly and self._writer_active()
        storing = self._receiver.holds if self._receiver is not None else (lambda sop: False)
        return verify_archive(self.index, self.pixels, self._retriever, deep=deep, live=live, storing=storing)

    def _writer_active(self) -> bool:
        """Whether another process holds the archive open for writing."""
        try:
            fd = os.open(self.settings.archive / ".lock", os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing releases a lock we may have taken
        return False

    def sweep(self) -> int:
        """Remove pixel groups the index does not reference (left by a crash). Writers only."""
        if self.readonly:
            raise ClosedError("sweep needs the archive open for writing")
        return sweep_orphans(self.index, self.pixels)
