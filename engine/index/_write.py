"""Write primitives over the caller's write transaction: put and delete instances with every derived key."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime

import lmdb

from engine.index import _keys, _records
from engine.index._model import ChangeOp, IndexEntry, IndexStats, PatientRecord, PutOutcome, SeriesRecord, StudyRecord
from engine.index._read import IndexReader
from engine.index._schema import SEQUENCE_KEY, TOTALS_KEY, Dbs
from engine.types import InstanceRecord

# Attributes the first instance fixes; later instances only fill them while they are still empty.
_STUDY_FILLABLE = (
    "patient_name",
    "patient_birth_date",
    "patient_sex",
    "study_date",
    "study_time",
    "accession_number",
    "study_id",
    "study_description",
    "referring_physician_name",
)
_SERIES_FILLABLE = (
    "modality",
    "series_number",
    "series_description",
    "body_part_examined",
    "series_date",
    "series_time",
)
_PATIENT_FILLABLE = ("patient_name", "patient_birth_date", "patient_sex")


def utc_now() -> str:
    """ISO 8601 UTC timestamp with milliseconds, as the change log and records carry it."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text.strip()) if text else None
    except ValueError:
        return None


def _filled(old: object, new: object, names: tuple[str, ...]) -> dict[str, object]:
    """The fields of `new` that fill fields of `old` still empty."""
    out: dict[str, object] = {}
    for name in names:
        if getattr(old, name) in ("", None) and getattr(new, name) not in ("", None):
            out[name] = getattr(new, name)
    return out


def _study_keys(study: StudyRecord) -> dict[str, str]:
    return {
        "PatientID": study.patient_id,
        "PatientName": study.patient_name,
        "StudyDate": study.study_date,
        "AccessionNumber": study.accession_number,
    }


@dataclass(frozen=True, slots=True)
class PreparedEntry:
    """An entry with its record and header already encoded, so the write transaction only stores bytes."""

    entry: IndexEntry
    record_bytes: bytes
    header_blob: bytes


def prepare_entry(entry: IndexEntry) -> PreparedEntry:
    """Validate an entry's UIDs and encode it. Thread-safe and independent of the index: callers run it on
    their own threads (zlib releases the GIL) to keep the CPU work out of the single writer.

    Raises InvalidUIDError for a UID that cannot be a key.
    """
    rec = entry.record
    for uid in (rec.sop_instance_uid, rec.series_instance_uid, rec.study_instance_uid):
        _keys.uid_key(uid)
    header = _records.pack_header(entry.header_prefix, entry.header_suffix)
    return PreparedEntry(entry, _records.encode_instance(rec), header)


class IndexWriter(IndexReader):
    """Writes within one write transaction; reads see the transaction's own writes.

    Every method keeps all derived keys, aggregates, totals and the change log consistent, so calls compose:
    several of them in one transaction commit or abort together.
    """

    __slots__ = ("_now",)

    def __init__(self, txn: lmdb.Transaction[bytes], dbs: Dbs, now: str) -> None:
        super().__init__(txn, dbs)
        self._now = now

    # --- public primitives -------------------------------------------------------------------------

    def put(self, entry: IndexEntry | PreparedEntry) -> PutOutcome:
        """Store one entry; see PutOutcome for what can happen. Raises InvalidUIDError for an unusable UID."""
        prepared = entry if isinstance(entry, PreparedEntry) else prepare_entry(entry)
        rec = prepared.entry.record
        sop = rec.sop_instance_uid
        old = self.find_instance(sop)
        if old is not None and old.pending and not rec.pending:
            # The instance acknowledged earlier is stored now: its record takes the pending one's place.
            # The change log says "store" here, once the instance can be read, not at the pending record.
            self._unlink(old)
            self._link(prepared)
            return PutOutcome(sop, "stored", previous=old, sequence=self._log("store", rec))
        if old is not None and old.digest == rec.digest:
            return PutOutcome(sop, "duplicate")
        if old is not None and rec.pending:  # a pending record never replaces anything
            return PutOutcome(sop, "conflict", reason=f"instance {sop} is already stored")
        if old is not None and not prepared.entry.overwrite:
            reason = f"instance {sop} is stored with digest {old.digest}; this one has digest {rec.digest}"
            return PutOutcome(sop, "conflict", reason=reason)
        reason = self.contradiction(rec.study_instance_uid, rec.series_instance_uid, sop, old)
        if reason:
            return PutOutcome(sop, "rejected", reason=reason)
        if old is not None:
            self._unlink(old)
        self._link(prepared)
        if rec.pending:
            return PutOutcome(sop, "stored")
        sequence = self._log("store" if old is None else "replace", rec)
        return PutOutcome(sop, "stored" if old is None else "replaced", previous=old, sequence=sequence)

    def delete_instance(self, sop: str) -> InstanceRecord:
        """Remove an instance and everything derived from it; raises NotFoundError. The change log says
        "delete" for a stored instance only: a pending record's "store" was never logged either."""
        old = self.get_instance(sop)
        self._unlink(old)
        if not old.pending:
            self._log("delete", old)
        return old

    def delete_series(self, series: str) -> list[InstanceRecord]:
        """Remove every instance of a series, in series order; raises NotFoundError."""
        return [self.delete_instance(sop) for sop in self.instance_uids(series)]

    def delete_study(self, study: str) -> list[InstanceRecord]:
        """Remove every instance of a study; raises NotFoundError."""
        return [rec for series in self.series_uids(study) for rec in self.delete_series(series)]

    # --- linking -----------------------------------------------------------------------------------

    def _link(self, prepared: PreparedEntry) -> None:
        rec = prepared.entry.record
        sop, series_key = _keys.uid_key(rec.sop_instance_uid), _keys.uid_key(rec.series_instance_uid)
        self._txn.put(sop, prepared.record_bytes, db=self._dbs.instances)
        self._txn.put(sop, prepared.header_blob, db=self._dbs.headers)
        order = _keys.instance_order_key(series_key, rec.instance_number, sop)
        self._txn.put(order, b"", db=self._dbs.series_instances)
        series, new_series = self._link_series(rec)
        study, new_study = self._link_study(rec, series, new_series)
        new_patient = self._link_patient(rec, study, new_study, new_series)
        self._add_totals(int(new_patient), int(new_study), int(new_series), 1, rec.received_bytes, rec.stored_bytes)

    def _link_series(self, rec: InstanceRecord) -> tuple[SeriesRecord, bool]:
        key = _keys.uid_key(rec.series_instance_uid)
        q = rec.query
        fresh = SeriesRecord(
            series_instance_uid=rec.series_instance_uid,
            study_instance_uid=rec.study_instance_uid,
            modality=q.get("Modality", ""),
            series_number=_int_or_none(q.get("SeriesNumber")),
            series_description=q.get("SeriesDescription", ""),
            body_part_examined=q.get("BodyPartExamined", ""),
            series_date=q.get("SeriesDate", ""),
            series_time=q.get("SeriesTime", ""),
            instance_count=1,
            received_bytes=rec.received_bytes,
            stored_bytes=rec.stored_bytes,
            updated_at=self._now,
        )
        raw = self._txn.get(key, db=self._dbs.series)
        if raw is None:
            series, old_modality = fresh, ""
            self._txn.put(_keys.child_key(_keys.uid_key(rec.study_instance_uid), key), b"", db=self._dbs.study_series)
        else:
            old = _records.decode_series(raw)
            old_modality = old.modality
            series = replace(
                old,
                instance_count=old.instance_count + 1,
                received_bytes=old.received_bytes + rec.received_bytes,
                stored_bytes=old.stored_bytes + rec.stored_bytes,
                updated_at=self._now,
                **_filled(old, fresh, _SERIES_FILLABLE),  # type: ignore[arg-type]
            )
        self._sync_keys(key, {"Modality": old_modality}, {"Modality": series.modality})
        self._txn.put(key, _records.encode_series(series), db=self._dbs.series)
        return series, raw is None

    def _link_study(self, rec: InstanceRecord, series: SeriesRecord, new_series: bool) -> tuple[StudyRecord, bool]:
        key = _keys.uid_key(rec.study_instance_uid)
        q = rec.query
        modalities = (series.modality,) if series.modality else ()
        fresh = StudyRecord(
            study_instance_uid=rec.study_instance_uid,
            patient_id=q.get("PatientID", ""),
            patient_name=q.get("PatientName", ""),
            patient_birth_date=q.get("PatientBirthDate", ""),
            patient_sex=q.get("PatientSex", ""),
            study_date=q.get("StudyDate", ""),
            study_time=q.get("StudyTime", ""),
            accession_number=q.get("AccessionNumber", ""),
            study_id=q.get("StudyID", ""),
            study_description=q.get("StudyDescription", ""),
            referring_physician_name=q.get("ReferringPhysicianName", ""),
            modalities=modalities,
            series_count=1,
            instance_count=1,
            received_bytes=rec.received_bytes,
            stored_bytes=rec.stored_bytes,
            updated_at=self._now,
        )
        raw = self._txn.get(key, db=self._dbs.studies)
        if raw is None:
            study, old_keys = fresh, {}
        else:
            old = _records.decode_study(raw)
            old_keys = _study_keys(old)
            study = replace(
                old,
                modalities=tuple(sorted(set(old.modalities) | set(modalities))),
                series_count=old.series_count + int(new_series),
                instance_count=old.instance_count + 1,
                received_bytes=old.received_bytes + rec.received_bytes,
                stored_bytes=old.stored_bytes + rec.stored_bytes,
                updated_at=self._now,
                **_filled(old, fresh, _STUDY_FILLABLE),  # type: ignore[arg-type]
            )
        self._sync_keys(key, old_keys, _study_keys(study))
        self._txn.put(key, _records.encode_study(study), db=self._dbs.studies)
        return study, raw is None

    def _link_patient(self, rec: InstanceRecord, study: StudyRecord, new_study: bool, new_series: bool) -> bool:
        # The study's patient is fixed by its first instance, so every instance of a study counts there.
        key = _keys.patient_key(study.patient_id)
        raw = self._txn.get(key, db=self._dbs.patients)
        if raw is None:
            patient = PatientRecord(
                study.patient_id, study.patient_name, study.patient_birth_date, study.patient_sex, 1, 1, 1
            )
        else:
            old = _records.decode_patient(raw)
            patient = replace(
                old,
                study_count=old.study_count + int(new_study),
                series_count=old.series_count + int(new_series),
                instance_count=old.instance_count + 1,
                **_filled(old, study, _PATIENT_FILLABLE),  # type: ignore[arg-type]
            )
        if new_study:
            self._txn.put(
                _keys.child_key(key, _keys.uid_key(study.study_instance_uid)), b"", db=self._dbs.patient_studies
            )
        self._txn.put(key, _records.encode_patient(patient), db=self._dbs.patients)
        return raw is None

    # --- unlinking ---------------------------------------------------------------------------------

    def _unlink(self, old: InstanceRecord) -> None:
        sop, series_key = _keys.uid_key(old.sop_instance_uid), _keys.uid_key(old.series_instance_uid)
        self._txn.delete(sop, db=self._dbs.instances)
        self._txn.delete(sop, db=self._dbs.headers)
        order = _keys.instance_order_key(series_key, old.instance_number, sop)
        self._txn.delete(order, db=self._dbs.series_instances)
        series_gone = self._unlink_series(old)
        study, study_gone = self._unlink_study(old, series_gone)
        patient_gone = self._unlink_patient(study, series_gone, study_gone)
        self._add_totals(
            -int(patient_gone), -int(study_gone), -int(series_gone), -1, -old.received_bytes, -old.stored_bytes
        )

    def _unlink_series(self, old: InstanceRecord) -> bool:
        key = _keys.uid_key(old.series_instance_uid)
        series = self.series_record(old.series_instance_uid)
        if series.instance_count <= 1:
            self._txn.delete(key, db=self._dbs.series)
            study_key = _keys.uid_key(series.study_instance_uid)
            self._txn.delete(_keys.child_key(study_key, key), db=self._dbs.study_series)
            self._sync_keys(key, {"Modality": series.modality}, {})
            return True
        series = replace(
            series,
            instance_count=series.instance_count - 1,
            received_bytes=series.received_bytes - old.received_bytes,
            stored_bytes=series.stored_bytes - old.stored_bytes,
            updated_at=self._now,
        )
        self._txn.put(key, _records.encode_series(series), db=self._dbs.series)
        return False

    def _unlink_study(self, old: InstanceRecord, series_gone: bool) -> tuple[StudyRecord, bool]:
        key = _keys.uid_key(old.study_instance_uid)
        study = self.study_record(old.study_instance_uid)
        if study.instance_count <= 1:
            self._txn.delete(key, db=self._dbs.studies)
            patient = _keys.patient_key(study.patient_id)
            self._txn.delete(_keys.child_key(patient, key), db=self._dbs.patient_studies)
            self._sync_keys(key, _study_keys(study), {})
            return study, True
        modalities = study.modalities
        if series_gone:
            remaining = (self.series_record(uid).modality for uid in self.series_uids(old.study_instance_uid))
            modalities = tuple(sorted({m for m in remaining if m}))
        study = replace(
            study,
            modalities=modalities,
            series_count=study.series_count - int(series_gone),
            instance_count=study.instance_count - 1,
            received_bytes=study.received_bytes - old.received_bytes,
            stored_bytes=study.stored_bytes - old.stored_bytes,
            updated_at=self._now,
        )
        self._txn.put(key, _records.encode_study(study), db=self._dbs.studies)
        return study, False

    def _unlink_patient(self, study: StudyRecord, series_gone: bool, study_gone: bool) -> bool:
        key = _keys.patient_key(study.patient_id)
        patient = self.patient_record(study.patient_id)
        if study_gone and patient.study_count <= 1:
            self._txn.delete(key, db=self._dbs.patients)
            return True
        patient = replace(
            patient,
            study_count=patient.study_count - int(study_gone),
            series_count=patient.series_count - int(series_gone),
            instance_count=patient.instance_count - 1,
        )
        self._txn.put(key, _records.encode_patient(patient), db=self._dbs.patients)
        return False

    # --- shared bookkeeping ------------------------------------------------------------------------

    def _sync_keys(self, uid: bytes, old: dict[str, str], new: dict[str, str]) -> None:
        """Move the secondary keys of `uid` from the `old` values to the `new` ones; empty values are not indexed."""
        for keyword in old.keys() | new.keys():
            before, after = old.get(keyword, ""), new.get(keyword, "")
            if _keys.value_bytes(keyword, before) == _keys.value_bytes(keyword, after):
                continue
            if _keys.value_bytes(keyword, before):
                self._txn.delete(_keys.value_key(keyword, before, uid), db=self._dbs.qkeys)
            if _keys.value_bytes(keyword, after):
                self._txn.put(_keys.value_key(keyword, after, uid), b"", db=self._dbs.qkeys)

    def _add_totals(self, patients: int, studies: int, series: int, instances: int, received: int, stored: int) -> None:
        t = self.stats()
        new = IndexStats(
            t.patients + patients,
            t.studies + studies,
            t.series + series,
            t.instances + instances,
            t.received_bytes + received,
            t.stored_bytes + stored,
        )
        self._txn.put(TOTALS_KEY, _records.encode_totals(new), db=self._dbs.meta)

    def _log(self, op: ChangeOp, rec: InstanceRecord) -> int:
        sequence = self.last_sequence() + 1
        seq = _keys.seq_key(sequence)
        self._txn.put(SEQUENCE_KEY, seq, db=self._dbs.meta)
        self._txn.put(seq, _records.encode_change(op, rec, self._now), db=self._dbs.changes)
        return sequence
