"""DIMSE messages on the wire: command sets (PS3.7 6.3, E.1) and P-DATA-TF framing (PS3.8 9.3.5, E).

pynetdicom turns every command set into a pydicom Dataset and moves every PDU through two queues and a
thread that polls the socket each millisecond; for a retrieve's C-STORE sub-operations that costs more
than reading the instance from the archive. This module encodes and decodes the few command sets a
sub-operation needs, and frames and reads PDUs on a plain socket, so `_pipeline` can talk to the peer
directly while pynetdicom keeps the association (negotiation, release, abort, every other service).
"""

from __future__ import annotations

import socket
import ssl
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# Command Set tags (group 0000) used by C-STORE sub-operations and the C-GET responses sent between them.
AFFECTED_SOP_CLASS = 0x00000002
COMMAND_FIELD = 0x00000100
MESSAGE_ID = 0x00000110
RESPONDED_TO = 0x00000120
PRIORITY = 0x00000700
DATA_SET_TYPE = 0x00000800
STATUS = 0x00000900
ERROR_COMMENT = 0x00000902
AFFECTED_SOP_INSTANCE = 0x00001000
REMAINING = 0x00001020
COMPLETED = 0x00001021
FAILED = 0x00001022
WARNING = 0x00001023
MOVE_ORIGINATOR_AE = 0x00001030
MOVE_ORIGINATOR_ID = 0x00001031

C_STORE_RQ = 0x0001
C_STORE_RSP = 0x8001
C_GET_RSP = 0x8010
C_CANCEL_RQ = 0x0FFF
DATA_SET_PRESENT = 0x0000
NO_DATA_SET = 0x0101
NEVER_DATA = (C_STORE_RSP, C_CANCEL_RQ)  # whatever their Command Data Set Type says (some peers say 0x0102)

P_DATA_TF = 0x04
A_RELEASE_RQ = 0x05
A_ABORT = 0x07
PDU_NAMES = {0x01: "A-ASSOCIATE-RQ", 0x02: "A-ASSOCIATE-AC", 0x03: "A-ASSOCIATE-RJ", 0x04: "P-DATA-TF",
             0x05: "A-RELEASE-RQ", 0x06: "A-RELEASE-RP", 0x07: "A-ABORT"}  # fmt: skip

# The value representation of each command element this module writes: it decides the padding.
_VR = {
    AFFECTED_SOP_CLASS: "UI", COMMAND_FIELD: "US", MESSAGE_ID: "US", RESPONDED_TO: "US", PRIORITY: "US",
    DATA_SET_TYPE: "US", STATUS: "US", ERROR_COMMENT: "LO", AFFECTED_SOP_INSTANCE: "UI", REMAINING: "US",
    COMPLETED: "US", FAILED: "US", WARNING: "US", MOVE_ORIGINATOR_AE: "AE", MOVE_ORIGINATOR_ID: "US",
}  # fmt: skip
_ELEMENT = struct.Struct("<HHI")
_PDU_HEADER = struct.Struct(">BxI")
_PDV_HEADER = struct.Struct(">IBB")
MAX_COMMAND_BYTES = 64 * 1024  # a command set is a few hundred bytes; more is a broken or hostile peer
MAX_PDU_BYTES = 64 * 1024 * 1024  # what this side reads of one PDU when it announced no maximum (0)
PDU_SLACK = 12  # beyond the announced maximum, see read_pdu


class WireError(Exception):
    """The peer sent something this side cannot read as DIMSE, or the connection ended."""


class PeerEnded(WireError):
    """The peer sent A-ABORT or A-RELEASE-RQ, or closed the connection, while an operation was outstanding."""


def encode_command(fields: Mapping[int, int | str]) -> bytes:
    """A Command Set in implicit VR little endian, its group length first, elements in tag order."""
    body = bytearray()
    for tag in sorted(fields):
        value = fields[tag]
        vr = _VR[tag]
        if vr == "US":
            raw = struct.pack("<H", int(value))
        else:
            raw = str(value).encode("ascii", "replace")  # the default repertoire; a peer's text may not be
            if len(raw) % 2:
                raw += b"\0" if vr == "UI" else b" "
        body += _ELEMENT.pack(tag >> 16, tag & 0xFFFF, len(raw)) + raw
    return _ELEMENT.pack(0, 0, 4) + struct.pack("<I", len(body)) + bytes(body)


def decode_command(data: bytes) -> dict[int, bytes]:
    """The elements of an implicit VR little endian Command Set, tag -> raw value."""
    fields: dict[int, bytes] = {}
    offset = 0
    while offset < len(data):
        if offset + 8 > len(data):
            raise WireError("command set ends inside an element header")
        group, element, length = _ELEMENT.unpack_from(data, offset)
        offset += 8
        if offset + length > len(data):
            raise WireError(f"command element ({group:04X},{element:04X}) runs past the command set")
        fields[(group << 16) | element] = data[offset:offset + length]
        offset += length
    return fields


def us(fields: Mapping[int, bytes], tag: int) -> int | None:
    """An unsigned short command element, or None when it is absent or not two bytes."""
    raw = fields.get(tag)
    return struct.unpack("<H", raw)[0] if raw is not None and len(raw) == 2 else None


def text(fields: Mapping[int, bytes], tag: int) -> str:
    """A string command element without its padding ("" when absent)."""
    return fields.get(tag, b"").decode("ascii", "replace").rstrip("\0 ")


def message_parts(context_id: int, command: bytes, data: bytes | bytearray | memoryview | None, max_pdu: int
                  ) -> list[bytes | memoryview]:
    """P-DATA-TF PDUs carrying one message, the command then the data set, as headers and views of the two.

    `max_pdu` is the peer's Maximum Length Received (PS3.8 D.1): the most a PDU's variable field may hold,
    so each fragment is at most max_pdu - 6 (the PDV item's length, context and control header). 0 means
    no limit. One PDV per PDU keeps every PDU within the peer's limit whatever the fragment sizes.
    """
    if max_pdu and max_pdu <= 6:
        raise WireError(f"the peer's maximum PDU length {max_pdu} cannot carry any data")
    parts: list[bytes | memoryview] = []
    for control, payload in ((0x01, memoryview(command)), (0x00, None if data is None else memoryview(data))):
        if payload is None:
            continue
        step = (max_pdu - 6) if max_pdu else max(len(payload), 1)
        starts = range(0, len(payload), step) if len(payload) else range(1)
        for start in starts:
            fragment = payload[start:start + step]
            last = start + step >= len(payload)
            parts.append(_PDU_HEADER.pack(P_DATA_TF, len(fragment) + 6)
                         + _PDV_HEADER.pack(len(fragment) + 2, context_id, control | (0x02 if last else 0)))
            parts.append(fragment)
    return parts


_IOV_MAX = 1024  # Linux's limit on the buffers of one sendmsg call


def send_message(sock: socket.socket, context_id: int, command: bytes,
                 data: bytes | bytearray | memoryview | None, max_pdu: int) -> None:
    """Write one message's PDUs (see message_parts) to `sock`.

    The fragments go to the kernel as views of `data`, up to _IOV_MAX of them to a sendmsg call: joining
    them into one bytes object first copied a CT slice again while holding the GIL. TLS sockets have no
    sendmsg; they get the joined bytes.
    """
    parts = message_parts(context_id, command, data, max_pdu)
    if isinstance(sock, ssl.SSLSocket):
        sock.sendall(b"".join(parts))
        return
    views = [memoryview(part) for part in parts if len(part)]
    first = 0
    while first < len(views):
        sent = sock.sendmsg(views[first:first + _IOV_MAX])
        while sent:  # drop what went out; a partly sent view keeps its rest
            if sent < len(views[first]):
                views[first] = views[first][sent:]
                break
            sent -= len(views[first])
            first += 1


_QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux only


def quickack_applies(sock: socket.socket) -> bool:
    """Whether TCP_QUICKACK exists here and `sock` is TCP (asked once per reader: `family` builds an enum)."""
    return _QUICKACK is not None and sock.family in (socket.AF_INET, socket.AF_INET6)


def _read_exactly(sock: socket.socket, size: int, quickack: bool) -> bytearray:
    """`size` bytes, acknowledging at once what already arrived before each wait for more (see read_pdu)."""
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        if quickack:
            sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)  # type: ignore[arg-type]
        n = sock.recv_into(view[got:])
        if n == 0:
            raise PeerEnded("the peer closed the connection")
        got += n
    return buffer


def read_pdu(sock: socket.socket, limit: int = 0, quickack: bool | None = None) -> tuple[int, bytearray]:
    """One PDU from the socket: (type, variable field).

    `limit` is the Maximum Length Received this side announced (0: none, MAX_PDU_BYTES applies): a peer
    that declares a longer PDU breaks PS3.8 9.3.5 and would make this side allocate what it declared.
    PDU_SLACK more is let through, for peers that count the PDV header in the maximum.

    Acknowledges what arrives at once (TCP_QUICKACK before every read: the kernel clears it again after
    a while, and setting it also sends an acknowledgement it was holding back). A peer without TCP_NODELAY
    (DCMTK's default) holds each small write until its previous segment is acknowledged: getscu sends a
    C-STORE-RSP as 11 bytes and then 158, and with the option set only before each PDU, 1 C-GET of the
    CT series in 25 took 6-9 s instead of 1 s, every response waiting for a 200 ms retransmission timer;
    storescu -> serve was 3 to 5 times slower before the option was set at all.
    `quickack` is quickack_applies(sock), given by callers that read many PDUs.
    """
    if quickack is None:
        quickack = quickack_applies(sock)
    pdu_type, length = _PDU_HEADER.unpack(_read_exactly(sock, 6, quickack))
    if length > (limit + PDU_SLACK if limit else MAX_PDU_BYTES):
        raise WireError(f"a {PDU_NAMES.get(pdu_type, hex(pdu_type))} PDU of {length} bytes is larger than the "
                        f"maximum length of {limit or MAX_PDU_BYTES} this side accepts")
    return pdu_type, _read_exactly(sock, length, quickack)


def store_response(request: Message, status: int, comment: str = "") -> bytes:
    """The C-STORE-RSP command set answering `request`; the Error Comment only with a non-success status."""
    command = request.command
    fields: dict[int, int | str] = {
        AFFECTED_SOP_CLASS: text(command, AFFECTED_SOP_CLASS), COMMAND_FIELD: C_STORE_RSP,
        RESPONDED_TO: us(command, MESSAGE_ID) or 0, DATA_SET_TYPE: NO_DATA_SET, STATUS: status,
        AFFECTED_SOP_INSTANCE: text(command, AFFECTED_SOP_INSTANCE),
    }  # fmt: skip
    if comment and status != 0:
        fields[ERROR_COMMENT] = comment[:64]  # LO: 64 characters
    return encode_command(fields)


@dataclass(frozen=True, slots=True)
class Message:
    """A DIMSE message read off the wire: its context, command elements and data set (None if it has none)."""

    context_id: int
    command: dict[int, bytes]
    data: bytes | None

    @property
    def command_field(self) -> int | None:
        return us(self.command, COMMAND_FIELD)


class MessageReader:
    """Reassembles DIMSE messages from the P-DATA-TF PDUs of one association."""

    def __init__(self, sock: socket.socket, limit: int = 0) -> None:
        self._sock = sock
        self._limit = limit  # this side's Maximum Length Received, see read_pdu
        self._quickack = quickack_applies(sock)

    def next(self, first: tuple[int, bytearray] | None = None) -> Message:
        """The next whole message; PeerEnded for A-ABORT / A-RELEASE-RQ / EOF, WireError for anything else.

        `first` is the message's first PDU (type, variable field) when the caller has read it already.
        """
        command = bytearray()
        data = bytearray()
        context_id: int | None = None
        command_done = False
        while True:
            pdu_type, body = first if first is not None else read_pdu(self._sock, self._limit, self._quickack)
            first = None
            if pdu_type in (A_ABORT, A_RELEASE_RQ):
                raise PeerEnded(f"the peer sent {PDU_NAMES[pdu_type]}")
            if pdu_type != P_DATA_TF:
                raise WireError(f"the peer sent {PDU_NAMES.get(pdu_type, hex(pdu_type))} during an operation")
            for ctx, control, fragment in _pdvs(body):
                if context_id is not None and ctx != context_id:
                    raise WireError("a message's fragments arrived on two presentation contexts")
                context_id = ctx
                if control & 0x01:
                    if command_done:
                        raise WireError("command fragment after the command set was complete")
                    command += fragment
                    if len(command) > MAX_COMMAND_BYTES:
                        raise WireError("the peer's command set is larger than any DIMSE command")
                    if control & 0x02:
                        command_done = True
                        fields = decode_command(bytes(command))
                        if us(fields, DATA_SET_TYPE) == NO_DATA_SET or us(fields, COMMAND_FIELD) in NEVER_DATA:
                            return Message(ctx, fields, None)
                else:
                    if not command_done:
                        raise WireError("data set fragment before the command set")
                    data += fragment
                    if control & 0x02:
                        return Message(ctx, decode_command(bytes(command)), bytes(data))


def _pdvs(body: bytearray) -> Iterable[tuple[int, int, memoryview]]:
    view = memoryview(body)
    offset = 0
    while offset < len(body):
        if offset + 6 > len(body):
            raise WireError("a PDV item header runs past its P-DATA-TF PDU")
        length, context_id, control = _PDV_HEADER.unpack_from(body, offset)
        if length < 2 or offset + 4 + length > len(body):
            raise WireError(f"a PDV item of length {length} does not fit its P-DATA-TF PDU")
        yield context_id, control, view[offset + 6:offset + 4 + length]
        offset += 4 + length
