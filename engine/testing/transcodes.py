"""Hold an archive's transcode workers, so what it acknowledges meanwhile stays pending."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from engine.archive import Archive


@contextmanager
def workers_held(archive: Archive) -> Iterator[None]:
    """Every transcode worker of `archive` busy until the block ends: what it acknowledges meanwhile stays
    pending unless a reader stores it (the workers take their tasks in order, so the transcodes queue
    behind these)."""
    pool = archive._receiver._pool  # type: ignore[union-attr]
    gate = threading.Event()
    busy = [pool.submit(gate.wait, 120) for _ in range(pool._max_workers)]
    try:
        yield
    finally:
        gate.set()
        for task in busy:
            task.result(120)
