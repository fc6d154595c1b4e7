"""Deleting instances, series and studies; secondary-key lookups that follow every write."""

from __future__ import annotations

import pytest

from engine.errors import NotFoundError
from engine.index import LOOKUP_LEVELS, Index, IndexStats


def _two_studies(index: Index, factory) -> list:
    entries = (
        factory.series(4, series=0)
        + factory.series(2, series=1, modality="PT")
        + factory.series(3, study=1, patient_id="PAT-2", patient_name="van der Berg^Anna", study_date="20240301")
    )
    index.put_instances(entries)
    return [e.record for e in entries]


def test_delete_instance_updates_aggregates(index: Index, factory) -> None:
    records = _two_studies(index, factory)
    removed = index.delete_instance(records[0].sop_instance_uid)
    assert removed == records[0]
    assert not index.has_instance(removed.sop_instance_uid)
    with pytest.raises(NotFoundError):
        index.get_header(removed.sop_instance_uid)
    assert index.instance_uids(removed.series_instance_uid) == [r.sop_instance_uid for r in records[1:4]]
    series = index.series_record(removed.series_instance_uid)
    assert (series.instance_count, series.stored_bytes) == (3, sum(r.stored_bytes for r in records[1:4]))
    study = index.study_record(removed.study_instance_uid)
    assert (study.series_count, study.instance_count) == (2, 5)
    assert index.patient_record(factory.patient_id).instance_count == 5
    assert index.stats().instances == 8
    with pytest.raises(NotFoundError):
        index.delete_instance(removed.sop_instance_uid)


def test_deleting_the_last_instance_drops_series_study_patient_and_keys(index: Index, factory) -> None:
    records = _two_studies(index, factory)
    pt_series = records[4].series_instance_uid
    removed = index.delete_series(pt_series)
    assert removed == records[4:6]
    with pytest.raises(NotFoundError):
        index.series_record(pt_series)
    study = index.study_record(records[0].study_instance_uid)
    assert (study.series_count, study.modalities) == (1, ("CT",))
    assert index.lookup("Modality", "PT") == []
    assert index.series_uids(study.study_instance_uid) == [records[0].series_instance_uid]

    removed = index.delete_study(records[6].study_instance_uid)
    assert removed == records[6:]
    with pytest.raises(NotFoundError):
        index.patient_record("PAT-2")
    assert index.lookup("PatientID", "PAT-2") == []
    assert index.lookup_prefix("PatientName", "VAN") == []
    assert index.lookup("StudyDate", "20240301") == []
    assert index.study_uids() == [records[0].study_instance_uid]
    assert index.stats() == IndexStats(
        1, 1, 1, 4, sum(r.received_bytes for r in records[:4]), sum(r.stored_bytes for r in records[:4])
    )

    index.delete_study(records[0].study_instance_uid)
    assert index.stats() == IndexStats(0, 0, 0, 0, 0, 0)
    assert index.study_uids() == [] and index.iter_instance_uids() == []
    assert [c.op for c in index.changes()].count("delete") == 9
    with pytest.raises(NotFoundError):
        index.delete_study(records[0].study_instance_uid)


def test_lookups_return_uids_at_their_level(index: Index, factory) -> None:
    records = _two_studies(index, factory)
    study0, study1 = records[0].study_instance_uid, records[6].study_instance_uid
    assert index.lookup("PatientID", factory.patient_id) == [study0]
    assert index.lookup("PatientID", "PAT-2") == [study1]
    assert index.lookup("PatientName", "VAN DER BERG^ANNA") == [study1]
    assert index.lookup("PatientName", "van der berg^anna^^") == [study1]
    assert index.lookup_prefix("PatientName", "van der") == [study1]
    assert index.lookup_prefix("PatientName", "v") == [study1]
    assert index.lookup_prefix("PatientName", "") == sorted([study0, study1])
    assert index.lookup("AccessionNumber", "ACC00001") == [study1]
    assert index.lookup("StudyDate", factory.study_date) == [study0]
    assert index.lookup_range("StudyDate", "20040101", "20041231") == [study0]
    assert index.lookup_range("StudyDate", "20040120") == [study1]
    assert index.lookup_range("StudyDate", "", "20240301") == sorted([study0, study1])
    assert index.lookup_range("StudyDate", "20050101", "20231231") == []
    assert index.lookup("Modality", "PT") == [records[4].series_instance_uid]
    assert index.lookup("Modality", "CT") == sorted([records[0].series_instance_uid, records[6].series_instance_uid])
    assert index.lookup("StudyInstanceUID", study1) == [r.sop_instance_uid for r in records[6:]]
    assert index.lookup("SeriesInstanceUID", records[4].series_instance_uid) == [
        r.sop_instance_uid for r in records[4:6]
    ]
    assert index.lookup("StudyInstanceUID", factory.study_uid(99)) == []
    assert index.lookup("PatientID", "nobody") == []
    assert set(LOOKUP_LEVELS) == {
        "PatientID",
        "PatientName",
        "StudyDate",
        "AccessionNumber",
        "Modality",
        "StudyInstanceUID",
        "SeriesInstanceUID",
    }
    with pytest.raises(KeyError, match="SeriesDescription is not indexed"):
        index.lookup("SeriesDescription", "AXIAL 0")


def test_lookup_does_not_confuse_a_value_with_its_prefix(index: Index, factory) -> None:
    index.put_instances(factory.series(1, study=0, patient_id="12"))
    index.put_instances(factory.series(1, study=1, patient_id="123"))
    assert index.lookup("PatientID", "12") == [factory.study_uid(0)]
    assert index.lookup_prefix("PatientID", "12") == sorted([factory.study_uid(0), factory.study_uid(1)])


def test_read_and_write_compose_in_one_transaction(index: Index, factory) -> None:
    records = _two_studies(index, factory)

    def move(w) -> int:
        w.delete_instance(records[0].sop_instance_uid)
        [outcome] = [w.put(factory.entry(factory.record(number=50)))]
        return outcome.sequence

    assert index.write(move) == index.last_sequence()
    snapshot = index.read(lambda r: (r.stats(), r.instance_uids(records[0].series_instance_uid)))
    assert snapshot[0].instances == 9
    assert snapshot[1][-1] == factory.sop_uid(0, 0, 50)
