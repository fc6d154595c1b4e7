"""The listener in process against real peers (DCMTK echoscu/storescu, a pynetdicom SCU) and a real archive."""

from __future__ import annotations

import copy
import io
import logging
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pynetdicom import AE
from pynetdicom import _config as pynetdicom_config
from pynetdicom.presentation import build_context

from engine.net import ACCEPTED_TRANSFER_SYNTAXES, storage_sop_classes
from engine.net._contexts import SharedContexts, supported_contexts
from engine.testing.dcmtk import run_echoscu, run_storescu
from engine.testing.series import SeriesFiles
from engine.types import (
    EXPLICIT_VR_BE,
    EXPLICIT_VR_LE,
    HTJ2K_LOSSLESS_RPCL,
    IMPLICIT_VR_LE,
    JPEG_BASELINE,
    JPEGLS_LOSSLESS,
)

pytestmark = pytest.mark.dcmtk

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
US_IMAGE_STORAGE_RETIRED = "1.2.840.10008.5.1.4.1.1.6"
PRIVATE_SOP_CLASS = "1.2.826.0.1.3680043.9.9999.1"
Listener = Any  # net_helpers.Listener: archive, server, host, port, ae_title

# storescu -d prints each C-STORE response's status as "DIMSE Status : 0xa902: ..."
_STATUS = re.compile(r"DIMSE Status\s*:\s*0x([0-9a-fA-F]{4})")


def response_statuses(storescu_output: str) -> list[int]:
    """Every C-STORE response status storescu -d reported, in order."""
    return [int(code, 16) for code in _STATUS.findall(storescu_output)]


def dataset_bytes(part10: bytes) -> tuple[str, bytes]:
    """(transfer syntax UID, the data set bytes after the file meta) of a Part-10 file."""
    meta = pydicom.dcmread(io.BytesIO(part10), stop_before_pixels=True).file_meta
    end = 132 + 12 + int(meta.FileMetaInformationGroupLength)
    return str(meta.TransferSyntaxUID), part10[end:]


def test_echo(listener: Listener) -> None:
    done = run_echoscu(listener.host, listener.port, called_ae=listener.ae_title)
    assert done.returncode == 0, done.stderr


def test_negotiation_accepts_every_syntax_and_prefers_uncompressed_then_lossless(listener: Listener) -> None:
    ae = AE(ae_title="NEGOTIATE")
    requested = [build_context(CT_IMAGE_STORAGE, [syntax]) for syntax in ACCEPTED_TRANSFER_SYNTAXES]
    requested += [
        build_context(CT_IMAGE_STORAGE, [EXPLICIT_VR_BE, IMPLICIT_VR_LE, EXPLICIT_VR_LE]),
        build_context(CT_IMAGE_STORAGE, [JPEG_BASELINE, HTJ2K_LOSSLESS_RPCL, JPEGLS_LOSSLESS]),
        build_context(US_IMAGE_STORAGE_RETIRED, [JPEG_BASELINE]),
        build_context(PRIVATE_SOP_CLASS, [EXPLICIT_VR_LE]),
    ]
    ae.requested_contexts = requested
    assoc = ae.associate(listener.host, listener.port, ae_title=listener.ae_title)
    try:
        assert assoc.is_established
        accepted = {cx.context_id: (cx.abstract_syntax, cx.transfer_syntax[0]) for cx in assoc.accepted_contexts}
    finally:
        assoc.release()
    ids = [2 * k + 1 for k in range(len(requested))]
    for k, syntax in enumerate(ACCEPTED_TRANSFER_SYNTAXES):
        assert accepted[ids[k]] == (CT_IMAGE_STORAGE, syntax)
    n = len(ACCEPTED_TRANSFER_SYNTAXES)
    assert accepted[ids[n]][1] == EXPLICIT_VR_LE  # uncompressed choice: explicit little endian
    assert accepted[ids[n + 1]][1] == JPEGLS_LOSSLESS  # lossless before lossy, never a lossy re-encode
    assert accepted[ids[n + 2]] == (US_IMAGE_STORAGE_RETIRED, JPEG_BASELINE)  # retired classes still stored
    assert ids[n + 3] not in accepted  # a private SOP class is not negotiated


def test_every_storage_class_of_pynetdicom_and_the_retired_ones_is_offered() -> None:
    classes = storage_sop_classes()
    assert len(classes) == len(set(classes)) > 170
    assert CT_IMAGE_STORAGE in classes and US_IMAGE_STORAGE_RETIRED in classes
    assert "1.2.840.10008.1.3.10" not in classes  # DICOMDIR is not an instance


def test_calling_ae_allow_list(
    start_listener: Callable[..., Listener], tmp_archive: Path, caplog: pytest.LogCaptureFixture
) -> None:
    listener = start_listener(tmp_archive, allowed_calling_aes=("MODALITY1",))
    with caplog.at_level(logging.INFO, logger="engine.net"):
        refused = run_echoscu(listener.host, listener.port, called_ae=listener.ae_title, calling_ae="INTRUDER")
        allowed = run_echoscu(listener.host, listener.port, called_ae=listener.ae_title, calling_ae="MODALITY1")
    assert refused.returncode != 0
    assert "Calling AE Title Not Recognized" in refused.stderr
    assert allowed.returncode == 0, allowed.stderr
    rejections = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
    assert len(rejections) == 1
    assert "INTRUDER" in rejections[0] and "allowed_calling_aes" in rejections[0]


def test_called_ae_title_is_checked_only_when_configured(
    start_listener: Callable[..., Listener], tmp_archive: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Off (the default): a peer configured with another title for this node still associates, as with
    # DCMTK's storescp. On: it is rejected with reason 7, logged and audited with the title it called.
    lenient = start_listener(tmp_archive)
    assert run_echoscu(lenient.host, lenient.port, called_ae="OLD_NAME").returncode == 0
    strict = start_listener(tmp_path / "strict", check_called_ae=True)
    with caplog.at_level(logging.INFO, logger="engine.net"):
        refused = run_echoscu(strict.host, strict.port, called_ae="OLD_NAME", calling_ae="MODALITY1")
        allowed = run_echoscu(strict.host, strict.port, called_ae=strict.ae_title, calling_ae="MODALITY1")
    assert refused.returncode != 0
    assert "Called AE Title Not Recognized" in refused.stderr
    assert allowed.returncode == 0, allowed.stderr
    [rejection] = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
    assert "MODALITY1" in rejection and "'OLD_NAME'" in rejection and "check_called_ae" in rejection


def test_series_arrives_byte_identical_and_is_logged_per_association(
    listener: Listener, ct_series: SeriesFiles, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="engine.net"):
        done = run_storescu(listener.host, listener.port, ct_series.files, called_ae=listener.ae_title, extra=["-d"])
    assert done.returncode == 0, done.stderr[-2000:]
    assert response_statuses(done.stderr) == [0] * len(ct_series.files)
    sops = listener.archive.instance_uids(ct_series.series_uid)
    assert len(sops) == len(ct_series.files)
    for path in ct_series.files:
        sop = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        assert dataset_bytes(listener.archive.read_instance(sop)) == dataset_bytes(path.read_bytes())
    summaries = [r.getMessage() for r in caplog.records if "association from STORESCU" in r.getMessage()]
    assert len(summaries) == 1
    assert "released after" in summaries[0] and f": {len(ct_series.files)} stored, 0 already present" in summaries[0]


def test_identical_resend_succeeds_as_already_present(
    listener: Listener, ct_series: SeriesFiles, caplog: pytest.LogCaptureFixture
) -> None:
    files = ct_series.files[:5]
    first = run_storescu(listener.host, listener.port, files, called_ae=listener.ae_title)
    before = listener.archive.stats()
    with caplog.at_level(logging.INFO, logger="engine.net"):
        again = run_storescu(listener.host, listener.port, files, called_ae=listener.ae_title, extra=["-d"])
    assert first.returncode == 0 and again.returncode == 0, again.stderr[-2000:]
    assert response_statuses(again.stderr) == [0] * 5
    assert listener.archive.stats() == before
    assert any(": 0 stored, 5 already present" in r.getMessage() for r in caplog.records)


def _modified(src: Path, out: Path, change: str) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the invalid values we write on purpose
        ds = pydicom.dcmread(src)
        if change == "rows":
            ds.Rows = ds.Rows + 1  # pixel data now one row short of what Rows x Columns needs
        elif change == "sop_uid_traversal":
            ds.SOPInstanceUID = "1.2.3.4/../../../etc"
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        elif change == "study_uid_traversal":
            ds.StudyInstanceUID = "../../../tmp/evil"
        elif change == "same_uid_other_content":
            ds.PatientName = "Someone^Else"
        ds.save_as(out)
    return out


REFUSALS = [
    ("rows", 0xA902, "Pixel Data"),
    ("sop_uid_traversal", 0xA901, "SOPInstanceUID"),
    ("study_uid_traversal", 0xA901, "StudyInstanceUID"),
    ("same_uid_other_content", 0x0111, ""),
]


@pytest.mark.parametrize(("change", "code", "comment"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_refused_instance_gets_its_status_a_log_line_and_changes_nothing(
    listener: Listener,
    ct_series: SeriesFiles,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    change: str,
    code: int,
    comment: str,
) -> None:
    good = run_storescu(listener.host, listener.port, ct_series.files[:3], called_ae=listener.ae_title)
    assert good.returncode == 0
    before = listener.archive.stats()
    bad = _modified(ct_series.files[0], tmp_path / f"{change}.dcm", change)
    with caplog.at_level(logging.WARNING, logger="engine.net"):
        done = run_storescu(listener.host, listener.port, [bad], called_ae=listener.ae_title, extra=["-d"])
    assert done.returncode != 0  # storescu halts on a failed store
    assert response_statuses(done.stderr) == [code]
    assert "ErrorComment" in done.stderr and comment in done.stderr
    refusals = [r.getMessage() for r in caplog.records if r.getMessage().startswith("C-STORE refused")]
    assert len(refusals) == 1
    assert "calling AE STORESCU" in refusals[0] and f"0x{code:04X}" in refusals[0]
    assert listener.archive.stats() == before
    assert listener.archive.verify() == []


@pytest.mark.parametrize("cut", ["pixel_data", "header"])
def test_truncated_data_set_is_refused(
    listener: Listener, ct_series: SeriesFiles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cut: str
) -> None:
    # DCMTK will not send a truncated file, so a pynetdicom SCU sends the file's bytes as they are.
    data = ct_series.files[0].read_bytes()
    _, body = dataset_bytes(data)
    meta_len = len(data) - len(body)
    keep = len(data) - 1000 if cut == "pixel_data" else meta_len + 300
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(data[:keep])
    monkeypatch.setattr(pynetdicom_config, "STORE_SEND_CHUNKED_DATASET", True)
    ae = AE(ae_title="RAWSENDER")
    ae.add_requested_context(CT_IMAGE_STORAGE, [EXPLICIT_VR_LE])
    assoc = ae.associate(listener.host, listener.port, ae_title=listener.ae_title)
    assert assoc.is_established
    try:
        status = assoc.send_c_store(truncated)
    finally:
        assoc.release()
    assert status.Status in (0xC000, 0xA902), hex(status.Status)
    assert status.ErrorComment
    assert listener.archive.stats().instances == 0
    assert listener.archive.verify() == []


def test_stop_is_idempotent_and_address_needs_a_start(start_listener: Callable[..., Listener], tmp_archive: Path) -> None:
    listener = start_listener(tmp_archive)
    listener.server.stop()
    listener.server.stop()
    with pytest.raises(RuntimeError, match="not started"):
        _ = listener.server.address


def test_each_association_gets_its_own_copy_of_the_supported_contexts() -> None:
    """SharedContexts' cheap per-association copy: new context objects with their own transfer syntax
    lists (what an association reorders), equal to the listener's, which stay as they were."""
    shared = SharedContexts(supported_contexts(query_retrieve=True))
    first, second = copy.deepcopy(shared), copy.deepcopy(shared)
    assert type(first) is list and len(first) == len(shared)
    for mine, theirs, original in zip(first, second, shared, strict=True):
        assert mine is not original and mine is not theirs
        assert mine.abstract_syntax == original.abstract_syntax
        assert mine.transfer_syntax == original.transfer_syntax
        assert (mine.scu_role, mine.scp_role) == (original.scu_role, original.scp_role)
    before = list(shared[1].transfer_syntax)
    first[1].transfer_syntax = list(reversed(first[1].transfer_syntax))  # what the C-GET role negotiation does
    first[2]._transfer_syntax.append(first[2].transfer_syntax[0])
    assert shared[1].transfer_syntax == before == second[1].transfer_syntax
    assert shared[2].transfer_syntax == second[2].transfer_syntax != first[2].transfer_syntax
