"""Incoming C-STOREs read straight off the socket while an association only stores.

pynetdicom spends longer per C-STORE than the archive's own accept (a Dataset per command, two queues,
two threads polling each millisecond). When an association is established this module leases its socket
(`SocketLease`) and, as long as the next message is a C-STORE-RQ on a storage context, reads it, hands the
data set to the archive and writes the C-STORE-RSP itself. The first PDU of anything else (C-ECHO, C-FIND,
a retrieve, A-RELEASE-RQ, A-ABORT) is handed to pynetdicom's DUL as if its reactor had read it, the lease
ends, and pynetdicom serves the rest of the association as it would have from the start. An idle
association, or one pynetdicom wants to send on (an abort at shutdown), is handed back too.
"""

from __future__ import annotations

import logging
import select
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from engine.net import _wire as wire
from engine.net._lease import LeaseError, SocketLease

if TYPE_CHECKING:
    from pynetdicom.association import Association

LOGGER = logging.getLogger(__name__)

POLL_SECONDS = 0.25  # how often a waiting receiver checks whether pynetdicom wants the association back

# (context's abstract syntax, request's SOP class, request's SOP instance, data set or None, transfer syntax)
# -> (status, error comment)
Store = Callable[[str, str, str, bytes | None, str], tuple[int, str]]


class StorageContext(NamedTuple):
    """An accepted storage presentation context: what it is for, and the syntax its data sets are in."""

    abstract_syntax: str
    transfer_syntax: str


def claim(assoc: Association) -> None:
    """At connection: once the association is established, pynetdicom reads nothing until `start` decides.

    Without this, pynetdicom's reactor reads the first C-STORE-RQ's command in the moment between the
    A-ASSOCIATE-AC and the lease, and the whole association stays on the slow path.
    """
    dul: Any = assoc.dul
    read_if_ready = dul._is_transport_event

    def gate() -> bool:
        if dul.state_machine.current_state == "Sta6":  # established: wait for start() to lease or release
            return False
        return bool(read_if_ready())

    dul._is_transport_event = gate


def unclaim(assoc: Association) -> None:
    """Give reading back to pynetdicom (the association has nothing for serve_stores)."""
    assoc.dul.__dict__.pop("_is_transport_event", None)


def start(assoc: Association, storage_classes: frozenset[str], store: Store) -> threading.Thread | None:
    """Start serve_stores for an established association (None when it accepted no storage context)."""
    contexts = {cast(int, cx.context_id): StorageContext(str(cx.abstract_syntax), str(cx.transfer_syntax[0]))
                for cx in assoc.accepted_contexts if cx.as_scp and str(cx.abstract_syntax) in storage_classes}
    if not contexts:
        unclaim(assoc)
        return None
    thread = threading.Thread(target=serve_stores, args=(assoc, contexts, store), name="store-receive", daemon=True)
    thread.start()
    return thread


def serve_stores(assoc: Association, storage_contexts: dict[int, StorageContext], store: Store) -> None:
    """Run in a thread of its own: receive C-STOREs on `assoc` until the peer asks for anything else.

    `storage_contexts` maps the accepted storage presentation context IDs to what they are.
    """
    received = 0
    try:
        with SocketLease(assoc, assoc.network_timeout) as sock:
            limit = int(assoc.acceptor.maximum_length or 0)  # this side's Maximum Length Received
            messages = wire.MessageReader(sock, limit)
            quickack = wire.quickack_applies(sock)
            max_pdu = int(assoc.dimse.maximum_pdu_size or 0)
            idle_since = time.monotonic()
            try:
                while True:
                    if not _readable(sock):
                        if _wanted_back(assoc, idle_since):
                            break
                        continue
                    pdu = wire.read_pdu(sock, limit, quickack)
                    if not _is_store_request(*pdu, storage_contexts):
                        _hand_over(assoc, *pdu)  # pynetdicom's DUL takes it from here, then the socket
                        break
                    message = messages.next(pdu)
                    _answer(sock, message, storage_contexts[message.context_id], store, max_pdu)
                    received += 1
                    idle_since = time.monotonic()
            except (wire.WireError, OSError) as exc:
                # A broken peer mid-message: nothing of that message was acknowledged, so nothing is lost.
                # The abort is queued while the lease still holds the DUL, which sends it before reading
                # another byte. Queued after the lease, the DUL could first read the rest of the bad
                # message (an unknown PDU: it aborts by itself), and the queued abort then met a state
                # that refuses one, an exception in pynetdicom's reactor thread.
                LOGGER.warning("aborting the association from %s: %s", _calling(assoc), exc)
                assoc.abort(block=False)
    except LeaseError as exc:
        unclaim(assoc)
        LOGGER.debug("C-STOREs left to pynetdicom: %s", exc)
    LOGGER.debug("%d C-STOREs received directly from %s", received, _calling(assoc))


def _readable(sock: socket.socket) -> bool:
    """Whether a PDU has started to arrive, waiting at most POLL_SECONDS."""
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True  # decrypted bytes already inside the TLS layer: select would not see them
    ready, _, _ = select.select([sock], [], [], POLL_SECONDS)
    return bool(ready)


def _is_store_request(pdu_type: int, body: bytearray, storage_contexts: dict[int, StorageContext]) -> bool:
    """Whether a PDU is a P-DATA-TF whose first PDV is a whole C-STORE-RQ command set on a storage context.

    A command set split over several PDVs (rare: command sets are small) goes to pynetdicom.
    """
    if pdu_type != wire.P_DATA_TF or len(body) < 6:
        return False
    pdv_length, context_id, control = struct.unpack_from(">IBB", body, 0)
    if control & 0x03 != 0x03 or context_id not in storage_contexts:  # command, last fragment
        return False
    try:
        fields = wire.decode_command(bytes(body[6:4 + pdv_length]))
    except wire.WireError:
        return False  # pynetdicom reads it and answers as it does any malformed message
    return wire.us(fields, wire.COMMAND_FIELD) == wire.C_STORE_RQ


def _hand_over(assoc: Association, pdu_type: int, body: bytearray) -> None:
    """Give pynetdicom's DUL a PDU read here, as its own reader would have (pynetdicom 3.0's _read_pdu_data)."""
    dul: Any = assoc.dul
    try:
        decoded, event = dul._decode_pdu(bytearray(struct.pack(">BxI", pdu_type, len(body))) + body)
    except Exception:
        LOGGER.exception("could not decode a PDU from %s", _calling(assoc))
        dul.event_queue.put("Evt19")
        return
    dul.event_queue.put(event)
    dul._recv_pdu.put(decoded)


def _answer(sock: socket.socket, message: wire.Message, context: StorageContext, store: Store, max_pdu: int) -> None:
    command = message.command
    status, comment = store(context.abstract_syntax, wire.text(command, wire.AFFECTED_SOP_CLASS),
                            wire.text(command, wire.AFFECTED_SOP_INSTANCE), message.data, context.transfer_syntax)
    wire.send_message(sock, message.context_id, wire.store_response(message, status, comment), None, max_pdu)


def _wanted_back(assoc: Association, idle_since: float) -> bool:
    """Whether pynetdicom should have the association: it has something to send, or it went idle too long."""
    dul: Any = assoc.dul
    if assoc._kill or not dul.is_alive() or not dul.to_provider_queue.empty():
        return True
    timeout = assoc.network_timeout
    return timeout is not None and time.monotonic() - idle_since > timeout


def _calling(assoc: Association) -> str:
    return str(assoc.requestor.ae_title).strip()
