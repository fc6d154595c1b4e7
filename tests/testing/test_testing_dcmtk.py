"""The DCMTK helpers against the real tools: storescu into storescp, echoscu, port handling."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import pydicom
import pytest

from engine.testing import dcmtk
from engine.testing.corpus import pydicom_data_dir, pydicom_test_files_dir
from engine.testing.dcmtk import (
    StoreSCP,
    free_port,
    port_bound,
    run_echoscu,
    run_storescu,
    wait_for_port,
)
from engine.testing.series import SeriesFiles

pytestmark = pytest.mark.dcmtk

# One real file per interesting transfer syntax; they must arrive exactly as they are.
_COMPRESSED = {
    "US1_J2KR.dcm": "1.2.840.10008.1.2.4.90",
    "MR2_J2KI.dcm": "1.2.840.10008.1.2.4.91",
    "OBXXXX1A_rle.dcm": "1.2.840.10008.1.2.5",
    "emri_small_jpeg_ls_lossless.dcm": "1.2.840.10008.1.2.4.80",
    "JPEGLSNearLossless_08.dcm": "1.2.840.10008.1.2.4.81",
    "JPEG-LL.dcm": "1.2.840.10008.1.2.4.70",
    "JPGExtended.dcm": "1.2.840.10008.1.2.4.51",
    "SC_rgb_jpeg_dcmtk.dcm": "1.2.840.10008.1.2.4.50",
    "SC_rgb_expb.dcm": "1.2.840.10008.1.2.2",
    "image_dfl.dcm": "1.2.840.10008.1.2.1.99",
}


def _corpus_file(name: str) -> Path:
    for directory in (pydicom_test_files_dir(), pydicom_data_dir()):
        if directory is not None and (directory / name).is_file():
            return directory / name
    raise FileNotFoundError(name)


def _data_set_bytes(path: Path) -> bytes:
    """The bytes after the file meta group: what travelled over the network."""
    data = path.read_bytes()
    assert data[128:132] == b"DICM", path
    (meta_length,) = struct.unpack("<I", data[140:144])
    return data[144 + meta_length :]


def _by_sop_uid(paths: list[Path]) -> dict[str, Path]:
    return {
        str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p
        for p in paths
    }


def test_free_port_is_bindable_and_wait_for_port_sees_a_listener() -> None:
    port = free_port()
    assert not port_bound("127.0.0.1", port)
    with pytest.raises(TimeoutError, match=str(port)):
        wait_for_port("127.0.0.1", port, timeout=0.2)
    with socket.socket() as server:
        server.bind(("127.0.0.1", port))
        server.listen()
        assert port_bound("127.0.0.1", port)
        wait_for_port("127.0.0.1", port, timeout=5)


def test_series_arrives_byte_identical(ct_series: SeriesFiles, tmp_path: Path) -> None:
    files = list(ct_series.files[:10])
    with StoreSCP(tmp_path / "received", ae_title="DEST") as scp:
        result = run_storescu(scp.host, scp.port, files, called_ae="DEST")
        received = scp.files()
    assert result.returncode == 0, result.stderr
    sent, got = _by_sop_uid(files), _by_sop_uid(received)
    assert sent.keys() == got.keys()
    for uid, path in sent.items():
        assert _data_set_bytes(got[uid]) == _data_set_bytes(path)


def test_directories_are_scanned_recursively(
    ct_series: SeriesFiles, tmp_path: Path
) -> None:
    with StoreSCP(tmp_path / "received") as scp:
        result = run_storescu(
            scp.host, scp.port, [ct_series.directory], called_ae=scp.ae_title
        )
        assert result.returncode == 0, result.stderr
        assert len(scp.files()) == len(ct_series.files)


@pytest.mark.parametrize("max_contexts", [None, 4])
def test_compressed_files_travel_as_they_are(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, max_contexts: int | None
) -> None:
    if (
        max_contexts is not None
    ):  # 4 contexts hold two (SOP class, syntax) pairs: several associations
        monkeypatch.setattr(dcmtk, "MAX_CONTEXTS", max_contexts)
    files = [_corpus_file(name) for name in _COMPRESSED]
    with StoreSCP(tmp_path / "received") as scp:
        result = run_storescu(scp.host, scp.port, files, called_ae=scp.ae_title)
        received = _by_sop_uid(scp.files())
    assert result.returncode == 0, result.stderr
    associations = len(result.args)
    assert associations == 1 if max_contexts is None else associations > 1
    assert len(received) == len(
        files
    )  # the chosen files have distinct SOP Instance UIDs
    for path in files:
        sent = pydicom.dcmread(path)
        arrived = pydicom.dcmread(received[str(sent.SOPInstanceUID)])
        assert arrived.file_meta.TransferSyntaxUID == _COMPRESSED[path.name], path.name
        assert arrived.PixelData == sent.PixelData, path.name
        assert set(arrived.keys()) == set(sent.keys()), path.name
        # storescu re-encodes what it reads: undefined-length sequences travel with explicit lengths,
        # encapsulated Pixel Data as OB whatever the file said, deflate as its zlib makes it. Anything
        # already in that form arrives byte for byte.
        undefined = any(e.VR == "SQ" and e.is_undefined_length for e in sent.iterall())
        odd_vr = (
            sent.file_meta.TransferSyntaxUID.is_encapsulated
            and sent["PixelData"].VR != "OB"
        )
        if (
            not (undefined or odd_vr)
            and _COMPRESSED[path.name] != "1.2.840.10008.1.2.1.99"
        ):
            assert _data_set_bytes(
                received[str(sent.SOPInstanceUID)]
            ) == _data_set_bytes(path), path.name


def test_echoscu_and_a_wrong_port(tmp_path: Path) -> None:
    with StoreSCP(tmp_path / "received", ae_title="ECHOED") as scp:
        assert run_echoscu(scp.host, scp.port, called_ae="ECHOED").returncode == 0
    assert scp.stop() is not None
    assert (
        run_echoscu("127.0.0.1", free_port(), called_ae="ECHOED", timeout=30).returncode
        != 0
    )


def test_storescp_that_fails_to_start_is_reported_with_its_output(
    tmp_path: Path,
) -> None:
    with (
        pytest.raises(RuntimeError, match="storescp did not start.*exited") as failure,
        StoreSCP(tmp_path / "received", extra=["--no-such-option"]),
    ):
        pass
    assert "no-such-option" in str(
        failure.value
    )  # storescp's own complaint is in the message
