"""The environment: persistence across reopen, schema check, read-only use, map growth, disk full."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import lmdb
import pytest

from engine.errors import ClosedError, EngineError, NotFoundError
from engine.index import SCHEMA_VERSION, Index, IndexSchemaError

REPO = Path(__file__).resolve().parents[2]


def test_reopen_keeps_everything_and_the_sequence_goes_on(tmp_path: Path, factory) -> None:
    path = tmp_path / "index"
    entries = factory.series(6)
    with Index(path) as index:
        index.put_instances(entries)
        index.delete_instance(entries[5].record.sop_instance_uid)
        stats, last = index.stats(), index.last_sequence()
    with Index(path) as index:
        assert index.stats() == stats
        assert index.last_sequence() == last == 7
        assert index.get_instance(entries[0].record.sop_instance_uid) == entries[0].record
        assert index.series_metadata(entries[0].record.series_instance_uid)[4][0] == entries[4].record
        [outcome] = index.put_instances([entries[5]])
        assert outcome.sequence == 8
        assert [c.sequence for c in index.changes()] == list(range(1, 9))


def test_closed_index_refuses_work(tmp_path: Path, factory) -> None:
    index = Index(tmp_path / "index")
    index.close()
    index.close()
    with pytest.raises(ClosedError):
        index.stats()
    with pytest.raises(ClosedError):
        index.put_instances(factory.series(1))


def test_schema_version_mismatch_is_refused_without_writing(tmp_path: Path) -> None:
    path = tmp_path / "index"
    Index(path).close()
    with lmdb.open(str(path), max_dbs=16) as env:
        meta = env.open_db(b"meta")
        with env.begin(write=True) as txn:
            txn.put(b"schema_version", b"99", db=meta)
    for readonly in (False, True):
        with pytest.raises(IndexSchemaError, match=f"schema version 99.*reads schema version {SCHEMA_VERSION}"):
            Index(path, readonly=readonly)


def test_an_environment_that_is_not_an_index_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other"
    with lmdb.open(str(path), max_dbs=4) as env:
        db = env.open_db(b"something")
        with env.begin(write=True) as txn:
            txn.put(b"k", b"v", db=db)
    with pytest.raises(IndexSchemaError, match="not a pacs-engine index"):
        Index(path)


def test_read_only_index_reads_and_refuses_writes(tmp_path: Path, factory) -> None:
    path = tmp_path / "index"
    with pytest.raises(NotFoundError):
        Index(path, readonly=True)
    entries = factory.series(3)
    with Index(path) as writer:
        writer.put_instances(entries)
        with pytest.raises(EngineError, match="already open in this process"):
            Index(path, readonly=True)
    with Index(path, readonly=True) as reader:
        assert reader.instance_uids(entries[0].record.series_instance_uid) == [
            e.record.sop_instance_uid for e in entries
        ]
        with pytest.raises(EngineError, match="read-only"):
            reader.delete_instance(entries[0].record.sop_instance_uid)


def test_map_grows_when_full_while_readers_keep_reading(tmp_path: Path, factory) -> None:
    initial = 64 * 1024
    entries = factory.series(600)
    failures: list[BaseException] = []
    stop = threading.Event()
    with Index(tmp_path / "index", map_size=initial) as index:
        index.put_instances(entries[:1])

        def read() -> None:
            try:
                # Pause between reads as a request handler would: busy-looping readers starve the writer
                # of the GIL (one wait per LMDB call) and only measure that.
                while not stop.wait(0.001):
                    assert index.get_instance(entries[0].record.sop_instance_uid) == entries[0].record
                    index.stats()
            except Exception as exc:  # noqa: BLE001 - handed to the main thread's assertion
                failures.append(exc)

        readers = [threading.Thread(target=read) for _ in range(3)]
        for thread in readers:
            thread.start()
        try:
            for start in range(1, 400, 7):
                index.put_instances(entries[start : start + 7])
            index.put_instances(entries[400:])  # one big transaction after many small ones
        finally:
            stop.set()
            for thread in readers:
                thread.join()
        assert failures == []
        assert index.map_size >= 8 * initial
        assert index.stats().instances == 600
        assert index.instance_uids(entries[0].record.series_instance_uid) == [
            e.record.sop_instance_uid for e in entries
        ]
        assert index.get_header(entries[599].record.sop_instance_uid) == (factory.prefix, factory.suffix)


_GROW_IN_ANOTHER_PROCESS = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from engine.index import Index, IndexEntry
    from engine.types import InstanceRecord

    with Index(Path(sys.argv[1]), map_size=64 * 1024) as index:
        for n in range(0, 400, 50):
            index.put_instances([
                IndexEntry(InstanceRecord(f"1.2.3.{i}", "1.2", "1.2.9", "1.2.9.1", "1.2.840.10008.1.2.1", 10, 10,
                                          f"{i:032x}", i, None, None), bytes(range(256)) * 8)
                for i in range(n, n + 50)
            ])
        print(index.map_size)
    """
)


def test_a_reader_follows_a_map_grown_by_another_process(tmp_path: Path) -> None:
    path = tmp_path / "index"
    Index(path, map_size=64 * 1024).close()
    with Index(path, map_size=64 * 1024, readonly=True) as reader:
        assert reader.stats().instances == 0
        done = subprocess.run(
            [sys.executable, "-c", _GROW_IN_ANOTHER_PROCESS, str(path)],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert int(done.stdout) >= 1 << 20
        assert reader.stats().instances == 400
        assert reader.map_size == int(done.stdout)
        assert reader.get_header("1.2.3.399") == (bytes(range(256)) * 8, b"")


_FILL_UNTIL_FULL = textwrap.dedent(
    """
    import resource, signal, sys
    from pathlib import Path
    from engine.errors import StorageFullError
    from engine.index import Index, IndexEntry
    from engine.types import InstanceRecord

    def entry(n):
        rec = InstanceRecord(f"1.2.3.{n}", "1.2.840.10008.5.1.4.1.1.2", "1.2.9", "1.2.9.1",
                             "1.2.840.10008.1.2.1", 10, 10, f"{n:032x}", n, None, None)
        header = bytes(range(256)) * 8 + n.to_bytes(4, "little")  # poorly compressible, like a real header
        return IndexEntry(rec, header)

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # so write() fails with EFBIG instead of killing us
    index = Index(Path(sys.argv[1]), map_size=1 << 20)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, hard))
    stored = 0
    try:
        while stored < 100_000:
            index.put_instances([entry(stored)])
            stored += 1
    except StorageFullError as exc:
        print("full:", exc)
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert index.stats().instances == stored, (index.stats(), stored)
    index.put_instances([entry(stored)])  # space is back: the index works on
    print("instances:", index.stats().instances, "of", stored + 1)
    """
)


def test_a_full_disk_raises_storage_full_and_the_index_survives(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", _FILL_UNTIL_FULL, str(tmp_path / "index")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("full: index at ") and "out of disk space" in lines[0]
    stored = int(lines[1].split()[1])
    assert lines[1] == f"instances: {stored} of {stored}"
    with Index(tmp_path / "index") as index:
        assert index.stats().instances == stored
