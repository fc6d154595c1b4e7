"""A retrieve's C-STORE sub-operations, written straight to the association's socket.

Through pynetdicom each sub-operation costs several milliseconds that are neither reading nor sending:
a Dataset built for every command set, two queues, two threads polling every millisecond. Here one
thread holds the socket (`SocketLease`) and, per instance, writes the C-STORE-RQ and reads the C-STORE-RSP
itself (`_wire`), while reader threads fetch the next instances from the archive, decoding them when the
peer wants another syntax. Operations stay one at a time (PS3.7 D.3.3.3: no asynchronous window is
negotiated), so the peer sees the same exchange as from any other SCU.

For a C-GET the sub-operations share the association with the C-GET itself, so this thread also writes
the pending C-GET responses (pynetdicom's own are dropped meanwhile) and notices a C-CANCEL.

Pending responses go out at most every PENDING_INTERVAL, not after every sub-operation: PS3.4 C.4.2.3
and C.4.3.3 make them optional, and pynetdicom's, built as Datasets on the thread that waits for the next
result, took more than half of a C-MOVE's time (JPEG-LS to storescp: 420 instead of 900 instances/s).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self

from pynetdicom.dimse_primitives import C_GET

from engine.net import _wire as wire
from engine.net._lease import LeaseError, SocketLease
from engine.net._send import StoreResult

if TYPE_CHECKING:
    from pynetdicom.association import Association

LOGGER = logging.getLogger(__name__)

PENDING = 0xFF00
PENDING_INTERVAL = 0.5  # seconds between pending C-GET / C-MOVE responses: progress for a person to watch
READ_AHEAD = 8  # instances read ahead of the one on the wire: enough to hide a slow decode, little memory
READERS = 2  # reading is mostly Python (one core), decoding releases the GIL (both cores)


@dataclass(frozen=True, slots=True)
class SubOperation:
    """One instance to send: its identity and the accepted context (None: the peer accepted none for it)."""

    sop_class: str
    sop_uid: str
    context_id: int | None
    syntax: str


@dataclass(frozen=True, slots=True)
class GetProgress:
    """The C-GET the sub-operations belong to: where its pending responses go and which cancel is for it."""

    context_id: int
    sop_class: str
    message_id: int


class StorePipeline:
    """Sends `operations` in order on `assoc` from a thread of its own; `result(i)` waits for the i-th answer."""

    def __init__(
        self,
        assoc: Association,
        operations: Sequence[SubOperation],
        read: Callable[[SubOperation], bytes | bytearray],
        *,
        first_message_id: int,
        originator: tuple[str, int] | None = None,
        progress: GetProgress | None = None,
    ) -> None:
        self._assoc = assoc
        self._operations = list(operations)
        self._read = read
        self._message_id = first_message_id
        self._originator = originator
        self._progress = progress
        self._results: list[StoreResult | None] = [None] * len(self._operations)
        self.sizes = [0] * len(self._operations)  # data set bytes sent per sub-operation
        self.broken: str | None = None  # why the association failed under this pipeline, if it did
        self._done = threading.Condition()
        self._finished = False
        self._ended_why = "not sent"
        self._stop = threading.Event()
        self.cancelled = False  # the peer sent C-CANCEL for the C-GET
        self._tally = {"success": 0, "warning": 0, "failure": 0}
        self._executor = ThreadPoolExecutor(READERS, thread_name_prefix="retrieve-read")
        self._reads: dict[int, Future[bytes | bytearray]] = {}
        self._thread = threading.Thread(target=self._run, name="retrieve-send", daemon=True)
        # This thread writes the pending C-GET responses; pynetdicom's would interleave with its PDUs.
        self._own_pending = None if progress is None else PendingFilter(assoc, C_GET, None)
        self._last_pending = time.monotonic()

    def start(self) -> StorePipeline:
        if self._own_pending is not None:
            self._own_pending.__enter__()
        self._thread.start()
        return self

    def result(self, index: int) -> StoreResult:
        """The peer's answer to the index-th sub-operation, once there is one (or why there is none)."""
        with self._done:
            while self._results[index] is None and not self._finished:
                self._done.wait()
            result = self._results[index]
        return result if result is not None else StoreResult(None, self._ended_why)

    def answered(self, index: int) -> bool:
        """Whether the peer has answered the index-th sub-operation already (no waiting)."""
        with self._done:
            return self._results[index] is not None

    def close(self) -> None:
        """Stop sending and give the association back to pynetdicom; idempotent."""
        self._stop.set()
        if self._thread.ident is not None:  # started
            self._thread.join()
        self._executor.shutdown(wait=True, cancel_futures=True)
        if self._own_pending is not None:
            self._own_pending.__exit__()
            self._own_pending = None

    # -- the sending thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        abort = False
        try:
            with SocketLease(self._assoc, self._assoc.dimse_timeout) as sock:
                messages = wire.MessageReader(sock)
                max_pdu = int(self._assoc.dimse.maximum_pdu_size or 0)
                for index, operation in enumerate(self._operations):
                    if self._stop.is_set() or self.cancelled:
                        self._ended_why = "cancelled"
                        break
                    self._read_ahead(index)
                    result = self._send(sock, messages, max_pdu, index, operation)
                    self._publish(index, result)
                    if self._progress is not None:
                        self._send_pending(sock, max_pdu, remaining=len(self._operations) - index - 1)
        except LeaseError as exc:
            self._ended_why = str(exc)
        except wire.PeerEnded as exc:
            LOGGER.warning("retrieve to %s ended: %s", self._assoc.remote.get("ae_title", "?"), exc)
            self._ended_why, abort = str(exc), True
        except TimeoutError:
            LOGGER.error("no C-STORE response within the DIMSE timeout of %ss", self._assoc.dimse_timeout)
            self._ended_why, abort = "no response within the DIMSE timeout", True
        except (wire.WireError, OSError) as exc:
            LOGGER.error("retrieve sub-operations stopped: %s", exc)
            self._ended_why, abort = str(exc), True
        finally:
            with self._done:
                if abort:  # before anyone waiting for a result sees the end
                    self.broken = self._ended_why
                self._finished = True
                self._done.notify_all()
        if abort:  # after the lease: pynetdicom's DUL sends the A-ABORT and ends the association
            self._assoc.abort(block=False)

    def _read_ahead(self, index: int) -> None:
        for ahead in range(index, min(index + READ_AHEAD, len(self._operations))):
            operation = self._operations[ahead]
            if ahead not in self._reads and operation.context_id is not None:
                self._reads[ahead] = self._executor.submit(self._read, operation)

    def _send(self, sock: Any, messages: wire.MessageReader, max_pdu: int, index: int,
              operation: SubOperation) -> StoreResult:
        if operation.context_id is None:
            return StoreResult(0xA702, "no accepted presentation context")  # Out of resources: sub-operation
        try:
            data = self._reads.pop(index).result()
        except Exception as exc:  # noqa: BLE001 - any read failure fails this sub-operation, not the others
            LOGGER.error("cannot read %s in %s for a sub-operation: %s", operation.sop_uid, operation.syntax, exc)
            return StoreResult(0xC000, str(exc))  # Unable to process
        message_id = self._next_message_id()
        fields: dict[int, int | str] = {
            wire.AFFECTED_SOP_CLASS: operation.sop_class, wire.COMMAND_FIELD: wire.C_STORE_RQ,
            wire.MESSAGE_ID: message_id, wire.PRIORITY: 2, wire.DATA_SET_TYPE: wire.DATA_SET_PRESENT,
            wire.AFFECTED_SOP_INSTANCE: operation.sop_uid,
        }  # fmt: skip
        if self._originator is not None:
            fields[wire.MOVE_ORIGINATOR_AE] = self._originator[0]
            fields[wire.MOVE_ORIGINATOR_ID] = self._originator[1]
        wire.send_message(sock, operation.context_id, wire.encode_command(fields), data, max_pdu)
        self.sizes[index] = len(data)
        while True:
            message = messages.next()
            field = message.command_field
            if field == wire.C_STORE_RSP and wire.us(message.command, wire.RESPONDED_TO) == message_id:
                status = wire.us(message.command, wire.STATUS)
                return StoreResult(status, wire.text(message.command, wire.ERROR_COMMENT))
            if field == wire.C_CANCEL_RQ:
                if self._progress is not None and \
                        wire.us(message.command, wire.RESPONDED_TO) == self._progress.message_id:
                    LOGGER.info("C-GET cancelled by the peer after %d sub-operations", index)
                    self.cancelled = True  # this instance's answer still comes; nothing is sent after it
                else:  # PS3.7 9.3.2.3: a cancel of no outstanding operation has nothing to stop
                    LOGGER.info("ignored a C-CANCEL for message %s", wire.us(message.command, wire.RESPONDED_TO))
                continue
            raise wire.WireError(f"unexpected DIMSE command 0x{field or 0:04X} while a C-STORE was outstanding")

    def _send_pending(self, sock: Any, max_pdu: int, remaining: int) -> None:
        progress = self._progress
        assert progress is not None
        fields: dict[int, int | str] = {
            wire.AFFECTED_SOP_CLASS: progress.sop_class, wire.COMMAND_FIELD: wire.C_GET_RSP,
            wire.RESPONDED_TO: progress.message_id, wire.DATA_SET_TYPE: wire.NO_DATA_SET, wire.STATUS: PENDING,
            wire.REMAINING: remaining, wire.COMPLETED: self._tally["success"],
            wire.FAILED: self._tally["failure"], wire.WARNING: self._tally["warning"],
        }  # fmt: skip
        now = time.monotonic()
        # The last count is the final response's, which pynetdicom sends; after a cancel, only that one.
        if remaining and not self.cancelled and now - self._last_pending >= PENDING_INTERVAL:
            wire.send_message(sock, progress.context_id, wire.encode_command(fields), None, max_pdu)
            self._last_pending = now

    def _publish(self, index: int, result: StoreResult) -> None:
        self._tally[result.category] += 1
        with self._done:
            self._results[index] = result
            self._done.notify_all()

    def _next_message_id(self) -> int:
        message_id = self._message_id
        self._message_id = message_id % 0xFFFF + 1  # 1..65535, wrapping
        return message_id


class PendingFilter:
    """`with PendingFilter(assoc, C_MOVE, 0.5):` pynetdicom sends at most one pending response per interval.

    Drops the pending responses of `primitive_type` that pynetdicom's service class queues after each
    sub-operation unless `interval` seconds passed since the last one sent (None: drops them all). Every
    other message, the final response included, goes out as before.
    """

    def __init__(self, assoc: Association, primitive_type: type[Any], interval: float | None) -> None:
        self._dimse: Any = assoc.dimse
        self._type = primitive_type
        self._interval = interval
        self._last = time.monotonic()

    def __enter__(self) -> Self:
        original = self._dimse.send_msg

        def send_msg(primitive: Any, context_id: int) -> None:
            if isinstance(primitive, self._type) and getattr(primitive, "Status", None) == PENDING:
                now = time.monotonic()
                if self._interval is None or now - self._last < self._interval:
                    return
                self._last = now
            original(primitive, context_id)

        self._dimse.send_msg = send_msg
        return self

    def __exit__(self, *exc: object) -> None:
        self._dimse.__dict__.pop("send_msg", None)  # the class's own method applies again
