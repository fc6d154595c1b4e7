"""Read primitives over one transaction: records, headers, child lists, secondary keys, totals, changes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType

import lmdb

from engine.errors import NotFoundError
from engine.index import _keys, _records
from engine.index._model import Change, IndexStats, InstanceSummary, PatientRecord, SeriesRecord, StudyRecord
from engine.index._record_cache import RecordCache
from engine.index._schema import SEQUENCE_KEY, TOTALS_KEY, Dbs
from engine.types import InstanceRecord

# Secondary-key lookups and the level of the UIDs they return.
LOOKUP_LEVELS: Mapping[str, str] = MappingProxyType(
    {
        **{keyword: "study" for keyword in _keys.STUDY_LEVEL_KEYS},
        **{keyword: "series" for keyword in _keys.SERIES_LEVEL_KEYS},
        "StudyInstanceUID": "instance",
        "SeriesInstanceUID": "instance",
    }
)


class IndexReader:
    """Reads within one transaction (read-only, or the writer's own); values are copied out as bytes.

    Valid only while its transaction is open; the Index hands one to a callable and closes it after.
    """

    __slots__ = ("_dbs", "_records", "_txn")

    def __init__(self, txn: lmdb.Transaction[bytes], dbs: Dbs, records: RecordCache | None = None) -> None:
        self._txn = txn
        self._dbs = dbs
        self._records = records  # decoded records shared by the Index's readers; None decodes every time

    def _decode(self, raw: bytes) -> InstanceRecord:
        return _records.decode_instance(raw) if self._records is None else self._records.decode(raw)

    # --- instances ---------------------------------------------------------------------------------

    def get_instance(self, sop: str) -> InstanceRecord:
        """The record of `sop`; raises NotFoundError."""
        raw = self._txn.get(_keys.uid_key(sop), db=self._dbs.instances)
        if raw is None:
            raise NotFoundError(f"instance {sop} is not in the index")
        return self._decode(raw)

    def get_instance_summary(self, sop: str) -> InstanceSummary:
        """The query-relevant part of `sop`'s record; raises NotFoundError."""
        raw = self._txn.get(_keys.uid_key(sop), db=self._dbs.instances)
        if raw is None:
            raise NotFoundError(f"instance {sop} is not in the index")
        return _records.decode_instance_summary(raw)

    def find_instance(self, sop: str) -> InstanceRecord | None:
        """The record of `sop`, or None."""
        raw = self._txn.get(_keys.uid_key(sop), db=self._dbs.instances)
        return None if raw is None else self._decode(raw)

    def get_instances(self, sops: Sequence[str]) -> list[InstanceRecord]:
        """Records of `sops` in order; raises NotFoundError naming the first one missing."""
        return [self.get_instance(sop) for sop in sops]

    def has_instance(self, sop: str) -> bool:
        return self._txn.get(_keys.uid_key(sop), db=self._dbs.instances) is not None

    def get_header(self, sop: str) -> tuple[bytes, bytes]:
        """(prefix, suffix): the header bytes before and after Pixel Data; raises NotFoundError."""
        raw = self._txn.get(_keys.uid_key(sop), db=self._dbs.headers)
        if raw is None:
            raise NotFoundError(f"instance {sop} is not in the index (no header)")
        return _records.unpack_header(raw)

    def iter_instance_uids(self) -> list[str]:
        """Every SOP Instance UID, in UID byte order."""
        cursor = self._txn.cursor(db=self._dbs.instances)
        return [key.decode("ascii") for key in cursor.iternext(keys=True, values=False)]

    # --- hierarchy ---------------------------------------------------------------------------------

    def _scan(self, db: lmdb._Database, prefix: bytes) -> list[bytes]:
        """Keys starting with `prefix`, in key order."""
        cursor = self._txn.cursor(db=db)
        keys: list[bytes] = []
        if not cursor.set_range(prefix):
            return keys
        for key in cursor.iternext(keys=True, values=False):
            if not key.startswith(prefix):
                break
            keys.append(key)
        return keys

    def study_uids(self) -> list[str]:
        cursor = self._txn.cursor(db=self._dbs.studies)
        return [key.decode("ascii") for key in cursor.iternext(keys=True, values=False)]

    def series_uids(self, study: str) -> list[str]:
        """Series of `study` in UID order; raises NotFoundError for an unknown study."""
        self.study_record(study)
        prefix = _keys.children_prefix(_keys.uid_key(study))
        return [key[len(prefix) :].decode("ascii") for key in self._scan(self._dbs.study_series, prefix)]

    def instance_uids(self, series: str) -> list[str]:
        """Instances of `series` by InstanceNumber, then SOP UID; raises NotFoundError for an unknown series."""
        self.series_record(series)
        return self._series_instances(series)

    def _series_instances(self, series: str) -> list[str]:
        prefix = _keys.children_prefix(_keys.uid_key(series))
        size = len(prefix)
        return [_keys.instance_from_order_key(key, size) for key in self._scan(self._dbs.series_instances, prefix)]

    def study_record(self, study: str) -> StudyRecord:
        raw = self._txn.get(_keys.uid_key(study), db=self._dbs.studies)
        if raw is None:
            raise NotFoundError(f"study {study} is not in the index")
        return _records.decode_study(raw)

    def hierarchy_conflict(self, study: str, series: str, sop: str) -> str:
        """Why instance `sop` of `series` in `study` cannot join the hierarchy, or "" if it can."""
        # Asked for every instance received: the stored instance is looked up only when the series is
        # another study's, since only a replacement of its only instance lifts that.
        reason = self.contradiction(study, series, sop, None)
        return reason and self.contradiction(study, series, sop, self.find_instance(sop))

    def contradiction(self, study: str, series: str, sop: str, old: InstanceRecord | None) -> str:
        """hierarchy_conflict, with `old` the record stored under `sop` (None: there is none).

        A series belongs to one study. Replacing the only instance of a series removes the series first,
        so it may then move.
        """
        raw = self._txn.get(_keys.uid_key(series), db=self._dbs.series)
        if raw is None:
            return ""
        record = _records.decode_series(raw)
        if record.study_instance_uid == study:
            return ""
        if old is not None and old.series_instance_uid == series and record.instance_count == 1:
            return ""
        return (  # the reason first: a C-STORE's Error Comment keeps 64 characters
            f"its series is another study's: series {series} belongs to study {record.study_instance_uid}, "
            f"instance {sop} names study {study}"
        )

    def series_record(self, series: str) -> SeriesRecord:
        raw = self._txn.get(_keys.uid_key(series), db=self._dbs.series)
        if raw is None:
            raise NotFoundError(f"series {series} is not in the index")
        return _records.decode_series(raw)

    def patient_record(self, patient_id: str) -> PatientRecord:
        raw = self._txn.get(_keys.patient_key(patient_id), db=self._dbs.patients)
        if raw is None:
            raise NotFoundError(f"patient {patient_id!r} is not in the index")
        return _records.decode_patient(raw)

    def patient_study_uids(self, patient_id: str) -> list[str]:
        """Studies of a patient in UID order; raises NotFoundError for an unknown patient."""
        self.patient_record(patient_id)
        prefix = _keys.children_prefix(_keys.patient_key(patient_id))
        return [key[len(prefix) :].decode("ascii") for key in self._scan(self._dbs.patient_studies, prefix)]

    def series_metadata(self, series: str) -> list[tuple[InstanceRecord, bytes, bytes]]:
        """(record, header prefix, header suffix) of every instance of `series`, in series order."""
        self.series_record(series)
        out: list[tuple[InstanceRecord, bytes, bytes]] = []
        for sop in self._series_instances(series):
            prefix, suffix = self.get_header(sop)
            out.append((self.get_instance(sop), prefix, suffix))
        return out

    # --- secondary keys ----------------------------------------------------------------------------

    def _value_scan(self, prefix: bytes) -> list[str]:
        """UIDs at the end of the secondary keys starting with `prefix`, sorted and unique."""
        keys = self._scan(self._dbs.qkeys, prefix)
        return sorted({key[key.rindex(_keys.SEP) + 1 :].decode("ascii") for key in keys})

    def lookup(self, keyword: str, value: str) -> list[str]:
        """UIDs whose `keyword` equals `value` (PatientName case-insensitively), sorted; see LOOKUP_LEVELS.

        Raises KeyError for a keyword that is not indexed.
        """
        if keyword == "StudyInstanceUID":
            if self._txn.get(_keys.uid_key(value), db=self._dbs.studies) is None:
                return []
            return [sop for series in self.series_uids(value) for sop in self._series_instances(series)]
        if keyword == "SeriesInstanceUID":
            return self._series_instances(value)
        prefix = _keys.value_code(keyword) + _keys.value_bytes(keyword, value) + _keys.SEP
        return self._value_scan(prefix)

    def lookup_prefix(self, keyword: str, prefix: str) -> list[str]:
        """UIDs whose `keyword` starts with `prefix` (PatientName case-insensitively), sorted."""
        return self._value_scan(_keys.value_code(keyword) + _keys.value_bytes(keyword, prefix))

    def lookup_range(self, keyword: str, low: str = "", high: str = "") -> list[str]:
        """UIDs whose `keyword` lies in [low, high] by byte order (DICOM range matching of dates); empty is open."""
        code = _keys.value_code(keyword)
        cursor = self._txn.cursor(db=self._dbs.qkeys)
        found: set[str] = set()
        if not cursor.set_range(code + _keys.value_bytes(keyword, low)):
            return []
        top = _keys.value_bytes(keyword, high) if high else None
        for key in cursor.iternext(keys=True, values=False):
            if not key.startswith(code):
                break
            value, _, uid = key[1:].rpartition(_keys.SEP)
            if top is not None and value > top:
                break
            found.add(uid.decode("ascii"))
        return sorted(found)

    # --- totals and changes ------------------------------------------------------------------------

    def stats(self) -> IndexStats:
        return _records.decode_totals(self._txn.get(TOTALS_KEY, db=self._dbs.meta))

    def last_sequence(self) -> int:
        raw = self._txn.get(SEQUENCE_KEY, db=self._dbs.meta)
        return 0 if raw is None else _keys.seq_from_key(raw)

    def changes(self, since: int = 0, limit: int = 1000) -> list[Change]:
        """Changes with a sequence number greater than `since`, oldest first, at most `limit`."""
        out: list[Change] = []
        cursor = self._txn.cursor(db=self._dbs.changes)
        if limit <= 0 or not cursor.set_range(_keys.seq_key(since + 1)):
            return out
        for key, value in cursor.iternext():
            out.append(_records.decode_change(_keys.seq_from_key(key), value))
            if len(out) >= limit:
                break
        return out
