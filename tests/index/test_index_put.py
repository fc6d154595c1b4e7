"""Putting instances: outcomes, hierarchy, ordering, aggregates, totals and the change log."""

from __future__ import annotations

import dataclasses

import pytest

from engine.errors import InvalidUIDError, NotFoundError
from engine.index import Index, IndexStats


def test_put_then_read_back_record_and_header(index: Index, factory) -> None:
    rec = factory.record()
    [outcome] = index.put_instances([factory.entry(rec)])
    assert outcome.status == "stored"
    assert outcome.sequence == 1
    assert index.get_instance(rec.sop_instance_uid) == rec
    assert index.get_header(rec.sop_instance_uid) == (factory.prefix, factory.suffix)
    assert index.has_instance(rec.sop_instance_uid)
    assert not index.has_instance(factory.sop_uid(9, 9, 9))


def test_duplicate_writes_nothing(index: Index, factory) -> None:
    rec = factory.record()
    index.put_instances([factory.entry(rec)])
    [outcome] = index.put_instances([factory.entry(rec)])
    assert outcome.status == "duplicate"
    assert outcome.sequence == 0
    assert index.last_sequence() == 1
    assert index.stats().instances == 1


def test_conflict_keeps_the_stored_instance_and_commits_the_others(index: Index, factory) -> None:
    first = factory.record(number=1)
    index.put_instances([factory.entry(first)])
    changed = factory.record(number=1, version=1)
    other = factory.record(number=2)
    conflict, stored = index.put_instances([factory.entry(changed), factory.entry(other)])
    assert conflict.status == "conflict"
    assert first.digest in conflict.reason and changed.digest in conflict.reason
    assert stored.status == "stored"
    assert index.get_instance(first.sop_instance_uid).digest == first.digest
    assert index.stats().instances == 2


def test_replace_returns_the_previous_record(index: Index, factory) -> None:
    first = factory.record(number=1)
    index.put_instances([factory.entry(first)])
    newer = factory.record(number=1, version=1)
    [outcome] = index.put_instances([factory.entry(newer, overwrite=True)])
    assert outcome.status == "replaced"
    assert outcome.previous == first
    assert index.get_instance(first.sop_instance_uid) == newer
    stats = index.stats()
    assert (stats.instances, stats.stored_bytes) == (1, newer.stored_bytes)
    assert [c.op for c in index.changes()] == ["store", "replace"]


def test_same_sop_twice_in_one_batch_behaves_as_sequential(index: Index, factory) -> None:
    a = factory.record(number=1)
    b = factory.record(number=1, version=1)
    outcomes = index.put_instances(
        [factory.entry(a), factory.entry(a), factory.entry(b), factory.entry(b, overwrite=True)]
    )
    assert [o.status for o in outcomes] == ["stored", "duplicate", "conflict", "replaced"]
    assert outcomes[3].previous == a
    assert index.get_instance(a.sop_instance_uid) == b
    assert index.stats().instances == 1
    assert index.series_record(a.series_instance_uid).instance_count == 1


def test_series_cannot_move_to_another_study(index: Index, factory) -> None:
    index.put_instances([factory.entry(factory.record(number=1))])
    stray = factory.record(number=2, study_uid=factory.study_uid(5))
    [outcome] = index.put_instances([factory.entry(stray)])
    assert outcome.status == "rejected"
    assert factory.study_uid(5) in outcome.reason
    assert not index.has_instance(stray.sop_instance_uid)
    with pytest.raises(NotFoundError):
        index.study_record(factory.study_uid(5))


def test_replacing_the_only_instance_may_move_its_series(index: Index, factory) -> None:
    rec = factory.record(number=1)
    index.put_instances([factory.entry(rec)])
    moved = dataclasses.replace(factory.record(number=1, version=1, study_uid=factory.study_uid(5)))
    [outcome] = index.put_instances([factory.entry(moved, overwrite=True)])
    assert outcome.status == "replaced"
    assert index.study_uids() == [factory.study_uid(5)]
    assert index.series_record(rec.series_instance_uid).study_instance_uid == factory.study_uid(5)


def test_instances_listed_by_instance_number_then_uid(index: Index, factory) -> None:
    numbers = [10, 2, None, -3, 1, 2, 100_000_000_000]
    records = []
    for i, n in enumerate(numbers):
        records.append(factory.record(number=n, sop=factory.sop_uid(0, 0, 1000 + i)))
    index.put_instances([factory.entry(r) for r in records])
    expected = sorted(records, key=lambda r: (r.instance_number is None, r.instance_number or 0, r.sop_instance_uid))
    series = records[0].series_instance_uid
    assert index.instance_uids(series) == [r.sop_instance_uid for r in expected]
    assert [m[0] for m in index.series_metadata(series)] == expected
    assert all(m[1:] == (factory.prefix, factory.suffix) for m in index.series_metadata(series))


def test_aggregates_after_puts(index: Index, factory) -> None:
    entries = factory.series(5, series=0) + factory.series(3, series=1, modality="PT") + factory.series(2, study=1)
    index.put_instances(entries)
    records = [e.record for e in entries]
    study0 = index.study_record(factory.study_uid(0))
    assert (study0.series_count, study0.instance_count) == (2, 8)
    assert study0.modalities == ("CT", "PT")
    assert study0.patient_id == factory.patient_id and study0.study_date == factory.study_date
    assert study0.received_bytes == sum(r.received_bytes for r in records[:8])
    series1 = index.series_record(factory.series_uid(0, 1))
    assert (series1.modality, series1.series_number, series1.instance_count) == ("PT", 2, 3)
    patient = index.patient_record(factory.patient_id)
    assert (patient.study_count, patient.series_count, patient.instance_count) == (2, 3, 10)
    assert index.stats() == IndexStats(
        patients=1,
        studies=2,
        series=3,
        instances=10,
        received_bytes=sum(r.received_bytes for r in records),
        stored_bytes=sum(r.stored_bytes for r in records),
    )
    assert index.study_uids() == sorted([factory.study_uid(0), factory.study_uid(1)])
    assert index.series_uids(factory.study_uid(0)) == sorted([factory.series_uid(0, 0), factory.series_uid(0, 1)])
    assert index.patient_study_uids(factory.patient_id) == index.study_uids()
    assert sorted(index.iter_instance_uids()) == sorted(r.sop_instance_uid for r in records)
    assert index.get_instances([records[3].sop_instance_uid, records[0].sop_instance_uid]) == [records[3], records[0]]


def test_later_instances_fill_empty_study_attributes_and_keys(index: Index, factory) -> None:
    index.put_instances([factory.entry(factory.record(number=1, accession="", study_date=""))])
    assert index.lookup("AccessionNumber", "ACC00000") == []
    index.put_instances([factory.entry(factory.record(number=2))])
    study = index.study_record(factory.study_uid(0))
    assert (study.accession_number, study.study_date) == ("ACC00000", factory.study_date)
    assert index.lookup("AccessionNumber", "ACC00000") == [factory.study_uid(0)]
    assert index.lookup("StudyDate", factory.study_date) == [factory.study_uid(0)]


def test_missing_things_raise_not_found(index: Index, factory) -> None:
    rec = factory.record()
    index.put_instances([factory.entry(rec)])
    for call in (
        lambda: index.get_instance(factory.sop_uid(1, 1, 1)),
        lambda: index.get_header(factory.sop_uid(1, 1, 1)),
        lambda: index.get_instances([rec.sop_instance_uid, factory.sop_uid(1, 1, 1)]),
        lambda: index.study_record(factory.study_uid(1)),
        lambda: index.series_uids(factory.study_uid(1)),
        lambda: index.instance_uids(factory.series_uid(1, 1)),
        lambda: index.series_metadata(factory.series_uid(1, 1)),
        lambda: index.patient_record("nobody"),
    ):
        with pytest.raises(NotFoundError):
            call()


@pytest.mark.parametrize("bad", ["", "1.2.3\x004", "1.2." + "9" * 200, "1.2.\u00e9"])
def test_unusable_uids_are_refused_before_writing(index: Index, factory, bad: str) -> None:
    rec = dataclasses.replace(factory.record(), sop_instance_uid=bad)
    with pytest.raises(InvalidUIDError):
        index.put_instances([factory.entry(factory.record(number=7)), factory.entry(rec)])
    assert index.stats().instances == 0  # the whole transaction was aborted


def test_change_log_is_monotonic_and_pages(index: Index, factory) -> None:
    entries = factory.series(5)
    index.put_instances(entries[:3])
    index.put_instances(entries[3:])
    index.delete_instance(entries[0].record.sop_instance_uid)
    changes = index.changes()
    assert [c.sequence for c in changes] == [1, 2, 3, 4, 5, 6]
    assert [c.op for c in changes] == ["store"] * 5 + ["delete"]
    assert changes[-1].sop_instance_uid == entries[0].record.sop_instance_uid
    assert changes[-1].series_instance_uid == entries[0].record.series_instance_uid
    assert changes[-1].study_instance_uid == entries[0].record.study_instance_uid
    assert changes[0].timestamp.endswith("Z") and changes[0].timestamp <= changes[-1].timestamp
    assert [c.sequence for c in index.changes(since=2, limit=2)] == [3, 4]
    assert index.changes(since=6) == []
    assert index.last_sequence() == 6
