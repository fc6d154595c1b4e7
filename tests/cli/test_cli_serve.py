"""`pacs-engine serve` as a real process driven by DCMTK: concurrency, refusals, SIGTERM and SIGKILL."""

from __future__ import annotations

import io
import re
import signal
import subprocess
import threading
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pydicom
import pytest

from engine.testing.dcmtk import run_echoscu, run_storescu, storescu_acknowledged
from engine.testing.series import SeriesFiles
from engine.testing.server import ServerHandle, running_server

pytestmark = pytest.mark.dcmtk

_SUMMARY = re.compile(r"association from STORESCU at \S+ released after [\d.]+ s: (\d+) stored, (\d+) already present")


def read_meta(path: Path) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path, stop_before_pixels=True)


def sop_uid(path: Path) -> str:
    return str(read_meta(path).SOPInstanceUID)


def dataset_bytes(part10: bytes) -> tuple[str, bytes]:
    """(transfer syntax UID, the data set bytes after the file meta) of a Part-10 file."""
    meta = pydicom.dcmread(io.BytesIO(part10), stop_before_pixels=True).file_meta
    end = 132 + 12 + int(meta.FileMetaInformationGroupLength)
    return str(meta.TransferSyntaxUID), part10[end:]


def exported_path(out: Path, source: Path) -> Path:
    """Where `export` puts the instance of `source`: OUT/<study>/<series>/<sop>.dcm."""
    meta = read_meta(source)
    return out / str(meta.StudyInstanceUID) / str(meta.SeriesInstanceUID) / f"{meta.SOPInstanceUID}.dcm"



def _store(server: ServerHandle, files: list[Path] | tuple[Path, ...], *extra: str) -> subprocess.CompletedProcess[str]:
    return run_storescu(server.host, server.port, files, called_ae=server.ae_title, extra=extra)


def test_serve_echo_store_and_export_identical(
    cli: Callable[..., Any], tmp_archive: Path, tmp_path: Path, ct_series: SeriesFiles
) -> None:
    with running_server(tmp_archive) as server:
        echo = run_echoscu(server.host, server.port, called_ae=server.ae_title)
        assert echo.returncode == 0, echo.stderr
        done = _store(server, ct_series.files)
        assert done.returncode == 0, done.stderr[-2000:]
        assert server.stop() == 0, server.log()
    log = server.log()
    assert "association from STORESCU at 127.0.0.1:" in log and f": {len(ct_series.files)} stored" in log
    out = tmp_path / "out"
    run = cli(tmp_archive, "export", "--out", str(out), "--series", ct_series.series_uid)
    assert run.code == 0, run.err
    for source in ct_series.files:
        assert dataset_bytes(exported_path(out, source).read_bytes()) == dataset_bytes(source.read_bytes())


@pytest.mark.parametrize("overlap", [False, True], ids=["quarters", "all-four-send-everything"])
def test_four_concurrent_storescu_into_one_series_lose_nothing(
    cli: Callable[..., Any], tmp_archive: Path, ct_series: SeriesFiles, overlap: bool
) -> None:
    files = list(ct_series.files)
    if overlap:  # every process sends the whole series, each starting at a different slice
        plans = [files[k * 10 :] + files[: k * 10] for k in range(4)]
    else:
        plans = [files[k::4] for k in range(4)]
    with running_server(tmp_archive) as server:
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda plan: _store(server, plan), plans))
        assert server.stop() == 0, server.log()
    for result in results:
        assert result.returncode == 0, result.stderr[-2000:]
    stats = cli(tmp_archive, "stats", "--json").json()
    assert isinstance(stats, dict)
    assert stats["instances"] == len(files) and stats["series"] == 1
    log = server.log()
    counts = _SUMMARY.findall(log)
    assert len(counts) == 4, log
    stored = sum(int(s) for s, _ in counts)
    present = sum(int(p) for _, p in counts)
    assert stored == len(files) and present == (3 * len(files) if overlap else 0)
    assert cli(tmp_archive, "verify").code == 0


def test_refused_instance_is_logged_and_storescu_sees_the_failure(
    cli: Callable[..., Any], tmp_archive: Path, tmp_path: Path, ct_series: SeriesFiles
) -> None:
    ds = pydicom.dcmread(ct_series.files[0])
    ds.Columns = ds.Columns + 2
    bad = tmp_path / "bad.dcm"
    ds.save_as(bad)
    with running_server(tmp_archive) as server:
        good = _store(server, ct_series.files[:2])
        refused = _store(server, [bad], "-d")
        server.stop()
    assert good.returncode == 0
    assert refused.returncode != 0 and "0xa902" in refused.stderr.lower()
    assert re.search(rf"C-STORE refused: calling AE STORESCU, address 127\.0\.0\.1:\d+, SOP instance {ds.SOPInstanceUID}, status 0xA902: ", server.log())
    assert cli(tmp_archive, "stats", "--json").json()["instances"] == 2  # type: ignore[index]


def test_allowed_calling_aes_from_the_archive_config(tmp_archive: Path) -> None:
    (tmp_archive / "engine.toml").write_text('[dicom]\nallowed_calling_aes = ["MODALITY1"]\n')
    with running_server(tmp_archive) as server:
        refused = run_echoscu(server.host, server.port, called_ae=server.ae_title, calling_ae="INTRUDER")
        allowed = run_echoscu(server.host, server.port, called_ae=server.ae_title, calling_ae="MODALITY1")
        server.stop()
    assert refused.returncode != 0 and "Calling AE Title Not Recognized" in refused.stderr
    assert allowed.returncode == 0
    assert "association from INTRUDER at 127.0.0.1" in server.log() and "allowed_calling_aes" in server.log()


def test_a_second_writer_is_refused_while_serve_runs(
    cli: Callable[..., Any], tmp_archive: Path, ct_series: SeriesFiles
) -> None:
    with running_server(tmp_archive) as server:
        run = cli(tmp_archive, "import", "-q", str(ct_series.files[0]))
        server.stop()
    assert run.code == 1 and "open for writing" in run.err and "Traceback" not in run.err


def _send_and_interrupt(server: ServerHandle, files: tuple[Path, ...], sig: int, after: int) -> list[Path]:
    """Stream a storescu run, send `sig` to the server after `after` acknowledged instances.

    Returns the files storescu was told were stored successfully.
    """
    command = ["storescu", "-v", "-aec", server.ae_title, server.host, str(server.port), *map(str, files)]
    acknowledged: list[Path] = []
    with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as storescu:
        assert storescu.stderr is not None
        for path in storescu_acknowledged(storescu.stderr):
            acknowledged.append(path)
            if len(acknowledged) == after:
                threading.Thread(target=server.kill, args=(sig,)).start()
    return acknowledged


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_every_acknowledged_instance_survives_the_server_being_stopped_mid_series(
    cli: Callable[..., Any], tmp_archive: Path, tmp_path: Path, ct_series: SeriesFiles, sig: int
) -> None:
    with running_server(tmp_archive) as server:
        acknowledged = _send_and_interrupt(server, ct_series.files, sig, after=len(ct_series.files) // 3)
        code = server.process.wait(timeout=60)
    assert code == (-signal.SIGKILL if sig == signal.SIGKILL else 0), server.log()
    assert len(acknowledged) >= len(ct_series.files) // 3
    if sig == signal.SIGKILL:
        assert len(acknowledged) < len(ct_series.files)  # SIGTERM lets open associations finish
    # Restart: a writer sweeps what the interrupted ingest left behind.
    with running_server(tmp_archive) as again:
        assert run_echoscu(again.host, again.port, called_ae=again.ae_title).returncode == 0
        assert again.stop() == 0, again.log()
    stats = cli(tmp_archive, "stats", "--json").json()
    assert isinstance(stats, dict) and stats["instances"] >= len(acknowledged)
    out = tmp_path / "out"
    run = cli(tmp_archive, "export", "--out", str(out), "--series", ct_series.series_uid)
    assert run.code == 0, run.err
    for source in acknowledged:
        assert dataset_bytes(exported_path(out, source).read_bytes()) == dataset_bytes(source.read_bytes()), source
    verify = cli(tmp_archive, "verify", "--deep")
    assert verify.code == 0, verify.out + verify.err
    assert sop_uid(acknowledged[0]) in {p.stem for p in out.rglob("*.dcm")}
