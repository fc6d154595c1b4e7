"""GroupCommitter: one writer thread, batched commits, futures that carry outcomes and errors."""

from __future__ import annotations

import dataclasses
import threading
from concurrent.futures import Future

import pytest

from engine.errors import ClosedError, InvalidUIDError, NotFoundError
from engine.index import GroupCommitter, Index, PutOutcome


def test_concurrent_submits_are_all_stored_in_fewer_transactions(index: Index, factory) -> None:
    threads, per_thread = 8, 200
    futures: list[list[Future[PutOutcome]]] = [[] for _ in range(threads)]
    entries = [factory.series(per_thread, series=t) for t in range(threads)]
    before = index.write_transactions
    with GroupCommitter(index, batch=64) as committer:

        def produce(t: int) -> None:
            for entry in entries[t]:
                futures[t].append(committer.submit(entry))

        workers = [threading.Thread(target=produce, args=(t,)) for t in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        outcomes = [f.result(timeout=60) for fs in futures for f in fs]
    total = threads * per_thread
    assert [o.status for o in outcomes] == ["stored"] * total
    assert sorted(o.sequence for o in outcomes) == list(range(1, total + 1))
    assert committer.committed == total
    assert committer.commits == index.write_transactions - before
    assert committer.commits < total
    stats = index.stats()
    assert (stats.series, stats.instances) == (threads, total)
    for t in range(threads):
        assert index.instance_uids(factory.series_uid(0, t)) == [e.record.sop_instance_uid for e in entries[t]]


def test_batches_never_exceed_the_limit(index: Index, factory) -> None:
    entries = factory.series(50)
    with GroupCommitter(index, batch=8) as committer:
        futures = [committer.submit(entry) for entry in entries]
        assert [f.result(timeout=30).status for f in futures] == ["stored"] * 50
    assert committer.commits >= 50 // 8 + 1


def test_run_executes_in_submission_order_on_the_writer_thread(index: Index, factory) -> None:
    entries = factory.series(3)
    with GroupCommitter(index) as committer:
        puts = [committer.submit(entry) for entry in entries]
        thread_name = committer.run(lambda: threading.current_thread().name)
        deleted = committer.run(lambda: index.delete_instance(entries[1].record.sop_instance_uid))
        missing = committer.run(lambda: index.delete_instance(entries[1].record.sop_instance_uid))
        assert [p.result(timeout=30).status for p in puts] == ["stored"] * 3
        assert thread_name.result(timeout=30) == "index-committer"
        assert deleted.result(timeout=30) == entries[1].record
        with pytest.raises(NotFoundError):
            missing.result(timeout=30)
    assert index.stats().instances == 2


def test_a_bad_entry_fails_alone(index: Index, factory) -> None:
    good = factory.series(20)
    bad = factory.entry(dataclasses.replace(factory.record(number=99), series_instance_uid="1.2\x003"))
    gate = threading.Event()
    with GroupCommitter(index, batch=64) as committer:
        # Hold the writer so the bad entry is queued among good ones.
        blocker = committer.run(gate.wait)
        futures = [committer.submit(e) for e in good[:10]] + [committer.submit(bad)]
        futures += [committer.submit(e) for e in good[10:]]
        gate.set()
        blocker.result(timeout=30)
        with pytest.raises(InvalidUIDError, match="NUL"):
            futures[10].result(timeout=30)
        assert [f.result(timeout=30).status for f in futures[:10] + futures[11:]] == ["stored"] * 20
    assert index.stats().instances == 20


def test_close_drains_the_queue_then_refuses(index: Index, factory) -> None:
    committer = GroupCommitter(index, batch=4)
    futures = [committer.submit(entry) for entry in factory.series(30)]
    committer.close()
    assert all(f.done() for f in futures)
    assert index.stats().instances == 30
    with pytest.raises(ClosedError):
        committer.submit(factory.entry(factory.record(number=31)))
    with pytest.raises(ClosedError):
        committer.run(index.stats)
    committer.close()


def test_storage_errors_reach_every_future(tmp_path, factory) -> None:
    index = Index(tmp_path / "index")
    committer = GroupCommitter(index)
    index.close()
    futures = [committer.submit(entry) for entry in factory.series(3)]
    committer.close()
    for future in futures:
        with pytest.raises(ClosedError):
            future.result(timeout=30)


def test_a_future_cancelled_while_queued_is_not_stored(index: Index, factory) -> None:
    entries = factory.series(3)
    gate = threading.Event()
    with GroupCommitter(index) as committer:
        committer.run(gate.wait)
        futures = [committer.submit(e) for e in entries]
        assert futures[1].cancel()
        gate.set()
        assert futures[2].result(timeout=30).status == "stored"
    assert index.instance_uids(entries[0].record.series_instance_uid) == [
        entries[0].record.sop_instance_uid,
        entries[2].record.sop_instance_uid,
    ]


def test_before_commit_runs_before_each_batch_and_its_failure_fails_the_batch(tmp_path, factory) -> None:  # type: ignore[no-untyped-def]
    from engine.index import GroupCommitter, Index, IndexEntry

    calls: list[int] = []
    with Index(tmp_path / "idx") as index:
        committer = GroupCommitter(index, before_commit=lambda: calls.append(index.stats().instances))
        first = committer.submit(IndexEntry(factory.record(), b"p", b"s")).result(timeout=30)
        assert first.status == "stored"
        assert calls == [0], "the hook runs before the transaction that stores the entry"

        def failing() -> None:
            raise OSError(5, "pixel store sync failed")

        committer._before_commit = failing
        future = committer.submit(IndexEntry(factory.record(), b"p", b"s"))
        with pytest.raises(OSError, match="sync failed"):
            future.result(timeout=30)
        committer.close()
        assert index.stats().instances == 1, "nothing is committed when the hook fails"
