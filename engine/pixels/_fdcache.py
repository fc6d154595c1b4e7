"""A bounded cache of read-only file descriptors that many threads share for pread."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(slots=True)
class _Entry:
    fd: int
    refs: int = 0
    retired: bool = False  # evicted or invalidated: close once the last reader releases it


class FdCache:
    """Opened files by path, least recently used evicted past `capacity`.

    pread does not move a shared file offset, so threads can read one fd at once. A descriptor is only
    closed when no reader holds it: closing under a reader could let the number be reused for another
    file and the read return that file's bytes.
    """

    def __init__(self, capacity: int = 256) -> None:
        if capacity < 1:
            raise ValueError(f"fd cache capacity must be >= 1, got {capacity}")
        self._capacity = capacity
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    @contextmanager
    def opened(self, path: str) -> Iterator[int]:
        """A read-only fd of `path` for the duration of the block; raises what os.open raises."""
        entry = self._acquire(path)
        try:
            yield entry.fd
        finally:
            self._release(entry)

    def invalidate(self, path_prefix: str) -> None:
        """Forget every fd whose path starts with `path_prefix` (the files were removed or replaced)."""
        with self._lock:
            for path in [p for p in self._entries if p.startswith(path_prefix)]:
                self._retire(self._entries.pop(path))

    def close(self) -> None:
        """Forget every fd; those in use close when released."""
        self.invalidate("")

    def __len__(self) -> int:
        return len(self._entries)

    def _acquire(self, path: str) -> _Entry:
        with self._lock:
            entry = self._entries.get(path)
            if entry is not None:
                self._entries.move_to_end(path)
                entry.refs += 1
                return entry
        # open outside the lock: a slow open must not stall readers of other files
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        with self._lock:
            entry = self._entries.get(path)
            if entry is not None:  # another thread opened it meanwhile
                os.close(fd)
                entry.refs += 1
                return entry
            entry = _Entry(fd, refs=1)
            self._entries[path] = entry
            while len(self._entries) > self._capacity:
                _, oldest = self._entries.popitem(last=False)
                self._retire(oldest)
            return entry

    def _release(self, entry: _Entry) -> None:
        with self._lock:
            entry.refs -= 1
            if entry.retired and entry.refs == 0:
                os.close(entry.fd)

    @staticmethod
    def _retire(entry: _Entry) -> None:
        entry.retired = True
        if entry.refs == 0:
            os.close(entry.fd)
