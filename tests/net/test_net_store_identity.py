"""A C-STORE is stored only as the instance it names: its Affected SOP Class and Instance UIDs must be the
data set's, and its class the presentation context's (PS3.4 B.2.3: A900 Data Set does not match SOP Class).
Whatever is refused is logged and changes nothing, on the direct path and on pynetdicom's."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pynetdicom import AE

from engine.net import _wire as wire
from engine.net._lease import SocketLease
from engine.testing.series import SeriesFiles
from engine.types import EXPLICIT_VR_LE

Listener = Any  # conftest.Listener
VERIFICATION = "1.2.840.10008.1.1"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


def _associate(listener: Listener) -> Any:
    ae = AE(ae_title="CRAFTED")
    ae.add_requested_context(CT_IMAGE_STORAGE, [EXPLICIT_VR_LE])
    ae.add_requested_context(MR_IMAGE_STORAGE, [EXPLICIT_VR_LE])
    ae.add_requested_context(VERIFICATION)
    assoc = ae.associate(listener.host, listener.port, ae_title=listener.ae_title)
    assert assoc.is_established
    return assoc


def _dataset(path: Path, **changes: str) -> tuple[pydicom.Dataset, bytes]:
    """The file's data set with `changes` made, encoded in explicit VR little endian."""
    ds = pydicom.dcmread(path)
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, False
    write_dataset(out, ds)
    return ds, out.getvalue()


def _store(assoc: Any, context_class: str, sop_class: str, sop_uid: str, data: bytes | None) -> tuple[int, str]:
    """One C-STORE-RQ written by hand on the context for `context_class`: (status, error comment)."""
    context = next(cx for cx in assoc.accepted_contexts if cx.abstract_syntax == context_class)
    command = wire.encode_command({
        wire.AFFECTED_SOP_CLASS: sop_class, wire.COMMAND_FIELD: wire.C_STORE_RQ, wire.MESSAGE_ID: 5,
        wire.PRIORITY: 0, wire.DATA_SET_TYPE: wire.NO_DATA_SET if data is None else wire.DATA_SET_PRESENT,
        wire.AFFECTED_SOP_INSTANCE: sop_uid,
    })  # fmt: skip
    with SocketLease(assoc, 30) as sock:
        wire.send_message(sock, int(context.context_id), command, data, 16384)
        response = wire.MessageReader(sock).next()
    return wire.us(response.command, wire.STATUS) or 0, wire.text(response.command, wire.ERROR_COMMENT)


def _store_once(listener: Listener, context_class: str, sop_class: str, sop_uid: str, data: bytes | None
                ) -> tuple[int, str]:
    """_store on an association of its own, released afterwards."""
    assoc = _associate(listener)
    try:
        return _store(assoc, context_class, sop_class, sop_uid, data)
    finally:
        assoc.release()


@pytest.fixture
def stored_one(listener: Listener, ct_series: SeriesFiles) -> str:
    """One instance stored before the test sends anything wrong; it must stay intact."""
    assoc = _associate(listener)
    try:
        assert assoc.send_c_store(ct_series.files[0]).Status == 0
    finally:
        assoc.release()
    return str(pydicom.dcmread(ct_series.files[0], stop_before_pixels=True).SOPInstanceUID)


def _unchanged(listener: Listener, kept: str, original: bytes) -> None:
    listener.archive.wait_for_ingests()
    assert listener.archive.stats().instances == 1
    assert listener.archive.read_dataset(kept)[1] == original
    assert listener.archive.verify() == []


@pytest.mark.parametrize("pynetdicom_path", [False, True], ids=["direct", "pynetdicom"])
def test_a_data_set_of_another_instance_than_the_request_names_is_refused(
    listener: Listener, ct_series: SeriesFiles, stored_one: str, pynetdicom_path: bool, caplog: pytest.LogCaptureFixture
) -> None:
    original = listener.archive.read_dataset(stored_one)[1]
    _, data = _dataset(ct_series.files[1])
    named = "1.2.826.0.1.3680043.8.498.777"
    caplog.set_level(logging.WARNING, logger="engine.net")
    assoc = _associate(listener)
    try:
        if pynetdicom_path:  # anything but a C-STORE first: pynetdicom reads what follows
            assert assoc.send_c_echo().Status == 0
        status, comment = _store(assoc, CT_IMAGE_STORAGE, CT_IMAGE_STORAGE, named, data)
        assert assoc.send_c_echo().Status == 0  # the association goes on
    finally:
        assoc.release()
    assert status == 0xA900
    assert comment.startswith("SOP Instance UID is not the request's: data set ")
    assert any("C-STORE refused" in r.getMessage() and named in r.getMessage() for r in caplog.records)
    _unchanged(listener, stored_one, original)


def test_a_data_set_of_another_class_than_the_request_names_is_refused(
    listener: Listener, ct_series: SeriesFiles, stored_one: str
) -> None:
    """A worklist item (or any other class) cannot come in under a storage class's name."""
    original = listener.archive.read_dataset(stored_one)[1]
    ds, data = _dataset(ct_series.files[1], SOPClassUID="1.2.840.10008.5.1.4.31")  # Modality Worklist
    status, comment = _store_once(listener, CT_IMAGE_STORAGE, CT_IMAGE_STORAGE, str(ds.SOPInstanceUID), data)
    assert status == 0xA900
    assert comment.startswith("SOP Class UID is not the request's: data set 1.2.840.10008.5")  # 64 characters
    _unchanged(listener, stored_one, original)


@pytest.mark.parametrize("context_class", [MR_IMAGE_STORAGE, VERIFICATION])
def test_a_request_on_the_context_of_another_class_is_refused(
    listener: Listener, ct_series: SeriesFiles, stored_one: str, context_class: str
) -> None:
    """CT data named as CT, sent on the MR context (direct path) or the Verification one (pynetdicom's)."""
    original = listener.archive.read_dataset(stored_one)[1]
    ds, data = _dataset(ct_series.files[1])
    status, comment = _store_once(listener, context_class, CT_IMAGE_STORAGE, str(ds.SOPInstanceUID), data)
    assert status == 0xA900
    assert comment.startswith("SOP Class UID is not the context's: request 1.2.840.10008.5.1")
    _unchanged(listener, stored_one, original)


def test_a_request_without_a_data_set_is_refused_and_logged(
    listener: Listener, ct_series: SeriesFiles, stored_one: str, caplog: pytest.LogCaptureFixture
) -> None:
    original = listener.archive.read_dataset(stored_one)[1]
    caplog.set_level(logging.INFO, logger="engine.net")
    status, comment = _store_once(listener, CT_IMAGE_STORAGE, CT_IMAGE_STORAGE, "1.2.3.4", None)
    assert (status, comment) == (0xC000, "the C-STORE request carries no data set")
    messages = [r.getMessage() for r in caplog.records]
    assert any("C-STORE refused" in m and "carries no data set" in m for m in messages)
    assert any("association from CRAFTED" in m and "1 refused" in m for m in messages)
    _unchanged(listener, stored_one, original)


def test_the_request_as_the_data_set_names_it_is_stored(listener: Listener, ct_series: SeriesFiles) -> None:
    """What every storescu sends: class and instance agree everywhere."""
    ds, data = _dataset(ct_series.files[2])
    status, _ = _store_once(listener, CT_IMAGE_STORAGE, CT_IMAGE_STORAGE, str(ds.SOPInstanceUID), data)
    assert status == 0
    listener.archive.wait_for_ingests()
    assert listener.archive.read_dataset(str(ds.SOPInstanceUID))[1] == data
