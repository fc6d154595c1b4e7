"""The retrieve fast path (sub-operations written straight to the socket) where it departs from pynetdicom:
a C-CANCEL read off the wire mid C-GET, a peer that aborts mid C-GET, the stored syntax accepted for a
C-GET requestor that offers it, and an instance stored in another codec transcoded for such a context."""

from __future__ import annotations

import io
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import pydicom
import pytest
from net_helpers import serving
from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from engine.archive import Archive
from engine.config import load_settings
from engine.errors import EngineError
from engine.net import DicomServer, Peer, ScuOptions, scu_get
from engine.testing.dcmtk import LOOPBACK
from engine.testing.series import SeriesFiles, write_ct_series

AE_TITLE = "PIPE_TEST"
JPEGLS_LOSSLESS = "1.2.840.10008.1.2.4.80"
EXPLICIT = "1.2.840.10008.1.2.1"
HTJ2K_RPCL = "1.2.840.10008.1.2.4.202"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
DEFLATED = "1.2.840.10008.1.2.1.99"


@pytest.fixture(scope="module")
def listener(tmp_path_factory: pytest.TempPathFactory, ct_series: SeriesFiles) -> Iterator[tuple[str, int, Archive]]:
    with serving(tmp_path_factory.mktemp("pipeline") / "archive", AE_TITLE) as served:
        for path in ct_series.files:
            served.archive.ingest_file(path)
        yield served.host, served.port, served.archive


def _get(host: str, port: int, on_store: Callable[[Any], int], dimse_timeout: float = 30,
         syntax: str = EXPLICIT) -> tuple[Any, int]:
    """Associate as a pynetdicom C-GET SCU receiving CT in `syntax` only; return (assoc, C-GET context ID)."""
    ae = AE("PIPE_SCU")
    ae.dimse_timeout = dimse_timeout
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage, [syntax])
    assoc = ae.associate(host, port, ae_title=AE_TITLE, ext_neg=[build_role(CTImageStorage, scp_role=True)],
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    context = next(cx for cx in assoc.accepted_contexts
                   if cx.abstract_syntax == StudyRootQueryRetrieveInformationModelGet)
    return assoc, cast(int, context.context_id)


def _identifier(series: SeriesFiles) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "SERIES"
    ds.StudyInstanceUID = series.study_uid
    ds.SeriesInstanceUID = series.series_uid
    return ds


def test_a_c_cancel_stops_a_c_get_and_the_association_goes_on(
    listener: tuple[str, int, Archive], ct_series: SeriesFiles
) -> None:
    host, port, archive = listener
    received: list[str] = []
    cancel_at = 3
    state: dict[str, object] = {}

    def on_store(event: Any) -> int:
        received.append(str(event.request.AffectedSOPInstanceUID))
        if len(received) == cancel_at and not state.get("cancelled"):
            state["cancelled"] = True  # the C-CANCEL-RQ travels while the archive sends the next instance
            event.assoc.send_c_cancel(9, state["context"])
        return 0x0000

    assoc, context = _get(host, port, on_store)
    state["context"] = context
    try:
        finals = [status for status, _ in assoc.send_c_get(_identifier(ct_series),
                                                          StudyRootQueryRetrieveInformationModelGet, msg_id=9)
                  if status and status.Status != 0xFF00]
        assert [f.Status for f in finals] == [0xFE00]  # Cancel: sub-operations terminated
        final = finals[0]
        sent = len(ct_series.files)
        assert cancel_at <= len(received) < sent
        assert final.NumberOfCompletedSuboperations == len(received)
        assert final.NumberOfRemainingSuboperations == sent - len(received)
        # The association is pynetdicom's again: another C-GET on it brings everything.
        received.clear()
        statuses = [status.Status for status, _ in assoc.send_c_get(
            _identifier(ct_series), StudyRootQueryRetrieveInformationModelGet, msg_id=11) if status]
        assert statuses[-1] == 0x0000 and len(received) == sent
    finally:
        assoc.release()
    assert archive.stats().instances == len(ct_series.files)


def test_a_c_cancel_stops_a_c_move_counting_what_the_destination_holds(tmp_path: Path, ct_series: SeriesFiles) -> None:
    """The pipeline runs ahead of pynetdicom's loop: an instance it had sent when the cancel came is in
    the destination and must be counted (PS3.4 C.4.2.3.1), not left among the remaining. Every C-STORE
    names the AE that asked for the move (PS3.7 9.1.1.1), not the archive."""
    received: list[str] = []
    originators: set[str] = set()
    state: dict[str, Any] = {}

    def on_store(event: Any) -> int:
        received.append(str(event.request.AffectedSOPInstanceUID))
        originators.add(str(event.request.MoveOriginatorApplicationEntityTitle))
        if len(received) == 3:
            state["mover"].send_c_cancel(5, state["context"])
        elif len(received) > 3:
            time.sleep(0.05)  # a slow destination: the cancel arrives while instances are still on the way
        return 0x0000

    destination = AE("DEST")
    destination.add_supported_context(CTImageStorage, [EXPLICIT, HTJ2K_RPCL])
    scp = destination.start_server((LOOPBACK, 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        remote = {"DEST": f"{LOOPBACK}:{scp.socket.getsockname()[1]}"}
        with serving(tmp_path / "archive", AE_TITLE, remote_aes=remote) as served:
            for path in ct_series.files:
                served.archive.ingest_file(path)
            mover = AE("MOVER")
            mover.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
            assoc = mover.associate(served.host, served.port, ae_title=AE_TITLE)
            assert assoc.is_established
            state["mover"], state["context"] = assoc, assoc.accepted_contexts[0].context_id
            try:
                finals = [status for status, _ in assoc.send_c_move(
                    _identifier(ct_series), "DEST", StudyRootQueryRetrieveInformationModelMove, msg_id=5)
                    if status and status.Status != 0xFF00]
            finally:
                assoc.release()
    finally:
        scp.shutdown()
    assert [f.Status for f in finals] == [0xFE00]
    final, sent = finals[0], len(ct_series.files)
    assert 3 <= len(received) < sent
    assert final.NumberOfCompletedSuboperations == len(received)
    assert final.NumberOfRemainingSuboperations == sent - len(received)
    assert originators == {"MOVER"}


def test_a_peer_that_aborts_mid_c_get_leaves_the_archive_serving(
    listener: tuple[str, int, Archive], ct_series: SeriesFiles
) -> None:
    host, port, archive = listener
    received: list[bytes] = []
    aborted = threading.Event()

    def on_store(event: Any) -> int:
        received.append(event.request.DataSet.getvalue())
        if len(received) == 2:
            aborted.set()
            event.assoc.abort()
        return 0x0000

    # pynetdicom's SCU waits out its DIMSE timeout after aborting from a handler: keep it short.
    assoc, _ = _get(host, port, on_store, dimse_timeout=2)
    for _ in assoc.send_c_get(_identifier(ct_series), StudyRootQueryRetrieveInformationModelGet):
        pass
    assert aborted.is_set() and not assoc.is_established
    # The listener and the archive are untouched: a new association retrieves the whole series, exactly.
    whole: dict[str, bytes] = {}

    def keep(event: Any) -> int:
        whole[str(event.request.AffectedSOPInstanceUID)] = event.request.DataSet.getvalue()
        return 0x0000

    again, _ = _get(host, port, keep)
    try:
        statuses = [s.Status for s, _ in again.send_c_get(_identifier(ct_series),
                                                          StudyRootQueryRetrieveInformationModelGet) if s]
    finally:
        again.release()
    assert statuses[-1] == 0x0000 and len(whole) == len(ct_series.files)
    for sop, data in whole.items():
        assert data == archive.read_dataset(sop, EXPLICIT)[1]


def _pixels(path: Path) -> np.ndarray:
    return pydicom.dcmread(path).pixel_array


@pytest.mark.dcmtk
def test_getscu_offering_jpeg_ls_gets_the_stored_codestreams_and_a_transcode_for_the_rest(
    tmp_path: Path,
) -> None:
    """An archive whose profile became jpegls holds both HTJ2K and JPEG-LS instances. getscu +xt offers
    JPEG-LS first: the context is accepted in it, JPEG-LS instances go as stored, HTJ2K ones are transcoded
    (one context per class leaves no other choice), and every instance is pixel-identical to what was sent."""
    files = write_ct_series(tmp_path / "series", 6, rows=128, cols=128)
    series = SeriesFiles.from_files(files)
    archive_dir = tmp_path / "archive"
    with Archive.open(archive_dir) as archive:  # htj2k, the default profile
        for path in files[:3]:
            archive.ingest_file(path)
    settings = load_settings(archive=archive_dir, storage={"profile": "jpegls"},
                             dicom={"host": LOOPBACK, "port": 0, "ae_title": AE_TITLE})
    with Archive(settings) as archive:
        for path in files[3:]:
            archive.ingest_file(path)
        stored = {archive.record(s).codec for s in archive.index.iter_instance_uids()}
        assert stored == {"htj2k", "jpegls"}
        server = DicomServer(archive, settings.dicom)
        host, port = server.start()
        try:
            out = tmp_path / "got"
            out.mkdir()
            done = subprocess.run(
                ["getscu", "-S", "+xt", "-aec", AE_TITLE, "+B", "-od", str(out), host, str(port),
                 "-k", "QueryRetrieveLevel=SERIES", "-k", f"StudyInstanceUID={series.study_uid}",
                 "-k", f"SeriesInstanceUID={series.series_uid}"],
                capture_output=True, text=True, timeout=120, check=False)
        finally:
            server.stop()
    assert done.returncode == 0, done.stdout + done.stderr
    got = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in out.iterdir()}
    sent = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in files}
    assert sorted(got) == sorted(sent)
    for sop, path in got.items():
        meta = pydicom.dcmread(io.BytesIO(path.read_bytes()), stop_before_pixels=True).file_meta
        assert meta.TransferSyntaxUID == JPEGLS_LOSSLESS
        assert np.array_equal(_pixels(path), _pixels(sent[sop])), sop


@pytest.mark.parametrize("syntax", [EXPLICIT_BE, DEFLATED])
def test_a_peer_taking_only_big_endian_or_deflated_data_sets_gets_every_instance_in_it(
    listener: tuple[str, int, Archive], ct_series: SeriesFiles, syntax: str
) -> None:
    """None of an instance's preferred syntaxes (stored, original, uncompressed little endian) was accepted:
    it is decoded into the one the peer took, and still holds the pixels that were sent."""
    host, port, _ = listener
    received: dict[str, tuple[str, Dataset]] = {}

    def on_store(event: Any) -> int:
        dataset = event.dataset
        dataset.file_meta = event.file_meta  # its Transfer Syntax UID tells pydicom how to read the pixels
        received[str(event.request.AffectedSOPInstanceUID)] = (str(event.context.transfer_syntax), dataset)
        return 0

    assoc, _ = _get(host, port, on_store, syntax=syntax)
    try:
        final = [status.Status for status, _ in assoc.send_c_get(_identifier(ct_series),
                                                                  StudyRootQueryRetrieveInformationModelGet)][-1]
    finally:
        assoc.release()
    assert final == 0x0000
    sent = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in ct_series.files}
    assert sorted(received) == sorted(sent)
    for sop, (got_syntax, dataset) in received.items():
        assert got_syntax == syntax
        assert np.array_equal(dataset.pixel_array, _pixels(sent[sop])), sop


def test_pacs_engine_get_refusing_some_instances_counts_them_and_releases(
    listener: tuple[str, int, Archive], ct_series: SeriesFiles
) -> None:
    """scu_get (its own C-STORE receiving on the leased socket): what the receiver refuses is answered with
    a failure status and counted, the rest arrives byte-identical, and the association is released."""
    host, port, archive = listener
    got: dict[int, bytes] = {}
    calls = 0

    refused: set[str] = set()

    def receive(data: bytes, syntax: str) -> None:
        nonlocal calls
        calls += 1
        if calls % 3 == 0:
            header = pydicom.dcmread(io.BytesIO(data), force=True, stop_before_pixels=True)
            refused.add(str(header.SOPInstanceUID))
            raise EngineError("refused by this test")
        got[calls] = data

    peer = Peer(AE_TITLE, host, port)
    summary = scu_get(peer, "SERIES", {"StudyInstanceUID": ct_series.study_uid,
                                       "SeriesInstanceUID": ct_series.series_uid},
                      receive, sop_classes=[CTImageStorage], options=ScuOptions(calling_ae="PIPE_GET"))
    total = len(ct_series.files)
    assert calls == total
    assert summary.failed == total // 3 and summary.completed == total - total // 3
    assert summary.status == 0xB000  # warning: some sub-operations failed
    assert len(summary.failed_uids) == total // 3
    assert set(summary.failed_uids) == refused  # the final response names exactly the refused instances
    stored = {archive.read_dataset(sop, HTJ2K_RPCL)[1] for sop in archive.index.iter_instance_uids()}
    assert set(got.values()) <= stored  # each received data set is an archived one, in its stored syntax
