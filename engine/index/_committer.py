"""GroupCommitter: the one thread that writes the index, committing many queued instances per transaction."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from types import TracebackType
from typing import Self, TypeVar

from engine.errors import ClosedError, EngineError
from engine.index._index import Index
from engine.index._model import IndexEntry, PutOutcome
from engine.index._write import PreparedEntry, prepare_entry

LOGGER = logging.getLogger(__name__)
_T = TypeVar("_T")
_Put = tuple[PreparedEntry, "Future[PutOutcome]"]
_Job = tuple[Callable[[], object], "Future[object]"]
_STOP = None


class GroupCommitter:
    """Owns index writes: entries submitted from any thread are committed in batches by one writer thread.

    While one transaction syncs to disk, new submissions queue up and share the next one, so durability costs
    one fsync per batch instead of one per instance.
    """

    def __init__(
        self,
        index: Index,
        *,
        batch: int = 64,
        name: str = "index-committer",
        before_commit: Callable[[], None] | None = None,
    ) -> None:
        """`before_commit` runs on the writer thread before each batch's transaction: the archive passes
        the pixel store's sync, so chunks written without their own fsync are durable before the index
        refers to them (a batch of only pending records skips it). If it raises, the whole batch fails
        with that error and nothing is committed.
        """
        if batch < 1:
            raise ValueError(f"batch must be at least 1, not {batch}")
        self._index = index
        self._batch = batch
        self._before_commit = before_commit
        self._queue: queue.SimpleQueue[_Put | _Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()  # orders the closed flag against enqueueing: nothing follows _STOP
        self._closed = False
        self.commits = 0  # write transactions this committer committed
        self.committed = 0  # entries those transactions held
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, entry: IndexEntry) -> Future[PutOutcome]:
        """Queue an entry; the future resolves to its PutOutcome once committed. Raises ClosedError after close.

        The entry is encoded here, on the caller's thread, so the writer thread only stores bytes.
        """
        future: Future[PutOutcome] = Future()
        try:
            prepared = prepare_entry(entry)
        except EngineError as exc:
            self._check_open()  # after close, ClosedError wins over what is wrong with the entry
            future.set_exception(exc)
            return future
        self._enqueue((prepared, future))
        return future

    def run(self, fn: Callable[[], _T]) -> Future[_T]:
        """Run `fn` on the writer thread, after the entries queued before it, e.g. a deletion."""
        future: Future[_T] = Future()
        self._enqueue((fn, future))  # type: ignore[arg-type]
        return future

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("the index committer is closed; no more writes are accepted")

    def _enqueue(self, item: _Put | _Job) -> None:
        with self._lock:
            self._check_open()
            self._queue.put(item)

    def close(self) -> None:
        """Commit everything queued, then stop the thread. Idempotent."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._queue.put(_STOP)
        self._thread.join()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # --- writer thread -----------------------------------------------------------------------------

    def _loop(self) -> None:
        pending: list[_Put] = []
        while True:
            item = self._queue.get()  # block for the first item, then take what is already waiting
            while True:
                if item is _STOP:
                    self._commit(pending)
                    return
                if isinstance(item[0], PreparedEntry):
                    pending.append(item)
                    if len(pending) >= self._batch:
                        self._commit(pending)
                else:
                    self._commit(pending)  # jobs run after the entries submitted before them
                    self._run_job(item)
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            self._commit(pending)

    def _commit(self, pending: list[_Put]) -> None:
        """Commit and resolve the pending entries, then empty the list."""
        live = [(entry, future) for entry, future in pending if future.set_running_or_notify_cancel()]
        pending.clear()
        if not live:
            return
        try:
            # Pending records point at no pixels: a batch of only those needs no pixel sync.
            if self._before_commit is not None and not all(e.entry.record.pending for e, _ in live):
                self._before_commit()
            outcomes = self._index.put_instances([entry for entry, _ in live])
        except Exception as exc:  # noqa: BLE001 - every failure belongs to the futures, the thread lives on
            # Entries were validated when submitted, so what fails here (disk full, index closed) fails them all.
            for _, future in live:
                future.set_exception(exc)
            return
        self.commits += 1
        self.committed += len(live)
        for (_, future), outcome in zip(live, outcomes, strict=True):
            future.set_result(outcome)

    def _run_job(self, job: _Job) -> None:
        fn, future = job
        if not future.set_running_or_notify_cancel():
            return
        try:
            result = fn()
        except Exception as exc:  # noqa: BLE001 - handed to the caller's future
            future.set_exception(exc)
        else:
            future.set_result(result)
