"""The DIMSE wire layer of the retrieve fast path: command sets agree with pydicom's reading of them, PDUs
stay within the peer's maximum length, and a reader on a real socket pair reassembles fragmented messages
and refuses what is not DIMSE."""

from __future__ import annotations

import io
import socket
import struct
import threading
from collections.abc import Iterator

import pytest
from pydicom.filereader import read_dataset

from engine.net import _wire as wire


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    a.settimeout(10)
    b.settimeout(10)
    yield a, b
    a.close()
    b.close()


STORE_RQ: dict[int, int | str] = {
    wire.AFFECTED_SOP_CLASS: "1.2.840.10008.5.1.4.1.1.2", wire.COMMAND_FIELD: wire.C_STORE_RQ, wire.MESSAGE_ID: 7,
    wire.PRIORITY: 2, wire.DATA_SET_TYPE: wire.DATA_SET_PRESENT, wire.AFFECTED_SOP_INSTANCE: "1.2.3.45",
    wire.MOVE_ORIGINATOR_AE: "MOVESCU", wire.MOVE_ORIGINATOR_ID: 3,
}  # fmt: skip


def test_a_command_set_reads_back_in_pydicom_with_its_group_length() -> None:
    encoded = wire.encode_command(STORE_RQ)
    ds = read_dataset(io.BytesIO(encoded), is_implicit_VR=True, is_little_endian=True)
    assert ds.CommandGroupLength == len(encoded) - 12
    assert ds.AffectedSOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert ds.AffectedSOPInstanceUID == "1.2.3.45"  # odd length: padded with NUL, which pydicom strips
    assert (ds.CommandField, ds.MessageID, ds.Priority, ds.CommandDataSetType) == (1, 7, 2, 0)
    assert ds.MoveOriginatorApplicationEntityTitle == "MOVESCU"
    assert ds.MoveOriginatorMessageID == 3
    fields = wire.decode_command(encoded)
    assert wire.us(fields, wire.MESSAGE_ID) == 7 and wire.text(fields, wire.AFFECTED_SOP_INSTANCE) == "1.2.3.45"


def test_a_truncated_command_set_is_refused() -> None:
    encoded = wire.encode_command(STORE_RQ)
    with pytest.raises(wire.WireError, match="runs past"):
        wire.decode_command(encoded[:-1])
    with pytest.raises(wire.WireError, match="element header"):
        wire.decode_command(encoded + b"\x00\x00")


@pytest.mark.parametrize("max_pdu", [0, 16, 1000, 16384])
def test_framing_keeps_every_pdu_within_the_peer_maximum(max_pdu: int) -> None:
    command = wire.encode_command(STORE_RQ)
    data = bytes(range(256)) * 40
    framed = b"".join(wire.message_parts(5, command, data, max_pdu))
    offset, got_command, got_data, controls = 0, b"", b"", []
    while offset < len(framed):
        pdu_type, length = struct.unpack_from(">BxI", framed, offset)
        assert pdu_type == wire.P_DATA_TF
        assert max_pdu == 0 or length <= max_pdu
        item_length, context_id, control = struct.unpack_from(">IBB", framed, offset + 6)
        assert context_id == 5 and item_length == length - 4
        fragment = framed[offset + 12:offset + 6 + length]
        if control & 1:
            got_command += fragment
        else:
            got_data += fragment
        controls.append(control)
        offset += 6 + length
    assert (got_command, got_data) == (command, data)
    assert controls.count(0x03) == 1 and controls.count(0x02) == 1  # one last fragment each
    with pytest.raises(wire.WireError, match="cannot carry"):
        wire.message_parts(5, command, data, 6)


def test_the_reader_reassembles_a_message_fragmented_across_pdus(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    command = wire.encode_command({**STORE_RQ})
    wire.send_message(a, 3, command, b"\x01\x02" * 5000, 64)
    message = wire.MessageReader(b).next()
    assert message.context_id == 3 and message.command_field == wire.C_STORE_RQ
    assert message.data == b"\x01\x02" * 5000


def test_a_message_larger_than_the_socket_buffer_and_than_one_sendmsg_arrives_whole(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    # 3,002 fragments of 58 bytes: more buffers than one sendmsg call takes (1,024), and 170 kB against a
    # send buffer of a few kB, so the kernel takes each call only in part while the reader drains the other end.
    a, b = pair
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    data = bytes(range(256)) * 680 + b"\x01\x02"
    messages: list[wire.Message] = []
    reader = threading.Thread(target=lambda: messages.append(wire.MessageReader(b).next()))
    reader.start()
    wire.send_message(a, 3, wire.encode_command(STORE_RQ), bytearray(data), 64)
    reader.join(10)
    [message] = messages
    assert message.context_id == 3 and message.command_field == wire.C_STORE_RQ
    assert message.data == data


def test_a_response_without_a_data_set_ends_at_its_command(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    # Some peers say 0x0102 (not 0x0101) for "no data set" in a C-STORE-RSP; it never has one anyway.
    rsp = wire.encode_command({wire.COMMAND_FIELD: wire.C_STORE_RSP, wire.RESPONDED_TO: 7,
                               wire.DATA_SET_TYPE: 0x0102, wire.STATUS: 0xB000, wire.ERROR_COMMENT: "coerced"})
    wire.send_message(a, 1, rsp, None, 16384)
    message = wire.MessageReader(b).next()
    assert message.data is None
    assert wire.us(message.command, wire.STATUS) == 0xB000
    assert wire.text(message.command, wire.ERROR_COMMENT) == "coerced"


@pytest.mark.parametrize(
    ("raw", "error", "match"),
    [
        (b"\x07\x00\x00\x00\x00\x04\x00\x00\x02\x00", wire.PeerEnded, "A-ABORT"),
        (b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00", wire.PeerEnded, "A-RELEASE-RQ"),
        (b"\x01\x00\x00\x00\x00\x04\x00\x00\x00\x00", wire.WireError, "A-ASSOCIATE-RQ during an operation"),
        (b"\x04\x00\x00\x00\x00\x06\x00\x00\x00\x09\x01\x03", wire.WireError, "does not fit"),
        (b"\x04\x00\x00\x00\x00\x06\x00\x00\x00\x02\x01\x00", wire.WireError, "data set fragment before"),
        (b"\x04\x00\x7f\xff\xff\xff", wire.WireError, "larger than the maximum length"),
        (b"\x04\x00\x00\x00", wire.PeerEnded, "closed"),
    ],
    ids=["abort", "release", "associate", "pdv-overrun", "data-first", "huge-pdu", "truncated"],
)
def test_the_reader_refuses_what_is_not_a_dimse_message(
    pair: tuple[socket.socket, socket.socket], raw: bytes, error: type[Exception], match: str
) -> None:
    a, b = pair
    a.sendall(raw)
    a.shutdown(socket.SHUT_WR)
    with pytest.raises(error, match=match):
        wire.MessageReader(b).next()


def test_a_pdu_longer_than_this_side_accepts_is_refused_before_it_is_read(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    wire.send_message(a, 1, wire.encode_command(STORE_RQ), b"\x00" * 5000, 0)  # one 5 KB PDU
    with pytest.raises(wire.WireError, match="larger than the maximum length of 4096"):
        wire.MessageReader(b, 4096).next()
