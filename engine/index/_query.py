"""Query over the index at PATIENT / STUDY / SERIES / IMAGE level: candidates from the secondary keys, then
every condition checked against the stored records (PS3.4 C.2.2.2 via _match); pixel data is never read.

The one matcher of the engine: C-FIND and QIDO-RS both call `find`.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterator, Mapping
from typing import Literal

from engine.errors import NotFoundError
from engine.index._index import Index
from engine.index._match import Condition, InvalidQueryError, parse_condition
from engine.index._model import InstanceSummary, PatientRecord, SeriesRecord, StudyRecord
from engine.index._read import IndexReader
from engine.types import InstanceRecord

LOGGER = logging.getLogger(__name__)

Level = Literal["PATIENT", "STUDY", "SERIES", "IMAGE"]
Model = Literal["PATIENT", "STUDY"]
Match = dict[str, str | int]

LEVELS: tuple[str, ...] = ("PATIENT", "STUDY", "SERIES", "IMAGE")
MODEL_LEVELS: Mapping[str, tuple[str, ...]] = {"PATIENT": LEVELS, "STUDY": LEVELS[1:]}
# Keys that are never matched (PS3.4 C.2.2.2: Specific Character Set describes the identifier; the others
# steer the query itself).
NOT_MATCHED = frozenset({"SpecificCharacterSet", "QueryRetrieveLevel", "RetrieveAETitle", "InstanceAvailability",
                         "TimezoneOffsetFromUTC"})
BATCH = 256  # candidates checked per read transaction: short transactions, early stop on a limit or cancel
# Study attributes a lower level repeats (relational queries: a series query may name the patient).
_STUDY_KEYS = ("PatientID", "PatientName", "AccessionNumber", "StudyDate")
_DEPTH: Mapping[str, int] = {name: depth for depth, name in enumerate(LEVELS)}
_KEY_AT_DEPTH = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID")  # each level's record key, above IMAGE

# The level of the information model each attribute belongs to (PS3.4 C.6.1.1 / C.6.2.1; PS3.3 places
# General Equipment, Frame of Reference and the performed procedure step in the series). A query fills
# one of its own level or above that the level's record lacks from the first instance below, since every
# instance repeats it. One of a lower level describes the records below, not this one: it is matched
# against them (a study matches Modality=SR when one of its series does) and answered empty, instead of
# with one arbitrary instance's value. These are also the only keys the index can match: a keyword not
# listed is not kept in any record, so a value given for it is not matched (see unsupported_keys).
ATTRIBUTE_LEVELS: Mapping[str, Level] = {
    **dict.fromkeys(
        ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
         "NumberOfPatientRelatedStudies", "NumberOfPatientRelatedSeries", "NumberOfPatientRelatedInstances"),
        "PATIENT"),
    **dict.fromkeys(
        ("StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber", "ReferringPhysicianName", "StudyID",
         "StudyDescription", "PatientAge", "ModalitiesInStudy", "NumberOfStudyRelatedSeries",
         "NumberOfStudyRelatedInstances"),
        "STUDY"),
    **dict.fromkeys(
        ("SeriesInstanceUID", "SeriesDate", "SeriesTime", "Modality", "SeriesDescription", "SeriesNumber",
         "BodyPartExamined", "ProtocolName", "Laterality", "PerformingPhysicianName", "Manufacturer",
         "ManufacturerModelName", "InstitutionName", "InstitutionalDepartmentName", "StationName",
         "FrameOfReferenceUID", "PerformedProcedureStepStartDate", "NumberOfSeriesRelatedInstances"),
        "SERIES"),
    **dict.fromkeys(
        ("SOPInstanceUID", "SOPClassUID", "InstanceNumber", "AcquisitionDate", "AcquisitionNumber",
         "ContentDate", "ContentTime", "NumberOfFrames", "Rows", "Columns", "BitsAllocated"),
        "IMAGE"),
}  # fmt: skip


def unsupported_keys(criteria: Mapping[str, str]) -> list[str]:
    """Keys given a value that the index cannot match, since no record keeps them (PatientComments, ...).

    PS3.4 C.2.2.1.3 and C.4.1.1.3.2: an optional key an SCP does not support for matching is ignored for
    matching and answered as a return key; C-FIND says so with the pending status FF01. Matching it against
    an absent value instead would drop every record.
    """
    return sorted(
        keyword
        for keyword, value in criteria.items()
        if keyword not in ATTRIBUTE_LEVELS and keyword not in NOT_MATCHED and parse_condition(keyword, value) is not None
    )


def belongs_below(keyword: str, level: str) -> bool:
    """Whether `keyword` is an attribute of a level below `level` (unknown keywords are not)."""
    own = ATTRIBUTE_LEVELS.get(keyword)
    return own is not None and _DEPTH[own] > _DEPTH[level]


def study_match(s: StudyRecord) -> Match:
    """The attributes of a study record under their DICOM keywords, computed ones included."""
    return {
        "PatientID": s.patient_id,
        "PatientName": s.patient_name,
        "PatientBirthDate": s.patient_birth_date,
        "PatientSex": s.patient_sex,
        "StudyInstanceUID": s.study_instance_uid,
        "StudyDate": s.study_date,
        "StudyTime": s.study_time,
        "AccessionNumber": s.accession_number,
        "StudyID": s.study_id,
        "StudyDescription": s.study_description,
        "ReferringPhysicianName": s.referring_physician_name,
        "ModalitiesInStudy": "\\".join(s.modalities),
        "NumberOfStudyRelatedSeries": s.series_count,
        "NumberOfStudyRelatedInstances": s.instance_count,
    }


def series_match(s: SeriesRecord) -> Match:
    return {
        "StudyInstanceUID": s.study_instance_uid,
        "SeriesInstanceUID": s.series_instance_uid,
        "Modality": s.modality,
        "SeriesNumber": "" if s.series_number is None else str(s.series_number),
        "SeriesDescription": s.series_description,
        "BodyPartExamined": s.body_part_examined,
        "SeriesDate": s.series_date,
        "SeriesTime": s.series_time,
        "NumberOfSeriesRelatedInstances": s.instance_count,
    }


def patient_match(p: PatientRecord) -> Match:
    return {
        "PatientID": p.patient_id,
        "PatientName": p.patient_name,
        "PatientBirthDate": p.patient_birth_date,
        "PatientSex": p.patient_sex,
        "NumberOfPatientRelatedStudies": p.study_count,
        "NumberOfPatientRelatedSeries": p.series_count,
        "NumberOfPatientRelatedInstances": p.instance_count,
    }


def instance_match(r: InstanceRecord | InstanceSummary) -> Match:
    out: Match = dict(r.query)
    out.pop("SpecificCharacterSet", None)  # values are str already: the response names its own charset
    out.update(
        {
            "StudyInstanceUID": r.study_instance_uid,
            "SeriesInstanceUID": r.series_instance_uid,
            "SOPInstanceUID": r.sop_instance_uid,
            "SOPClassUID": r.sop_class_uid,
            "InstanceNumber": "" if r.instance_number is None else str(r.instance_number),
        }
    )
    frames = r.frames if isinstance(r, InstanceSummary) else (r.pixel.frames if r.pixel is not None else None)
    if frames is not None:
        out["NumberOfFrames"] = str(frames)
    return out


def parse_criteria(criteria: Mapping[str, str]) -> dict[str, Condition]:
    """Non-universal conditions by keyword, unsupported keys left out (they match everything, see
    unsupported_keys). Raises InvalidQueryError for a malformed date/time key."""
    out: dict[str, Condition] = {}
    for keyword, value in criteria.items():
        if keyword in NOT_MATCHED or keyword not in ATTRIBUTE_LEVELS:
            continue
        condition = parse_condition(keyword, value)
        if condition is not None:
            out[keyword] = condition
    return out


def check_level(level: str, model: str) -> Level:
    """`level` upper-cased if the model has it; raises InvalidQueryError otherwise."""
    if model not in MODEL_LEVELS:
        raise InvalidQueryError(f"query model {model!r} is not PATIENT or STUDY")
    name = level.upper().strip()
    if name not in MODEL_LEVELS[model]:
        raise InvalidQueryError(
            f"query level {level!r} is not one of {', '.join(MODEL_LEVELS[model])} of the {model} root model"
        )
    return name  # type: ignore[return-value]


# Keys whose one exact value names a handful of records at a level: a patient's studies, a study's series.
_NARROWING: Mapping[Level, tuple[str, ...]] = {
    "PATIENT": ("PatientID",),
    "STUDY": ("StudyInstanceUID", "PatientID", "AccessionNumber"),
    "SERIES": ("SeriesInstanceUID", "StudyInstanceUID"),
    "IMAGE": ("SOPInstanceUID",),
}


def is_narrow(level: str, criteria: Mapping[str, str]) -> bool:
    """Whether a query at `level` looks its candidates up by one exact value of a narrowing key (what a
    viewer asks when it opens a patient or a study), so `find` reads a few records, not a whole level.

    False for anything `find` would refuse: it says why when it runs.
    """
    keys = _NARROWING.get(level.upper().strip(), ())  # type: ignore[call-overload]
    try:
        conditions = parse_criteria({k: criteria[k] for k in keys if k in criteria})
    except InvalidQueryError:
        return False
    return any(len(c.singles or ()) == 1 for c in conditions.values())


def instances_by_unique_keys(index: Index, criteria: Mapping[str, str]) -> list[str] | None:
    """The SOP Instance UIDs that unique keys down to the series select (a C-GET / C-MOVE identifier of a
    study or a series, PS3.4 C.4.2.2.1), in the order `find` yields them at IMAGE level.

    Read from the index's child lists: each series and study is checked against the keys, not each
    instance (`find` decodes every instance record of a 300-slice series to match it: 11 ms, a third of
    the time before a retrieve's first sub-operation). None when `criteria` holds anything else (an
    instance-level key, attributes other than the unique keys): ask `find`.
    """
    try:
        conditions = parse_criteria(criteria)
    except InvalidQueryError:
        return None
    series_key, study_key = conditions.get("SeriesInstanceUID"), conditions.get("StudyInstanceUID")
    patient_key = conditions.get("PatientID")
    if not set(conditions) <= {"PatientID", "StudyInstanceUID", "SeriesInstanceUID"}:
        return None
    named = series_key if series_key is not None else study_key
    if named is None or named.singles is None:
        return None
    singles = named.singles

    def read(reader: IndexReader) -> list[str]:
        if series_key is not None:
            candidates = sorted(set(singles))
        else:
            candidates = sorted({series for study in singles for series in _children(reader, study)})
        sops: list[str] = []
        for uid in candidates:
            try:
                series = reader.series_record(uid)
                study = reader.study_record(series.study_instance_uid)
            except NotFoundError:
                continue
            if study_key is not None and not study_key.matches(series.study_instance_uid):
                continue
            if patient_key is not None and not patient_key.matches(study.patient_id):
                continue
            sops.extend(_instances_of(reader, uid))
        return sops

    return index.read(read)


# --- candidates from the secondary keys ---------------------------------------------------------------


def _intersect(sets: list[set[str]]) -> set[str] | None:
    if not sets:
        return None
    out = set(sets[0])
    for s in sets[1:]:
        out &= s
    return out


def _keyed(reader: IndexReader, keyword: str, condition: Condition) -> set[str] | None:
    """UIDs the index gives for one condition on an indexed value key (a superset of the matches), or None."""
    ranges = condition.ranges if keyword == "StudyDate" else None
    if ranges is not None:
        # Dates are indexed as received: an ACR-NEMA 2024.03.15 sorts apart from 20240315, so its form of
        # each bound is looked up too (the bounds are 8 canonical digits; "" is an open end).
        bounds = [*ranges, *((_dotted(low), _dotted(high)) for low, high in ranges)]
        return {uid for low, high in bounds for uid in reader.lookup_range(keyword, low, high)}
    singles = condition.singles
    if singles is not None:
        return {uid for value in singles for uid in reader.lookup(keyword, value)}
    if keyword in ("PatientID", "PatientName", "AccessionNumber"):
        prefixes = condition.literal_prefixes
        if prefixes is not None:
            return {uid for prefix in prefixes for uid in reader.lookup_prefix(keyword, prefix)}
    return None


def _dotted(date: str) -> str:
    """A canonical date bound in the ACR-NEMA form the index keeps such dates in ("" stays open)."""
    return f"{date[:4]}.{date[4:6]}.{date[6:]}" if date else ""


def _study_candidates(reader: IndexReader, conditions: Mapping[str, Condition]) -> set[str] | None:
    sets: list[set[str]] = []
    uids = conditions.get("StudyInstanceUID")
    if uids is not None and uids.singles is not None:
        sets.append(set(uids.singles))
    for keyword in _STUDY_KEYS:
        if keyword in conditions:
            found = _keyed(reader, keyword, conditions[keyword])
            if found is not None:
                sets.append(found)
    for keyword in ("ModalitiesInStudy", "Modality"):  # a study's own, and its series' (relational)
        if keyword in conditions:
            series = _keyed(reader, "Modality", conditions[keyword])
            if series is not None:
                sets.append({_series_study(reader, uid) for uid in series} - {""})
    series_uids, sops = conditions.get("SeriesInstanceUID"), conditions.get("SOPInstanceUID")
    if series_uids is not None and series_uids.singles is not None:
        sets.append({_series_study(reader, uid) for uid in series_uids.singles} - {""})
    if sops is not None and sops.singles is not None:
        sets.append({_instance_parents(reader, sop)[0] for sop in sops.singles} - {""})
    return _intersect(sets)


def _series_study(reader: IndexReader, series: str) -> str:
    try:
        return reader.series_record(series).study_instance_uid
    except NotFoundError:
        return ""


def _instance_parents(reader: IndexReader, sop: str) -> tuple[str, str]:
    """(study, series) of an instance; ("", "") when it is not stored."""
    try:
        summary = reader.get_instance_summary(sop)
    except NotFoundError:
        return "", ""
    return summary.study_instance_uid, summary.series_instance_uid


def _series_candidates(reader: IndexReader, conditions: Mapping[str, Condition]) -> list[str] | None:
    sets: list[set[str]] = []
    uids = conditions.get("SeriesInstanceUID")
    if uids is not None and uids.singles is not None:
        sets.append(set(uids.singles))
    if "Modality" in conditions:
        found = _keyed(reader, "Modality", conditions["Modality"])
        if found is not None:
            sets.append(found)
    sops = conditions.get("SOPInstanceUID")
    if sops is not None and sops.singles is not None:
        sets.append({_instance_parents(reader, sop)[1] for sop in sops.singles} - {""})
    studies = _study_candidates(reader, conditions)
    if studies is not None and (not sets or len(studies) < min(len(s) for s in sets)):
        sets.append({series for study in sorted(studies) for series in _children(reader, study)})
    found_set = _intersect(sets)
    return None if found_set is None else sorted(found_set)


def _children(reader: IndexReader, study: str) -> list[str]:
    try:
        return reader.series_uids(study)
    except NotFoundError:
        return []


def _instances_of(reader: IndexReader, series: str) -> list[str]:
    try:
        return reader.instance_uids(series)
    except NotFoundError:
        return []


def candidates(reader: IndexReader, level: Level, conditions: Mapping[str, Condition]) -> list[str]:
    """Ordered keys worth checking at `level` (patient IDs, study, series or SOP Instance UIDs).

    Uses the index's keys when a condition allows it; otherwise lists the whole level.
    """
    if level == "PATIENT":
        return _patient_candidates(reader, conditions)
    if level == "STUDY":
        studies = _study_candidates(reader, conditions)
        return reader.study_uids() if studies is None else sorted(studies)
    series = _series_candidates(reader, conditions)
    if level == "SERIES":
        if series is None:
            return [s for study in reader.study_uids() for s in _children(reader, study)]
        return series
    sops = conditions.get("SOPInstanceUID")
    if sops is not None and sops.singles is not None:
        return sorted(set(sops.singles))
    if series is None:
        series = [s for study in reader.study_uids() for s in _children(reader, study)]
    return [sop for s in series for sop in _instances_of(reader, s)]


def _patient_candidates(reader: IndexReader, conditions: Mapping[str, Condition]) -> list[str]:
    ids = conditions.get("PatientID")
    if ids is not None and ids.singles is not None:
        return sorted(set(ids.singles))
    studies = _study_candidates(reader, conditions)
    uids = reader.study_uids() if studies is None else sorted(studies)
    found: set[str] = set()
    for uid in uids:
        try:
            found.add(reader.study_record(uid).patient_id)
        except NotFoundError:
            continue
    return sorted(found)


# --- checking candidates ------------------------------------------------------------------------------


class _Checker:
    """Builds each candidate's attributes in one read transaction and applies every condition.

    A condition on an attribute of a lower level (see ATTRIBUTE_LEVELS) holds when some record below
    the candidate meets it, together with the other lower-level conditions: a study matches Modality=CT
    with InstanceNumber=1 when one of its CT series holds an instance numbered 1.
    """

    def __init__(self, reader: IndexReader, level: Level, conditions: Mapping[str, Condition],
                 fields: Collection[str]) -> None:
        self._reader = reader
        self._level = level
        self._own = {k: c for k, c in conditions.items() if not belongs_below(k, level)}
        # conditions on the levels below, by depth (1 study .. 3 image); the deepest one ends the descent
        self._below: dict[int, dict[str, Condition]] = {}
        for keyword, condition in conditions.items():
            if belongs_below(keyword, level):
                self._below.setdefault(_DEPTH[ATTRIBUTE_LEVELS[keyword]], {})[keyword] = condition
        # Keys no record holds (Retrieve AE Title, ...) must not send every match looking for them.
        self._wanted = (set(conditions) | set(fields)) - NOT_MATCHED
        self._studies: dict[str, Match] = {}
        self._series_matches: dict[str, Match] = {}

    def match(self, key: str) -> Match | None:
        """The attributes of `key` if it exists and matches every condition, else None."""
        try:
            attrs = self._attributes(key)
        except NotFoundError:
            return None  # removed since the candidates were listed
        missing = self._wanted - attrs.keys()
        if missing:
            below = {k for k in missing if belongs_below(k, self._level)}
            extra = self._representative(attrs) if missing - below else {}
            for keyword in missing:
                attrs[keyword] = "" if keyword in below else extra.get(keyword, "")
        for keyword, condition in self._own.items():
            if not condition.matches(attrs.get(keyword)):
                return None
        if self._below and not self._below_matches(attrs):
            return None
        return attrs

    # -- conditions on the levels below ----------------------------------------------------------------
    def _below_matches(self, attrs: Match) -> bool:
        depth = _DEPTH[self._level]
        return self._any_below(depth, str(attrs[_KEY_AT_DEPTH[depth]]))

    def _any_below(self, depth: int, uid: str) -> bool:
        """Whether a record one level below the record `uid` at `depth` meets the conditions from there down."""
        try:
            children = self._children_of(depth, uid)
        except NotFoundError:
            return False  # removed since the query began
        return any(self._descend(depth + 1, child) for child in children)

    def _descend(self, depth: int, uid: str) -> bool:
        """Whether the record `uid` at `depth` meets the lower-level conditions of its depth and has a record
        below it that meets the deeper ones."""
        conditions = self._below.get(depth, {})
        r = self._reader
        try:
            if depth == 1:
                attrs = study_match(r.study_record(uid))
            elif depth == 2:
                attrs = series_match(r.series_record(uid))
            else:
                attrs = instance_match(r.get_instance_summary(uid))
        except NotFoundError:
            return False  # removed since the query began
        if depth < 3 and set(conditions) - attrs.keys():
            attrs = {**self._first_query(depth, uid), **attrs}
        if not all(condition.matches(attrs.get(keyword)) for keyword, condition in conditions.items()):
            return False
        return depth >= max(self._below) or self._any_below(depth, uid)

    def _children_of(self, depth: int, uid: str) -> list[str]:
        """The records one level below the record `uid` at `depth` (0 patient, 1 study, 2 series), in order."""
        if depth == 0:
            return self._reader.patient_study_uids(uid)
        return _children(self._reader, uid) if depth == 1 else _instances_of(self._reader, uid)

    def _first_query(self, depth: int, uid: str) -> Mapping[str, str]:
        """Query values of the first instance below the record `uid` at `depth`: the attributes of that record
        or above which its own record lacks, and which every instance below repeats; {} without one."""
        try:
            while depth < 3:
                uid, depth = self._children_of(depth, uid)[0], depth + 1
            return self._reader.get_instance_summary(uid).query
        except (NotFoundError, IndexError):
            return {}

    # -- the candidate's own attributes ----------------------------------------------------------------
    def _study(self, uid: str) -> Match:
        found = self._studies.get(uid)
        if found is None:
            found = self._studies[uid] = study_match(self._reader.study_record(uid))
        return dict(found)

    def _attributes(self, key: str) -> Match:
        r = self._reader
        if self._level == "PATIENT":
            return patient_match(r.patient_record(key))
        if self._level == "STUDY":
            return self._study(key)
        if self._level == "SERIES":
            series = r.series_record(key)
            return {**self._study(series.study_instance_uid), **series_match(series)}
        record = r.get_instance_summary(key)
        return {**self._series(record.series_instance_uid), **instance_match(record)}

    def _series(self, uid: str) -> Match:
        """Study and series attributes of a series, decoded once per query (an IMAGE query lists many)."""
        found = self._series_matches.get(uid)
        if found is None:
            series = self._reader.series_record(uid)
            found = self._series_matches[uid] = {**self._study(series.study_instance_uid), **series_match(series)}
        return dict(found)

    def _representative(self, attrs: Match) -> Mapping[str, str]:
        """Query values of the first instance below a patient, study or series (see _first_query)."""
        if self._level == "IMAGE":
            return {}  # an instance's own query values are all there is
        depth = _DEPTH[self._level]
        return self._first_query(depth, str(attrs[_KEY_AT_DEPTH[depth]]))


def find(
    index: Index,
    level: str,
    criteria: Mapping[str, str],
    *,
    model: str = "STUDY",
    limit: int | None = None,
    offset: int = 0,
    fields: Collection[str] = (),
) -> Iterator[Match]:
    """Records at `level` whose attributes match every key of `criteria` (DICOM keyword -> query value).

    Yields one dict per match, in a stable order (patients by ID, studies and series by UID, instances in
    series order), keyed by DICOM keyword: every attribute the level's record holds (upper levels included,
    so relational queries work), the computed counts as int (NumberOf...Related..., ModalitiesInStudy as
    "CT\\MR"), and every keyword of `criteria` and `fields`: from the first instance below when the level's
    record lacks one of its level or above, "" for one of a lower level (matched against the records
    below, see ATTRIBUTE_LEVELS) or that nothing has. `offset` matches are skipped and at most `limit`
    yielded.
    Each batch of candidates is read in its own short transaction, never held across a yield.

    Raises InvalidQueryError for an unknown level or model, or a malformed date/time key value.
    """
    checked_level = check_level(level, model)
    conditions = parse_criteria(criteria)
    if offset < 0 or (limit is not None and limit < 0):
        raise InvalidQueryError(f"offset {offset} and limit {limit} must not be negative")
    keys = index.read(lambda r: candidates(r, checked_level, conditions))
    skip, remaining = offset, limit
    for start in range(0, len(keys), BATCH):
        if remaining is not None and remaining <= 0:
            return
        batch = keys[start : start + BATCH]

        def check(reader: IndexReader, batch: list[str] = batch) -> list[Match]:
            checker = _Checker(reader, checked_level, conditions, fields)
            return [m for m in map(checker.match, batch) if m is not None]

        for found in index.read(check):
            if skip:
                skip -= 1
                continue
            if remaining is not None:
                if remaining <= 0:
                    return
                remaining -= 1
            yield found
