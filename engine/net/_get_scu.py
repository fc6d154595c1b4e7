"""C-GET as SCU on a leased socket: the request, the peer's C-STORE sub-operations and the C-GET responses
are written and read here (`_wire`), pynetdicom negotiating and releasing the association.

Through pynetdicom, receiving each C-STORE costs the same queues and polling threads as sending one (a
pull of stored HTJ2K ran at 256-303 inst/s, bounded by this side). Here one thread reads each C-STORE-RQ,
hands its data set to the caller and answers, and yields every C-GET response as the (status, identifier)
pair pynetdicom's `send_c_get` yields, so callers read them the same way.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Generator
from io import BytesIO
from typing import TYPE_CHECKING, cast

from pydicom.dataset import Dataset
from pynetdicom.dsutils import decode, encode

from engine.net import _wire as wire
from engine.net._lease import SocketLease
from engine.types import IMPLICIT_VR_LE

if TYPE_CHECKING:
    from pynetdicom.association import Association

LOGGER = logging.getLogger(__name__)

C_GET_RQ = 0x0010
PENDING = (0xFF00, 0xFF01)
NOT_SUPPORTED = 0x0122  # Refused: SOP Class not supported (no storage context of ours carries it)

# (data set, transfer syntax) -> (status, error comment) of the C-STORE response
Store = Callable[[bytes, str], tuple[int, str]]
_COUNTS = (
    (wire.REMAINING, "NumberOfRemainingSuboperations"), (wire.COMPLETED, "NumberOfCompletedSuboperations"),
    (wire.FAILED, "NumberOfFailedSuboperations"), (wire.WARNING, "NumberOfWarningSuboperations"),
)  # fmt: skip


def get_responses(assoc: Association, identifier: Dataset, sop_class: str, store: Store,
                  timeout: float | None) -> Generator[tuple[Dataset, Dataset | None], None, None]:
    """Send a C-GET of `identifier` and receive its sub-operations; yield each C-GET response.

    Close the generator (it ends by itself after the final response) before releasing the association:
    the socket is leased until then. Raises wire.WireError / OSError / TimeoutError when the peer breaks
    the exchange; the caller aborts the association then.
    """
    get_context = next((cx for cx in assoc.accepted_contexts if cx.abstract_syntax == sop_class), None)
    if get_context is None:
        raise wire.WireError(f"the peer accepted no presentation context for {sop_class}")
    implicit = str(get_context.transfer_syntax[0]) == IMPLICIT_VR_LE
    context_id = cast(int, get_context.context_id)
    receiving = {cast(int, cx.context_id): str(cx.transfer_syntax[0]) for cx in assoc.accepted_contexts
                 if cx.as_scp}  # fmt: skip
    encoded = encode(identifier, implicit, True)
    if encoded is None:
        raise ValueError("the C-GET identifier cannot be encoded")
    with SocketLease(assoc, timeout) as sock:
        max_pdu = int(assoc.dimse.maximum_pdu_size or 0)
        messages = wire.MessageReader(sock, int(assoc.requestor.maximum_length or 0))  # this side's maximum
        command = wire.encode_command({
            wire.AFFECTED_SOP_CLASS: sop_class, wire.COMMAND_FIELD: C_GET_RQ, wire.MESSAGE_ID: 1, wire.PRIORITY: 0,
            wire.DATA_SET_TYPE: wire.DATA_SET_PRESENT,
        })  # fmt: skip
        wire.send_message(sock, context_id, command, encoded, max_pdu)
        while True:
            message = messages.next()
            field = message.command_field
            if field == wire.C_STORE_RQ:
                _answer_store(sock, message, receiving, store, max_pdu)
            elif field == wire.C_GET_RSP and wire.us(message.command, wire.RESPONDED_TO) == 1:
                status, found = _response(message, implicit)
                yield status, found
                if int(status.Status) not in PENDING:
                    return
            else:
                raise wire.WireError(f"unexpected DIMSE command 0x{field or 0:04X} during a C-GET")


def _answer_store(sock: socket.socket, message: wire.Message, receiving: dict[int, str], store: Store, max_pdu: int) -> None:
    syntax = receiving.get(message.context_id)
    if syntax is None:
        status, comment = NOT_SUPPORTED, "no storage context of this SCU carries this C-STORE"
    elif message.data is None:
        status, comment = 0xA900, "the C-STORE request carries no data set"
    else:
        status, comment = store(message.data, syntax)
    wire.send_message(sock, message.context_id, wire.store_response(message, status, comment), None, max_pdu)


def _response(message: wire.Message, implicit: bool) -> tuple[Dataset, Dataset | None]:
    """A C-GET-RSP as pynetdicom's send_c_get yields it: a status Dataset and the identifier, if any."""
    code = wire.us(message.command, wire.STATUS)
    if code is None:
        raise wire.WireError("the peer sent a C-GET response without a status")
    status = Dataset()
    status.Status = code
    for tag, keyword in _COUNTS:
        value = wire.us(message.command, tag)
        if value is not None:
            setattr(status, keyword, value)
    comment = wire.text(message.command, wire.ERROR_COMMENT)
    if comment:
        status.ErrorComment = comment
    found = None
    if message.data:
        try:
            found = decode(BytesIO(message.data), implicit, True)
        except Exception as exc:  # noqa: BLE001 - the identifier only lists failed instances: keep the status
            LOGGER.warning("could not decode the identifier of a C-GET response: %s", exc)
    return status, found
