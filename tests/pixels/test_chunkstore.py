"""Conformance tests every ChunkStore backend passes (StoreTests), run here for the local backend."""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from engine.errors import NotFoundError, StorageFullError
from engine.pixels import ChunkStore, LocalChunkStore, _chunkstore
from engine.pixels._fdcache import FdCache


class StoreTests:
    """Subclass with a `store` fixture yielding an empty backend."""

    @pytest.fixture
    def store(self) -> Iterator[ChunkStore]:
        raise NotImplementedError("a backend test class provides the store fixture")

    def test_is_a_chunk_store(self, store: ChunkStore) -> None:
        assert isinstance(store, ChunkStore)

    def test_put_get(self, store: ChunkStore) -> None:
        store.put("a/b/zarr.json", b'{"x":1}')
        assert store.get("a/b/zarr.json") == b'{"x":1}'
        assert store.size("a/b/zarr.json") == 7
        store.put("a/b/zarr.json", b"{}")
        assert store.get("a/b/zarr.json") == b"{}"

    def test_missing(self, store: ChunkStore) -> None:
        assert store.size("nope") is None
        with pytest.raises(NotFoundError, match="nope"):
            store.get("nope")
        with pytest.raises(NotFoundError, match="x/nope"):
            store.get_range("x/nope", 0, 1)
        assert store.list_dir("x") == []
        assert store.tree_nbytes("x") == 0
        assert store.delete_tree("x") == 0

    def test_ranges(self, store: ChunkStore) -> None:
        data = bytes(range(256)) * 4
        store.put_tree("t", [("f", [data[:100], data[100:]])])
        assert store.get_range("t/f", 10, 20) == data[10:30]
        assert store.get_ranges("t/f", [(0, 3), (1000, 24), (1020, 10)]) == [
            data[:3],
            data[1000:],
            data[1020:],
        ]
        assert store.get_range("t/f", 2000, 5) == b""
        with pytest.raises(ValueError):
            store.get_range("t/f", -1, 5)

    def test_put_tree(self, store: ChunkStore) -> None:
        store.put_tree(
            "ab/1.2", [("zarr.json", [b"{}"]), ("0/c/0/0/0", [b"abc", b"def"]), ("0/zarr.json", [b"[]"])]
        )
        assert store.list_dir("") == ["ab"]
        assert store.list_dir("ab") == ["1.2"]
        assert store.list_dir("ab/1.2") == ["0", "zarr.json"]
        assert store.get("ab/1.2/0/c/0/0/0") == b"abcdef"
        assert store.tree_nbytes("ab/1.2") == 10
        assert store.incomplete_trees("ab") == []

    def test_put_tree_refuses_existing(self, store: ChunkStore) -> None:
        store.put_tree("ab/1.2", [("zarr.json", [b"old"])])
        with pytest.raises(FileExistsError):
            store.put_tree("ab/1.2", [("zarr.json", [b"new"])])
        assert store.get("ab/1.2/zarr.json") == b"old"
        assert store.incomplete_trees("ab") == []

    @pytest.mark.parametrize("sync", [True, False])
    def test_failed_put_tree_leaves_nothing(self, store: ChunkStore, sync: bool) -> None:
        # the second file of one name fails part-way through the tree: a real OSError from the backend
        with pytest.raises(OSError):
            store.put_tree("ab/9", [("zarr.json", [b"{}"]), ("0/f", [b"x"]), ("0/f", [b"y"])], sync=sync)
        assert store.list_dir("ab") == []
        assert store.incomplete_trees("ab") == []
        store.sync()

    def test_unsynced_writes_are_visible_at_once(self, store: ChunkStore) -> None:
        store.sync()  # nothing written yet
        store.put_tree("ab/1", [("zarr.json", [b"{}"]), ("0/c.0.0", [b"abc", b"def"])], sync=False)
        store.put("ab/zarr.json", b"[]", sync=False)
        assert store.get_range("ab/1/0/c.0.0", 2, 3) == b"cde"
        assert store.list_dir("ab") == ["1", "zarr.json"]
        with pytest.raises(FileExistsError):
            store.put_tree("ab/1", [("zarr.json", [b"new"])], sync=False)
        assert store.sync() is None
        store.sync()
        assert store.get("ab/1/0/c.0.0") == b"abcdef"
        assert store.get("ab/zarr.json") == b"[]"
        assert store.incomplete_trees("ab") == []

    def test_delete_tree(self, store: ChunkStore) -> None:
        store.put_tree("ab/1", [("zarr.json", [b"12345"]), ("0/c", [b"678"])])
        store.put_tree("ab/2", [("zarr.json", [b"keep"])])
        assert store.delete_tree("ab/1") == 8
        assert store.list_dir("ab") == ["2"]
        assert store.delete_tree("ab/1") == 0
        assert store.incomplete_trees("ab") == []
        assert store.get("ab/2/zarr.json") == b"keep"

    def test_invalid_keys(self, store: ChunkStore) -> None:
        for key in ("../x", "a//b", "/abs", "a/./b", "a/../../b"):
            with pytest.raises(ValueError):
                store.put(key, b"")
        with pytest.raises(ValueError):
            store.delete_tree("")
        for sync in (True, False):
            with pytest.raises(ValueError):
                store.put_tree("ab/1", [("zarr.json", [b"{}"]), ("0/../../x", [b"y"])], sync=sync)
        assert store.list_dir("ab") == [] and store.incomplete_trees("ab") == []
        store.sync()

    def test_reads_see_replacement_after_delete(self, store: ChunkStore) -> None:
        store.put_tree("ab/1", [("f", [b"first"])])
        assert store.get("ab/1/f") == b"first"  # a backend may now cache a handle of this file
        store.delete_tree("ab/1")
        store.put_tree("ab/1", [("f", [b"second"])])
        assert store.get("ab/1/f") == b"second"

    @pytest.mark.parametrize("sync", [True, False])
    def test_concurrent_put_tree_and_reads(self, store: ChunkStore, sync: bool) -> None:
        errors: list[BaseException] = []

        def work(n: int) -> None:
            try:
                for i in range(20):
                    payload = f"{n}-{i}".encode() * 50
                    store.put_tree(f"f{n}/{i}", [("zarr.json", [b"{}"]), ("c/0", [payload])], sync=sync)
                    assert store.get_range(f"f{n}/{i}/c/0", 0, len(payload)) == payload
                    if not sync and i % 8 == 7:
                        store.sync()  # concurrently with the other threads' writes and syncs
            except BaseException as error:  # handed to the main thread, which asserts there were none
                errors.append(error)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert sorted(store.list_dir("")) == [f"f{n}" for n in range(8)]


class TestLocalChunkStore(StoreTests):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[ChunkStore]:
        local = LocalChunkStore(tmp_path / "pixels", fd_cache_size=4)
        yield local
        local.close()

    def test_leftover_temp_dirs_are_incomplete_trees(self, tmp_path: Path) -> None:
        store = LocalChunkStore(tmp_path)
        store.put_tree("ab/1", [("f", [b"x"])])
        (tmp_path / "ab" / ".tmp-1.2-0000").mkdir()
        (tmp_path / "ab" / ".tmp-1.2-0000" / "f").write_bytes(b"abc")
        assert store.list_dir("ab") == ["1"]
        [(key, mtime)] = store.incomplete_trees("ab")
        assert key == "ab/.tmp-1.2-0000" and mtime > 0
        assert store.remove_incomplete(key) == 3
        assert store.incomplete_trees("ab") == []
        with pytest.raises(ValueError):
            store.remove_incomplete("ab/1")

    def test_files_are_on_disk_where_keys_say(self, tmp_path: Path) -> None:
        store = LocalChunkStore(tmp_path)
        store.put_tree("ab/1.2", [("0/c/0/0/0", [b"shard"])])
        assert (tmp_path / "ab" / "1.2" / "0" / "c" / "0" / "0" / "0").read_bytes() == b"shard"
        assert store.path("ab/1.2") == tmp_path / "ab" / "1.2"


def count_calls(monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> list[object]:
    """Record the first argument of every call of owner.name, which still runs."""
    calls: list[object] = []
    real: Callable[..., object] = getattr(owner, name)

    def spy(*args: object, **kwargs: object) -> object:
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, spy)
    return calls


def failing_syncfs(
    monkeypatch: pytest.MonkeyPatch, code: int, before: Callable[[], None] | None = None
) -> None:
    """The kernel's answer to the next syncfs calls: writeback failed with `code`."""

    def syncfs(fd: int) -> None:
        if before is not None:
            before()
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(_chunkstore, "_syncfs", syncfs)


TREE = [("zarr.json", [b"{}"]), ("0/zarr.json", [b"{}"]), ("0/c.0.0.0", [b"chunk", b"index"])]


class TestLocalDurability:
    def test_synced_tree_fsyncs_every_file_and_directory(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        store = LocalChunkStore(tmp_path)
        store.put("ab/zarr.json", b"{}")
        fsyncs = count_calls(monkeypatch, os, "fsync")
        mkdirs = count_calls(monkeypatch, os, "mkdir")
        store.put_tree("ab/1", TREE)
        assert len(fsyncs) == 6  # three files, the tree's two directories, then the parent after the rename
        assert len(mkdirs) == 2

    def test_unsynced_tree_fsyncs_nothing_until_sync(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        store = LocalChunkStore(tmp_path)
        store.put("ab/zarr.json", b"{}")
        fsyncs = count_calls(monkeypatch, os, "fsync")
        mkdirs = count_calls(monkeypatch, os, "mkdir")
        syncfs = count_calls(monkeypatch, _chunkstore, "_syncfs")
        for n in range(5):
            store.put_tree(f"ab/{n}", TREE, sync=False)
        store.put("cd/zarr.json", b"{}", sync=False)  # a new directory too
        assert fsyncs == [] and syncfs == []
        assert len(mkdirs) == 11
        store.sync()
        assert fsyncs == [] and len(syncfs) == 1

    def test_syncfs_reports_errors_of_the_kernel(self) -> None:
        with pytest.raises(OSError) as caught:
            _chunkstore._syncfs(-1)
        assert caught.value.errno == errno.EBADF

    @pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
    def test_full_disk_during_sync(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int) -> None:
        store = LocalChunkStore(tmp_path)
        store.put_tree("ab/1", TREE, sync=False)
        failing_syncfs(monkeypatch, code)
        with pytest.raises(StorageFullError, match="pixel store is full") as caught:
            store.sync()
        assert caught.value.errno == code

    def test_failed_sync_also_fails_the_sync_of_writes_under_way(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        store = LocalChunkStore(tmp_path)
        store.put_tree("ab/1", TREE, sync=False)
        # ab/2 is written while the failing syncfs runs: the error may be its pages' and is reported once
        failing_syncfs(monkeypatch, errno.EIO, lambda: store.put_tree("ab/2", TREE, sync=False))
        with pytest.raises(OSError, match=f"syncing {tmp_path}") as first:
            store.sync()
        assert first.value.errno == errno.EIO and not isinstance(first.value, StorageFullError)
        monkeypatch.undo()
        with pytest.raises(OSError, match="under way") as second:
            store.sync()  # the batch holding ab/2
        assert second.value.errno == errno.EIO
        store.put_tree("ab/3", TREE, sync=False)  # written after the failure was reported
        store.put_tree("ab/4", TREE)
        store.sync()
        store.sync()
        assert store.list_dir("ab") == ["1", "2", "3", "4"]

    def test_failed_sync_with_nothing_under_way_is_reported_once(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        store = LocalChunkStore(tmp_path)
        store.put_tree("ab/1", TREE, sync=False)
        failing_syncfs(monkeypatch, errno.EIO)
        with pytest.raises(OSError):
            store.sync()
        monkeypatch.undo()
        store.put_tree("ab/2", TREE, sync=False)
        store.sync()


def descriptors_of(path: Path) -> int:
    fds = os.listdir("/proc/self/fd")
    return sum(1 for fd in fds if os.path.realpath(f"/proc/self/fd/{fd}") == str(path))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to list descriptors")
def test_close_releases_the_root_once_nothing_awaits_a_sync(tmp_path: Path) -> None:
    store = LocalChunkStore(tmp_path)
    store.put_tree("ab/1", TREE)
    assert descriptors_of(tmp_path) == 0  # durable writes need no descriptor of the root
    store.put_tree("ab/2", TREE, sync=False)
    store.close()
    assert descriptors_of(tmp_path) == 1  # kept: the pending sync() must see errors of ab/2's writeback
    store.sync()
    store.close()
    assert descriptors_of(tmp_path) == 0
    store.put_tree("ab/3", TREE, sync=False)  # still usable after close
    store.sync()
    assert store.list_dir("ab") == ["1", "2", "3"]
    store.close()
    assert descriptors_of(tmp_path) == 0


class TestFdCache:
    def test_evicts_and_closes(self, tmp_path: Path) -> None:
        paths = []
        for i in range(3):
            path = tmp_path / f"f{i}"
            path.write_bytes(bytes([i]) * 10)
            paths.append(str(path))
        cache = FdCache(capacity=2)
        opened = []
        for i, path in enumerate(paths):
            with cache.opened(path) as fd:
                assert os.pread(fd, 1, 0) == bytes([i])
                opened.append(fd)
        assert len(cache) == 2
        with pytest.raises(OSError):
            os.fstat(opened[0])  # f2's open evicted f0 and nothing was opened since to reuse its number
        with cache.opened(paths[1]) as fd:
            assert fd == opened[1]  # still cached
        cache.close()
        assert len(cache) == 0
        with pytest.raises(OSError):
            os.fstat(opened[1])

    def test_in_use_fd_survives_eviction(self, tmp_path: Path) -> None:
        (tmp_path / "a").write_bytes(b"aaaa")
        (tmp_path / "b").write_bytes(b"bbbb")
        cache = FdCache(capacity=1)
        with cache.opened(str(tmp_path / "a")) as fd_a:
            with cache.opened(str(tmp_path / "b")):
                pass  # evicts "a" while it is held
            assert os.pread(fd_a, 4, 0) == b"aaaa"
        with pytest.raises(OSError):
            os.fstat(fd_a)

    def test_invalidate_prefix(self, tmp_path: Path) -> None:
        (tmp_path / "d").mkdir()
        (tmp_path / "d" / "x").write_bytes(b"1")
        (tmp_path / "e").write_bytes(b"2")
        cache = FdCache()
        for name in ("d/x", "e"):
            with cache.opened(str(tmp_path / name)):
                pass
        cache.invalidate(str(tmp_path / "d") + os.sep)
        assert len(cache) == 1

    def test_capacity_must_be_positive(self) -> None:
        with pytest.raises(ValueError):
            FdCache(0)
