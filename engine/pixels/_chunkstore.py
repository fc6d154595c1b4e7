"""Byte storage under the pixel hierarchy: the ChunkStore seam and its local-filesystem backend."""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import secrets
import shutil
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from engine.errors import NotFoundError, StorageFullError
from engine.pixels._fdcache import FdCache

LOGGER = logging.getLogger(__name__)

TEMP_PREFIX = ".tmp-"
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# Linux returns at most this much from one read call; larger ranges are read in a loop.
_MAX_READ = 0x7FFFF000

FileParts = Sequence[tuple[str, Sequence[bytes]]]


@runtime_checkable
class ChunkStore(Protocol):
    """Where the pixel hierarchy's bytes live. Keys are '/'-separated paths relative to the store root.

    Writes are atomic either way; `sync=False` only defers durability: what is written with it is
    durable only after a later sync() returned, and after a crash before that it may be absent or
    incomplete (the index never referenced it, so the orphan sweep removes it). A backend whose writes
    are durable once acknowledged (an object store's PUT) ignores the flag and makes sync() a no-op.
    Every backend passes tests/pixels/test_chunkstore.py's StoreTests.
    """

    def put(self, key: str, data: bytes, *, sync: bool = True) -> None:
        """Create or replace one object atomically (durably unless sync=False); StorageFullError when full."""

    def put_tree(self, prefix: str, files: FileParts, *, sync: bool = True) -> None:
        """Create `prefix` holding `files` (relative key, parts) so that all appear or none do.

        Durable on return unless sync=False. Raises FileExistsError if `prefix` exists,
        StorageFullError when full, OSError otherwise; nothing is left visible under `prefix` on failure.
        """

    def sync(self) -> None:
        """Make everything written so far with sync=False durable.

        Raises StorageFullError or OSError if any write finished since the previous sync() began may
        not have reached stable storage; writes still under way when a failure is reported make the
        next sync() that covers them fail too.
        """

    def get(self, key: str) -> bytes:
        """All bytes of one object; raises NotFoundError."""

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """Up to `length` bytes from `offset` (fewer at the end of the object); raises NotFoundError."""

    def get_ranges(self, key: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """Several (offset, length) ranges of one object; raises NotFoundError."""

    def size(self, key: str) -> int | None:
        """Size of one object, None if it does not exist."""

    def list_dir(self, prefix: str) -> list[str]:
        """Sorted names directly under `prefix` ('' is the root); incomplete trees are not listed."""

    def tree_nbytes(self, prefix: str) -> int:
        """Total bytes of the objects under `prefix`; 0 if there are none."""

    def delete_tree(self, prefix: str) -> int:
        """Remove `prefix` and everything under it so it disappears at once; bytes freed (0 if absent)."""

    def incomplete_trees(self, parent: str) -> list[tuple[str, float]]:
        """(key, modification time) of trees directly under `parent` left by interrupted writes/deletes."""

    def remove_incomplete(self, key: str) -> int:
        """Remove one tree that incomplete_trees() reported; bytes freed."""

    def close(self) -> None:
        """Release cached resources; the store stays usable."""


def _check_key(key: str, *, allow_root: bool = False) -> list[str]:
    parts = key.split("/") if key else []
    if not parts and not allow_root:
        raise ValueError("empty pixel store key")
    for part in parts:
        if part in ("", ".", "..") or "\\" in part or "\0" in part:
            raise ValueError(f"pixel store key {key!r} is not a relative '/'-separated path")
    return parts


def _fsync(path: Path | str, *, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0) | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, parts: Sequence[bytes], *, sync: bool) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        for part in parts:
            view = memoryview(part)
            while view:
                view = view[os.write(fd, view) :]
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def _sync_everything(fd: int) -> None:
    os.sync()


def _load_syncfs() -> Callable[[int], None]:
    """syncfs(2) of libc, or os.sync() where the platform has no syncfs."""
    try:
        function = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return _sync_everything
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int

    def syncfs(fd: int) -> None:
        if function(fd) != 0:
            code = ctypes.get_errno()
            if code == errno.ENOSYS:  # a kernel or sandbox without the call: sync everything instead
                os.sync()
                return
            raise OSError(code, os.strerror(code))

    return syncfs


_syncfs = _load_syncfs()


def _translate(error: OSError, what: str) -> OSError:
    if error.errno in _FULL_ERRNOS:
        return StorageFullError(error.errno, f"pixel store is full: {what}: {error.strerror}")
    return error


def _sync_error(error: OSError, what: str) -> OSError:
    if error.errno in _FULL_ERRNOS:
        return _translate(error, what)
    return OSError(error.errno, f"{what}: {error.strerror}")


class LocalChunkStore:
    """A ChunkStore in a local directory: write-then-rename; fsync of every file and directory, or
    (sync=False) none, and one syncfs(2) of the store's filesystem in sync().

    The whole tree must live on one filesystem: sync() flushes the filesystem holding the root.
    """

    def __init__(self, root: Path | str, *, fd_cache_size: int = 256) -> None:
        self.root = Path(root).absolute()
        self._root_text = str(self.root)  # for paths built with os.path.join (see get_ranges)
        self._fds = FdCache(fd_cache_size)
        self._make_dirs(self.root, sync=True)
        # The descriptor sync() passes to syncfs, opened before the first write it must cover: syncfs
        # reports a writeback error only to descriptors that were open when the error happened.
        self._root_fd: int | None = None
        self._sync_lock = threading.Lock()  # one syncfs at a time, so one caller sees each error
        self._state_lock = threading.Lock()
        self._in_flight = 0  # writes with sync=False begun and not yet finished
        self._next_write = 0  # sequence number of the next write with sync=False
        self._oldest_unsynced: int | None = None  # oldest such write finished since the last sync() began
        self._suspect_below = 0  # writes numbered below this were under way when a sync() failed
        self._sync_failure: OSError | None = None

    def __repr__(self) -> str:
        return f"LocalChunkStore({str(self.root)!r})"

    def path(self, key: str) -> Path:
        """Filesystem path of `key`."""
        return self.root.joinpath(*_check_key(key, allow_root=True))

    def put(self, key: str, data: bytes, *, sync: bool = True) -> None:
        path = self.path(key)
        temp = path.with_name(f"{TEMP_PREFIX}{path.name}-{secrets.token_hex(4)}")
        number = None if sync else self._begin_unsynced()
        written = False
        try:
            self._make_dirs(path.parent, sync=sync)
            _write_file(temp, [data], sync=sync)
            os.replace(temp, path)
            written = True
            if sync:
                _fsync(path.parent, directory=True)
        except OSError as error:
            temp.unlink(missing_ok=True)
            raise _translate(error, f"writing {key}") from error
        finally:
            self._end_unsynced(number, written=written)
        self._fds.invalidate(str(path))

    def put_tree(self, prefix: str, files: FileParts, *, sync: bool = True) -> None:
        if not _check_key(prefix, allow_root=True):
            raise ValueError("put_tree needs a non-empty prefix")
        for name, _ in files:
            _check_key(name)  # before anything is written, so a bad name leaves no temporary tree
        final = self.path(prefix)
        temp = final.with_name(f"{TEMP_PREFIX}{final.name}-{secrets.token_hex(4)}")
        number = None if sync else self._begin_unsynced()
        written = False
        try:
            self._make_dirs(final.parent, sync=sync)
            if final.exists():
                raise FileExistsError(errno.EEXIST, f"pixel store key {prefix} already exists")
            self._write_tree(temp, files, sync=sync)
            self._rename_new(temp, final, prefix)
            written = True
            if sync:
                _fsync(final.parent, directory=True)
        except OSError as error:
            self._remove_quietly(temp)
            raise _translate(error, f"writing {prefix}") from error
        finally:
            self._end_unsynced(number, written=written)
        self._fds.invalidate(str(final) + os.sep)

    def sync(self) -> None:
        """One syncfs(2) of the store's filesystem: every write with sync=False before it is durable.

        Raises StorageFullError (ENOSPC, EDQUOT) or OSError (EIO, ...) when writeback failed. A failure
        also fails the next sync() covering a write that was under way when it was reported, because
        the kernel reports each writeback error only once.
        """
        with self._sync_lock:
            with self._state_lock:
                covered, self._oldest_unsynced = self._oldest_unsynced, None
                fd = self._open_root()
            try:
                _syncfs(fd)
            except OSError as error:
                with self._state_lock:
                    self._suspect_below, self._sync_failure = self._next_write, error
                raise _sync_error(error, f"syncing {self.root}") from error
            failure = self._sync_failure
            if covered is not None and covered < self._suspect_below and failure is not None:
                raise _sync_error(failure, f"syncing {self.root} failed while these writes were under way")

    def _open_root(self) -> int:
        if self._root_fd is None:
            self._root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        return self._root_fd

    def _begin_unsynced(self) -> int:
        with self._state_lock:
            self._open_root()
            self._in_flight += 1
            number = self._next_write
            self._next_write += 1
            return number

    def _end_unsynced(self, number: int | None, *, written: bool) -> None:
        if number is None:
            return
        with self._state_lock:
            self._in_flight -= 1
            if written and (self._oldest_unsynced is None or number < self._oldest_unsynced):
                self._oldest_unsynced = number

    @staticmethod
    def _rename_new(temp: Path, final: Path, prefix: str) -> None:
        try:
            # rename(2) would replace an empty directory silently: only litter of an old crash can be one
            os.rename(temp, final)
        except OSError as error:
            if error.errno in (errno.EEXIST, errno.ENOTEMPTY):  # a concurrent writer of the same prefix won
                raise FileExistsError(errno.EEXIST, f"pixel store key {prefix} already exists") from error
            raise

    def _write_tree(self, temp: Path, files: FileParts, *, sync: bool) -> None:
        os.mkdir(temp)
        directories = [temp]
        for name, parts in files:
            path = temp.joinpath(*_check_key(name))
            for parent in reversed(path.relative_to(temp).parents[:-1]):
                directory = temp / parent
                if not directory.is_dir():
                    os.mkdir(directory)
                    directories.append(directory)
            _write_file(path, parts, sync=sync)
        if sync:
            # deepest first, so each directory is synced after every entry it holds exists
            for directory in reversed(directories):
                _fsync(directory, directory=True)

    def get(self, key: str) -> bytes:
        size = self.size(key)
        if size is None:
            raise NotFoundError(f"pixel store key {key} does not exist")
        return self.get_range(key, 0, size)

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        return self.get_ranges(key, [(offset, length)])[0]

    def get_ranges(self, key: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        for offset, length in ranges:
            if offset < 0 or length < 0:
                raise ValueError(f"invalid range offset={offset} length={length} of {key}")
        # os.path, not pathlib: building a Path took 5% of the interpreter's time in a decoded C-GET
        path = os.path.join(self._root_text, *_check_key(key))
        try:
            with self._fds.opened(path) as fd:
                return [_pread(fd, offset, length) for offset, length in ranges]
        except FileNotFoundError as error:
            raise NotFoundError(f"pixel store key {key} does not exist") from error

    def size(self, key: str) -> int | None:
        try:
            return self.path(key).stat().st_size
        except FileNotFoundError:
            return None

    def list_dir(self, prefix: str) -> list[str]:
        try:
            with os.scandir(self.path(prefix)) as entries:
                return sorted(e.name for e in entries if not e.name.startswith(TEMP_PREFIX))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def tree_nbytes(self, prefix: str) -> int:
        path = self.path(prefix)
        if path.is_file():
            return path.stat().st_size
        total = 0
        for directory, _, names in os.walk(path):
            for name in names:
                try:
                    total += os.stat(os.path.join(directory, name)).st_size
                except FileNotFoundError:
                    continue  # removed concurrently: it no longer counts
        return total

    def delete_tree(self, prefix: str) -> int:
        if not _check_key(prefix, allow_root=True):
            raise ValueError("refusing to delete the store root")
        path = self.path(prefix)
        nbytes = self.tree_nbytes(prefix)
        doomed = path.with_name(f"{TEMP_PREFIX}{path.name}-del-{secrets.token_hex(4)}")
        try:
            # renamed first: a crash part-way through the removal leaves an orphan, not half an instance
            os.rename(path, doomed)
        except FileNotFoundError:
            return 0
        self._fds.invalidate(str(path) + os.sep)
        _fsync(path.parent, directory=True)
        self._remove_quietly(doomed)
        return nbytes

    def incomplete_trees(self, parent: str) -> list[tuple[str, float]]:
        base = self.path(parent)
        found: list[tuple[str, float]] = []
        try:
            with os.scandir(base) as entries:
                for entry in entries:
                    if entry.name.startswith(TEMP_PREFIX):
                        key = f"{parent}/{entry.name}" if parent else entry.name
                        found.append((key, entry.stat(follow_symlinks=False).st_mtime))
        except FileNotFoundError:
            return []
        return sorted(found)

    def remove_incomplete(self, key: str) -> int:
        """Remove one incomplete tree reported by incomplete_trees(); bytes freed."""
        path = self.path(key)
        if not path.name.startswith(TEMP_PREFIX):
            raise ValueError(f"{key} is not an incomplete tree")
        nbytes = self.tree_nbytes(key)
        self._remove_quietly(path)
        return nbytes

    def close(self) -> None:
        """Close cached descriptors; the root's stays open while writes with sync=False await a sync()."""
        self._fds.close()
        with self._sync_lock, self._state_lock:
            if self._root_fd is not None and self._in_flight == 0 and self._oldest_unsynced is None:
                os.close(self._root_fd)
                self._root_fd = None

    @staticmethod
    def _make_dirs(path: Path, *, sync: bool) -> None:
        missing: list[Path] = []
        while not path.is_dir():
            missing.append(path)
            path = path.parent
        for directory in reversed(missing):
            try:
                os.mkdir(directory)
            except FileExistsError:
                continue
            if sync:
                _fsync(directory.parent, directory=True)

    @staticmethod
    def _remove_quietly(path: Path) -> None:
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        except OSError as error:
            # what is left keeps its temporary name: the sweeper removes it later
            LOGGER.warning("could not remove %s: %s", path, error)


def _pread(fd: int, offset: int, length: int) -> bytes:
    data = os.pread(fd, min(length, _MAX_READ), offset)
    if len(data) == length or len(data) == 0:
        return data
    pieces = [data]
    got = len(data)
    while got < length:
        piece = os.pread(fd, min(length - got, _MAX_READ), offset + got)
        if not piece:
            break
        pieces.append(piece)
        got += len(piece)
    return b"".join(pieces)
