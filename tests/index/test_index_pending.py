"""Pending records: what the archive commits when it acknowledges a network instance, before it is
transcoded. Queries see them; the stored instance's record replaces them; they never replace anything."""

from __future__ import annotations

import dataclasses

from engine.index import Index, find
from engine.types import PENDING, InstanceRecord


def _pending(rec: InstanceRecord) -> InstanceRecord:
    """The pending record of `rec` as Ingestor.announce builds it: no pixels stored, nothing counted stored."""
    return dataclasses.replace(rec, layout=PENDING, codec=None, levels=(), frame_hashes=(), stored_bytes=0)


def test_a_pending_record_is_found_counted_and_not_logged(index: Index, factory) -> None:
    recs = [factory.record(number=n) for n in (1, 2)]
    outcomes = index.put_instances([factory.entry(_pending(r)) for r in recs])
    assert [o.status for o in outcomes] == ["stored", "stored"]
    assert [o.sequence for o in outcomes] == [0, 0]  # the change log waits for the stored instance
    assert index.changes() == []
    got = index.get_instance(recs[0].sop_instance_uid)
    assert got.pending and got.codec is None
    assert index.get_header(recs[0].sop_instance_uid) == (factory.prefix, factory.suffix)
    series = find(index, "SERIES", {"StudyInstanceUID": recs[0].study_instance_uid, "SeriesInstanceUID": "",
                                    "NumberOfSeriesRelatedInstances": ""})  # fmt: skip
    assert [m["NumberOfSeriesRelatedInstances"] for m in series] == [2]
    assert index.stats().instances == 2 and index.stats().stored_bytes == 0


def test_the_stored_record_replaces_the_pending_one(index: Index, factory) -> None:
    rec, other = factory.record(number=1), factory.record(number=2)
    index.put_instances([factory.entry(_pending(rec)), factory.entry(other)])
    [outcome] = index.put_instances([factory.entry(rec)])
    assert outcome.status == "stored" and outcome.previous is not None and outcome.previous.pending
    assert outcome.sequence > 0
    assert index.get_instance(rec.sop_instance_uid) == rec
    assert [(c.op, c.sop_instance_uid) for c in index.changes()] == [
        ("store", other.sop_instance_uid), ("store", rec.sop_instance_uid)]  # fmt: skip
    stats = index.stats()
    assert stats.instances == 2 and stats.series == 1
    assert stats.stored_bytes == rec.stored_bytes + other.stored_bytes  # not counted twice
    assert index.series_record(rec.series_instance_uid).instance_count == 2


def test_a_pending_record_never_replaces_a_stored_one(index: Index, factory) -> None:
    rec = factory.record(number=1)
    index.put_instances([factory.entry(rec)])
    same, changed = _pending(rec), _pending(factory.record(number=1, version=1))
    outcomes = index.put_instances([factory.entry(same), factory.entry(changed, overwrite=True)])
    assert [o.status for o in outcomes] == ["duplicate", "conflict"]
    assert index.get_instance(rec.sop_instance_uid) == rec
    assert index.last_sequence() == 1


def test_deleting_a_pending_record_leaves_no_trace(index: Index, factory) -> None:
    rec = factory.record(number=1)
    index.put_instances([factory.entry(_pending(rec))])
    index.delete_instance(rec.sop_instance_uid)
    assert index.stats().instances == 0 and index.study_uids() == []
    assert index.changes() == []  # nothing was logged as stored, so nothing is logged as deleted
