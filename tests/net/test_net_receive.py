"""C-STOREs read straight off the socket (engine.net._receive): an association that does something else
goes back to pynetdicom without losing a message, a peer that vanishes mid data set loses nothing that
was acknowledged, and stopping the listener ends an association the direct path is waiting on."""

from __future__ import annotations

import io
import logging
import select
import socket
import threading
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pynetdicom import AE, evt

from engine.net import _wire as wire
from engine.net._lease import SocketLease
from engine.testing.series import SeriesFiles
from engine.types import EXPLICIT_VR_LE

Listener = Any  # conftest.Listener
VERIFICATION = "1.2.840.10008.1.1"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def dataset_bytes(part10: bytes) -> bytes:
    """The data set bytes after a Part-10 file's meta information."""
    meta = pydicom.dcmread(io.BytesIO(part10), stop_before_pixels=True).file_meta
    return part10[132 + 12 + int(meta.FileMetaInformationGroupLength):]


def _associate(listener: Listener) -> Any:
    ae = AE(ae_title="MIXED")
    ae.add_requested_context(CT_IMAGE_STORAGE, [EXPLICIT_VR_LE])
    ae.add_requested_context(VERIFICATION)
    assoc = ae.associate(listener.host, listener.port, ae_title=listener.ae_title)
    assert assoc.is_established
    return assoc


def _echo_status(listener: Listener) -> int:
    """C-ECHO on a new association: the listener still serves after what a test did to another one."""
    assoc = _associate(listener)
    try:
        return int(assoc.send_c_echo().Status)
    finally:
        assoc.release()


def _sop(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def test_stores_an_echo_and_more_stores_on_one_association(listener: Listener, ct_series: SeriesFiles) -> None:
    files = ct_series.files[:4]
    assoc = _associate(listener)
    try:
        first = assoc.send_c_store(files[0])  # read by the direct path
        echo = assoc.send_c_echo()  # not a C-STORE: the association goes back to pynetdicom
        rest = [assoc.send_c_store(path) for path in files[1:]]
    finally:
        assoc.release()
    assert [first.Status, echo.Status, *(s.Status for s in rest)] == [0, 0, 0, 0, 0]
    listener.archive.wait_for_ingests()
    for path in files:
        assert listener.archive.read_dataset(_sop(path))[1] == dataset_bytes(path.read_bytes())


def test_a_peer_gone_mid_data_set_loses_nothing_acknowledged(listener: Listener, ct_series: SeriesFiles) -> None:
    kept, cut = ct_series.files[:2]
    assoc = _associate(listener)
    assert assoc.send_c_store(kept).Status == 0
    context = next(cx for cx in assoc.accepted_contexts if cx.abstract_syntax == CT_IMAGE_STORAGE)
    data = dataset_bytes(cut.read_bytes())
    command = wire.encode_command({
        wire.AFFECTED_SOP_CLASS: CT_IMAGE_STORAGE, wire.COMMAND_FIELD: wire.C_STORE_RQ, wire.MESSAGE_ID: 2,
        wire.PRIORITY: 0, wire.DATA_SET_TYPE: wire.DATA_SET_PRESENT, wire.AFFECTED_SOP_INSTANCE: _sop(cut),
    })  # fmt: skip
    framed = b"".join(wire.message_parts(int(context.context_id), command, data, 16384))
    with SocketLease(assoc, 10) as sock:  # this test's own side of the association, written by hand
        sock.sendall(framed[: len(framed) // 2])
        sock.close()  # gone with half the data set sent
    assoc.abort()
    # The listener still serves, the instance acknowledged before is intact, the cut one is not there.
    assert _echo_status(listener) == 0
    listener.archive.wait_for_ingests()
    assert listener.archive.stats().instances == 1
    assert listener.archive.read_dataset(_sop(kept))[1] == dataset_bytes(kept.read_bytes())
    assert listener.archive.verify() == []


def test_stopping_the_listener_ends_an_association_waiting_on_the_direct_path(
    start_listener: Any, tmp_path: Path, ct_series: SeriesFiles
) -> None:
    listener = start_listener(tmp_path / "archive")
    assoc = _associate(listener)
    assert assoc.send_c_store(ct_series.files[0]).Status == 0  # the direct path now waits for the next PDU
    stopped = threading.Event()

    def stop() -> None:
        listener.server.stop(grace=0.5)
        stopped.set()

    thread = threading.Thread(target=stop)
    thread.start()
    thread.join(60)
    assert stopped.is_set()  # stop() aborted the association instead of waiting on it forever
    assoc.abort()
    assert listener.archive.stats().instances == 1


def test_a_pdu_declared_longer_than_the_listener_accepts_is_refused(listener: Listener) -> None:
    assoc = _associate(listener)
    with SocketLease(assoc, 10) as sock:  # a header declaring 50 MB against the listener's 256 KiB maximum
        sock.sendall(b"\x04\x00" + (50_000_000).to_bytes(4, "big") + b"\x00" * 64)
        assert sock.recv(1024)[:1] == b"\x07"  # the listener answers A-ABORT instead of reading 50 MB
    assoc.abort()
    assert _echo_status(listener) == 0
    assert listener.archive.stats().instances == 0


def test_what_is_queued_during_a_lease_is_sent_before_the_next_read(listener: Listener) -> None:
    """The lease's promise the direct path's abort relies on: after the lease, the DUL first sends what
    was queued meanwhile, then reads. Here the peer's C-ECHO-RSP already waits on the socket when the
    lease ends, and the abort queued during the lease goes out before the DUL reads that response."""
    order: list[str] = []
    ae = AE(ae_title="MIXED")
    ae.add_requested_context(VERIFICATION)
    handlers = [(evt.EVT_PDU_SENT, lambda event: order.append(f"sent {type(event.pdu).__name__}")),
                (evt.EVT_PDU_RECV, lambda event: order.append(f"read {type(event.pdu).__name__}"))]  # fmt: skip
    assoc = ae.associate(listener.host, listener.port, ae_title=listener.ae_title, evt_handlers=handlers)
    assert assoc.is_established
    context = assoc.accepted_contexts[0]
    echo = wire.encode_command({wire.AFFECTED_SOP_CLASS: VERIFICATION, wire.COMMAND_FIELD: 0x0030,
                                wire.MESSAGE_ID: 7, wire.DATA_SET_TYPE: wire.NO_DATA_SET})  # fmt: skip
    with SocketLease(assoc, 10) as sock:
        order.append("lease")
        wire.send_message(sock, int(context.context_id), echo, None, 16384)
        assert select.select([sock], [], [], 10)[0]  # the C-ECHO-RSP has arrived, unread
        assoc.abort(block=False)
    assoc.dul.join(10)
    assert not assoc.dul.is_alive()
    after = order[order.index("lease") + 1:]
    assert after[0] == "sent A_ABORT_RQ"  # before "read P_DATA_TF", which the DUL then ignores
    assert _echo_status(listener) == 0


def test_stopping_the_listener_closes_a_connection_that_never_asked_for_an_association(
    start_listener: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A TCP connection without an A-ASSOCIATE-RQ: the stop aborted it, which pynetdicom's state machine has
    no event for in that state (its reactor thread died of InvalidEventError), and then waited for the
    request until the ACSE timeout, 30 s of every `serve` stop. Now the connection is closed at once."""
    listener = start_listener(tmp_path / "archive")
    caplog.set_level(logging.INFO, logger="engine.net")
    idle = socket.create_connection((listener.host, listener.port))
    try:
        pending = listener.server._server.active_associations  # pynetdicom's list: the connection is taken
        while not pending:
            select.select([], [], [], 0.001)
            pending = listener.server._server.active_associations
        listener.server.stop()
        assert idle.recv(1) == b""  # closed by the listener
    finally:
        idle.close()
    messages = [r.getMessage() for r in caplog.records]
    assert "closing a connection at shutdown that has not asked for an association" in messages
    assert not [m for m in messages if "aborting association" in m]
