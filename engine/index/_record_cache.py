"""Decoded instance records kept by their stored bytes, so a record read again is not decoded again."""

from __future__ import annotations

from engine.index import _records
from engine.lru import LruCache
from engine.types import InstanceRecord

# Of stored record bytes: about 2,600 CT instances, whose decoded records take about 17 MB more (6.5 kB each).
DEFAULT_MAX_BYTES = 4 << 20


class RecordCache:
    """Thread-safe LRU from a record's stored bytes to its decoded InstanceRecord.

    Decoding a record costs about 45 us (JSON, then the pixel layout), and readers take the same records
    again and again: every frame of a stack a viewer scrolls, every instance of each C-GET of a series,
    each metadata request. The key is the stored bytes themselves, so a record that was replaced or
    changed is a different key and an outdated decode is never returned; entries that are no longer read
    age out. The records are frozen dataclasses, shared by every reader. Bounded by the stored size of the
    records it holds.
    """

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self._max_bytes = max_bytes
        self._records: LruCache[bytes, InstanceRecord] = LruCache(max_bytes, lambda raw, _record: len(raw))

    def decode(self, raw: bytes) -> InstanceRecord:
        """The record stored as `raw`; raises CorruptDataError as `_records.decode_instance` does."""
        record = self._records.get(raw)
        if record is None:
            record = _records.decode_instance(raw)
            if len(raw) <= self._max_bytes:
                self._records.put(raw, record)
        return record

    def __len__(self) -> int:
        return len(self._records)
