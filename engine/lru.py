"""A thread-safe LRU cache bounded by a byte count, for the caches of the index and of DICOMweb."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

_K = TypeVar("_K")
_V = TypeVar("_V")


class LruCache(Generic[_K, _V]):
    """A thread-safe LRU bounded by the total size of its entries (as `weigh(key, value)` counts them)."""

    def __init__(self, max_bytes: int, weigh: Callable[[_K, _V], int]) -> None:
        self._max_bytes = max_bytes
        self._weigh = weigh
        self._bytes = 0
        self._items: OrderedDict[_K, _V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: _K) -> _V | None:
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
            return item

    def put(self, key: _K, value: _V) -> None:
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= self._weigh(key, old)
            self._items[key] = value
            self._bytes += self._weigh(key, value)
            while self._bytes > self._max_bytes and len(self._items) > 1:
                dropped_key, dropped = self._items.popitem(last=False)
                self._bytes -= self._weigh(dropped_key, dropped)

    def __len__(self) -> int:
        return len(self._items)
