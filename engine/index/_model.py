"""Value objects the index takes and returns: entries to store, outcomes, aggregate records, changes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from engine.types import InstanceRecord

PutStatus = Literal["stored", "duplicate", "conflict", "replaced", "rejected"]
ChangeOp = Literal["store", "replace", "delete"]


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """One instance to index: its record and its header bytes before and after the Pixel Data element."""

    record: InstanceRecord
    header_prefix: bytes
    header_suffix: bytes = b""
    overwrite: bool = False  # replace a stored instance with the same SOP Instance UID and another digest


@dataclass(frozen=True, slots=True)
class PutOutcome:
    """What put_instances did with one entry.

    stored: new instance; duplicate: same SOP UID and digest already stored, nothing written; conflict: same SOP
    UID with another digest and no overwrite, nothing written; replaced: the old instance (`previous`) was
    replaced; rejected: nothing written because the entry contradicts the index (`reason` says how).
    A pending record (InstanceRecord.pending) is stored only where no record is; the record of the stored
    instance then replaces it as "stored", with the pending record as `previous`.
    """

    sop_instance_uid: str
    status: PutStatus
    previous: InstanceRecord | None = None
    sequence: int = 0  # change-log sequence number of the write, 0 when nothing was written
    reason: str = ""


@dataclass(frozen=True, slots=True)
class PatientRecord:
    """Patient-level attributes and counts (C-FIND PATIENT level)."""

    patient_id: str
    patient_name: str
    patient_birth_date: str
    patient_sex: str
    study_count: int
    series_count: int
    instance_count: int


@dataclass(frozen=True, slots=True)
class StudyRecord:
    """Study-level attributes and counts (C-FIND STUDY level, QIDO-RS studies)."""

    study_instance_uid: str
    patient_id: str
    patient_name: str
    patient_birth_date: str
    patient_sex: str
    study_date: str
    study_time: str
    accession_number: str
    study_id: str
    study_description: str
    referring_physician_name: str
    modalities: tuple[str, ...]  # ModalitiesInStudy, sorted
    series_count: int
    instance_count: int
    received_bytes: int
    stored_bytes: int
    updated_at: str  # ISO 8601 UTC of the last write that touched the study


@dataclass(frozen=True, slots=True)
class SeriesRecord:
    """Series-level attributes and counts (C-FIND SERIES level, QIDO-RS series)."""

    series_instance_uid: str
    study_instance_uid: str
    modality: str
    series_number: int | None
    series_description: str
    body_part_examined: str
    series_date: str
    series_time: str
    instance_count: int
    received_bytes: int
    stored_bytes: int
    updated_at: str


@dataclass(frozen=True, slots=True)
class Change:
    """One change-log entry; sequence numbers only grow, across restarts too."""

    sequence: int
    op: ChangeOp
    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str
    timestamp: str  # ISO 8601 UTC


@dataclass(frozen=True, slots=True)
class IndexStats:
    """Totals kept incrementally by every write, so reading them costs one get."""

    patients: int
    studies: int
    series: int
    instances: int
    received_bytes: int
    stored_bytes: int


@dataclass(frozen=True, slots=True)
class InstanceSummary:
    """What a query at IMAGE level needs of an instance: its record without the pixel layout."""

    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str
    series_instance_uid: str
    instance_number: int | None
    frames: int | None  # None without pixel data
    query: Mapping[str, str]
