"""The Index: the LMDB environment of an archive, its one writer, short read transactions, and map growth."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

import lmdb

from engine.errors import ClosedError, EngineError
from engine.index import _env
from engine.index._gate import Gate
from engine.index._model import Change, IndexEntry, IndexStats, PatientRecord, PutOutcome, SeriesRecord, StudyRecord
from engine.index._read import IndexReader
from engine.index._record_cache import RecordCache
from engine.index._schema import Dbs, open_dbs
from engine.index._write import IndexWriter, PreparedEntry, prepare_entry, utc_now
from engine.types import InstanceRecord

LOGGER = logging.getLogger(__name__)
_T = TypeVar("_T")


class Index:
    """The archive's catalogue: instance records, headers, hierarchy, query keys, totals and change log.

    Thread-safe. Writes are serialised (LMDB has one writer); reads run concurrently in short transactions.
    Raises ClosedError after close(), IndexSchemaError at open on a schema mismatch, StorageFullError when
    the disk is full.
    """

    def __init__(self, path: Path, *, map_size: int = 1 << 30, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self._env = _env.open_env(self.path, map_size, readonly)
        try:
            self._dbs: Dbs = open_dbs(self._env, self.path, readonly)
        except BaseException:
            self._env.close()
            raise
        self._records = RecordCache()  # decoded instance records, for read transactions
        self._gate = Gate()  # read transactions share it; map growth and close take it alone
        self._write_lock = threading.Lock()  # one writer, so map growth never races a write transaction
        self._closed = False
        self.write_transactions = 0  # committed write transactions: shows how well group commit batches

    # --- lifecycle ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Wait for running reads and writes, then close the environment. Idempotent."""
        with self._write_lock, self._gate.exclusive():
            if not self._closed:
                self._closed = True
                self._env.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    @property
    def map_size(self) -> int:
        """Current size of the memory map in bytes (it grows when full)."""
        with self._gate.shared():
            self._check_open()
            return self._env.info()["map_size"]

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"index at {self.path} is closed")

    # --- transactions ------------------------------------------------------------------------------

    def read(self, fn: Callable[[IndexReader], _T]) -> _T:
        """Run `fn` in one read transaction (one consistent snapshot) and return its result.

        `fn` must not keep the reader or call back into the Index; results must be materialised.
        """
        for _ in range(2):
            with self._gate.shared():
                self._check_open()
                try:
                    with self._env.begin(db=None, write=False) as txn:
                        return fn(IndexReader(txn, self._dbs, self._records))
                except lmdb.MapResizedError:
                    pass  # another process grew the map: adopt its size (below), then retry once
            with self._gate.exclusive():
                self._check_open()
                self._env.set_mapsize(0)
        raise EngineError(f"index at {self.path} kept changing its map size during a read")

    def write(self, fn: Callable[[IndexWriter], _T]) -> _T:
        """Run `fn` in one write transaction, committed with sync; the map grows and `fn` reruns when full.

        `fn` may run more than once, so it must have no effects outside the writer. Raises StorageFullError
        when the disk is full (nothing committed), and whatever `fn` raises (nothing committed).
        """
        if self.readonly:
            raise EngineError(f"index at {self.path} was opened read-only")
        with self._write_lock:
            while True:
                self._check_open()
                try:
                    with self._env.begin(write=True) as txn:
                        result = fn(IndexWriter(txn, self._dbs, utc_now()))
                    self.write_transactions += 1
                    return result
                except lmdb.MapFullError:
                    pass  # the transaction is aborted; grow with no transaction of ours open, then rerun
                except (lmdb.Error, OSError) as exc:
                    if _env.is_disk_full(exc, self.path):
                        raise _env.storage_full(self.path, exc) from exc
                    raise
                with self._gate.exclusive():
                    _env.grow(self._env, self.path)

    # --- writes ------------------------------------------------------------------------------------

    def put_instances(self, entries: Sequence[IndexEntry | PreparedEntry]) -> list[PutOutcome]:
        """Index `entries` in one write transaction (group commit), as if put one after the other.

        Entries are encoded before the transaction begins. Raises InvalidUIDError (nothing written) for an
        entry whose UIDs cannot be keys, StorageFullError when the disk is full.
        """
        prepared = [e if isinstance(e, PreparedEntry) else prepare_entry(e) for e in entries]
        return self.write(lambda w: [w.put(p) for p in prepared])

    def delete_instance(self, sop: str) -> InstanceRecord:
        """Remove one instance; raises NotFoundError. The caller removes its pixel chunks."""
        return self.write(lambda w: w.delete_instance(sop))

    def delete_series(self, series: str) -> list[InstanceRecord]:
        """Remove a series' instances; raises NotFoundError."""
        return self.write(lambda w: w.delete_series(series))

    def delete_study(self, study: str) -> list[InstanceRecord]:
        """Remove a study's instances; raises NotFoundError."""
        return self.write(lambda w: w.delete_study(study))

    # --- reads -------------------------------------------------------------------------------------

    def get_instance(self, sop: str) -> InstanceRecord:
        """Raises NotFoundError."""
        return self.read(lambda r: r.get_instance(sop))

    def get_instance_and_header(self, sop: str) -> tuple[InstanceRecord, bytes, bytes]:
        """(record, prefix, suffix) from one snapshot: read apart, a replacement committed in between would
        pair one generation's header with the other's pixels. Raises NotFoundError."""
        return self.read(lambda r: (r.get_instance(sop), *r.get_header(sop)))

    def get_instances(self, sops: Sequence[str]) -> list[InstanceRecord]:
        """Records in the order asked, from one snapshot; raises NotFoundError for the first missing one."""
        return self.read(lambda r: r.get_instances(sops))

    def has_instance(self, sop: str) -> bool:
        return self.read(lambda r: r.has_instance(sop))

    def get_header(self, sop: str) -> tuple[bytes, bytes]:
        """(prefix, suffix) header bytes around Pixel Data; raises NotFoundError."""
        return self.read(lambda r: r.get_header(sop))

    def study_uids(self) -> list[str]:
        return self.read(lambda r: r.study_uids())

    def series_uids(self, study: str) -> list[str]:
        """Raises NotFoundError for an unknown study."""
        return self.read(lambda r: r.series_uids(study))

    def instance_uids(self, series: str) -> list[str]:
        """Ordered by InstanceNumber then SOP UID; raises NotFoundError for an unknown series."""
        return self.read(lambda r: r.instance_uids(series))

    def study_record(self, study: str) -> StudyRecord:
        return self.read(lambda r: r.study_record(study))

    def series_record(self, series: str) -> SeriesRecord:
        return self.read(lambda r: r.series_record(series))

    def hierarchy_conflict(self, study: str, series: str, sop: str) -> str:
        """Why instance `sop` of `series` in `study` would be rejected by put (its series is another study's),
        or "" if it would not: the same rule, asked before anything is acknowledged."""
        return self.read(lambda r: r.hierarchy_conflict(study, series, sop))

    def patient_record(self, patient_id: str) -> PatientRecord:
        return self.read(lambda r: r.patient_record(patient_id))

    def patient_study_uids(self, patient_id: str) -> list[str]:
        return self.read(lambda r: r.patient_study_uids(patient_id))

    def series_metadata(self, series: str) -> list[tuple[InstanceRecord, bytes, bytes]]:
        """Record and header parts of every instance of a series, in order, from one read transaction."""
        return self.read(lambda r: r.series_metadata(series))

    def lookup(self, keyword: str, value: str) -> list[str]:
        """Exact secondary-key lookup; LOOKUP_LEVELS says whether study, series or instance UIDs come back."""
        return self.read(lambda r: r.lookup(keyword, value))

    def lookup_prefix(self, keyword: str, prefix: str) -> list[str]:
        """Prefix lookup (PatientName case-insensitive)."""
        return self.read(lambda r: r.lookup_prefix(keyword, prefix))

    def lookup_range(self, keyword: str, low: str = "", high: str = "") -> list[str]:
        """Inclusive range lookup, e.g. StudyDate; an empty bound is open."""
        return self.read(lambda r: r.lookup_range(keyword, low, high))

    def iter_instance_uids(self) -> list[str]:
        """Every SOP Instance UID (a list, materialised in one snapshot)."""
        return self.read(lambda r: r.iter_instance_uids())

    def stats(self) -> IndexStats:
        return self.read(lambda r: r.stats())

    def changes(self, since: int = 0, limit: int = 1000) -> list[Change]:
        return self.read(lambda r: r.changes(since, limit))

    def last_sequence(self) -> int:
        return self.read(lambda r: r.last_sequence())
