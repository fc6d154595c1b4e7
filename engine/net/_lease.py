"""Exclusive use of an established association's socket, pynetdicom's reactors parked meanwhile.

pynetdicom (pinned 3.0) runs two loops per association: the association reactor, which takes decoded
DIMSE messages off a queue, and the DUL reactor, which polls the socket, reads PDUs and writes queued
ones. While a lease is held the association reactor is paused the way pynetdicom's own send_* methods
pause it, and the DUL reactor neither reads the socket nor writes what is queued for it: anything
pynetdicom queues meanwhile goes out, in order, after the lease ends, and before the DUL reads the
socket again (an abort queued for a peer that sent garbage is sent, not preceded by reading the garbage).
The lease starts only once the DUL reactor has flushed its queue and is between PDUs, so no PDU is split
between the two readers.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pynetdicom.association import Association

PARK_TIMEOUT = 10.0  # seconds for the DUL reactor to drain its queue; it polls every millisecond
# How often a parked DUL reactor looks at its kill flag and ARTIM timer: nothing else needs it meanwhile.
PARKED_POLL_SECONDS = 0.05


def _poll_until(condition: Callable[[], bool]) -> bool:
    """Whether `condition` became true within PARK_TIMEOUT, checked every 0.1 ms (pynetdicom's reactors
    give no event to wait on)."""
    deadline = time.monotonic() + PARK_TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.0001)
    return True


def wait_for_backlog(assoc: Association, backlog: int) -> None:
    """When more than `backlog` messages wait in the DUL reactor's queue, wait until it has sent them all.

    The DUL reactor reads the socket only when it has nothing to send: a handler that queues responses
    as fast as they go out would keep a peer's C-CANCEL unread until every one of them was sent. An empty
    queue at least every `backlog` responses lets it read.
    """
    queued = assoc.dul.to_provider_queue
    if queued.qsize() > backlog:
        _poll_until(lambda: queued.empty() or not assoc.is_established)


class LeaseError(Exception):
    """The association ended, or its reactor did not come to rest, before the lease could start."""


class SocketLease:
    """`with SocketLease(assoc, timeout) as sock:` the raw socket, for this thread alone, until the block ends."""

    def __init__(self, assoc: Association, timeout: float | None) -> None:
        self._assoc = assoc
        self._timeout = timeout
        self._parked = threading.Event()
        self._released = threading.Event()
        self._saved_timeout: float | None = None
        self._reactor_was_paused = False
        self._sock: socket.socket | None = None

    def __enter__(self) -> socket.socket:
        assoc = self._assoc
        dul: Any = assoc.dul
        if not assoc.is_established or dul.socket is None or dul.socket.socket is None:
            raise LeaseError("the association has ended")
        # The association reactor: paused already when the lease is taken from a service handler.
        self._reactor_was_paused = not assoc._reactor_checkpoint.is_set()
        assoc._reactor_checkpoint.clear()
        if not _poll_until(lambda: assoc._is_paused):
            self._restore()
            raise LeaseError("the association reactor did not pause")

        def transport_parked() -> bool:  # replaces the DUL's "read a PDU if the socket has one"
            if self._parked.is_set():
                # Rest here instead of coming round every millisecond: its wake-ups took the GIL from
                # the thread holding the lease a thousand times a second. The end of the lease wakes it.
                self._released.wait(PARKED_POLL_SECONDS)
            elif dul.event_queue.empty() and dul.to_provider_queue.empty():
                self._parked.set()
            return False

        def hold_primitives() -> bool:  # replaces the DUL's "send the next queued primitive"
            return False if self._parked.is_set() else original_send()

        original_send = dul._process_recv_primitive
        dul._is_transport_event = transport_parked
        dul._process_recv_primitive = hold_primitives
        if not self._parked.wait(PARK_TIMEOUT) or not dul.is_alive():
            self._restore()
            raise LeaseError("the association's DUL reactor did not come to rest")
        sock: socket.socket = dul.socket.socket
        self._saved_timeout = sock.gettimeout()
        sock.settimeout(self._timeout)
        self._sock = sock
        return sock

    def __exit__(self, *exc: object) -> None:
        self._restore()

    def _restore(self) -> None:
        dul: Any = self._assoc.dul
        self._released.set()
        if self._sock is not None:
            try:
                self._sock.settimeout(self._saved_timeout)
            except OSError:
                pass  # closed while leased: the DUL reactor finds out on its next poll
            self._sock = None
        # The class's own methods apply again: sending first, and reading only once what was queued during
        # the lease is sent. The reactor sends a primitive and acts on it in the same pass of its loop.
        dul.__dict__.pop("_process_recv_primitive", None)
        _poll_until(lambda: dul.to_provider_queue.empty() or not dul.is_alive())
        dul.__dict__.pop("_is_transport_event", None)
        dul._idle_timer.restart()  # the lease was activity; do not let the idle timeout count it
        if not self._reactor_was_paused:
            self._assoc._reactor_checkpoint.set()
