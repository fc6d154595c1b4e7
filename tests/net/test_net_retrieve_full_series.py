"""A C-GET and a C-MOVE of a whole 300-slice CT series, both at once, while another association stores:
every sub-operation completes, every retrieved data set is byte-identical to what was sent, and every
instance stored meanwhile is kept."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from net_helpers import serving

from engine.testing.dcmtk import LOOPBACK, StoreSCP, run_storescu
from engine.testing.series import SeriesFiles, write_ct_series, write_mr_series

pytestmark = pytest.mark.dcmtk

AE = "QR_FULL"
SLICES = 300  # what the issue asks for: a realistic CT series, not a handful


def data_set(path: Path) -> bytes:
    """A Part-10 file's data set bytes (everything after its file meta group)."""
    raw = path.read_bytes()
    meta = pydicom.dcmread(path, stop_before_pixels=True).file_meta
    return raw[132 + 12 + int(meta.FileMetaInformationGroupLength):]


def sop_of(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def retrieve(tool: str, host: str, port: int, series: SeriesFiles, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [tool, "-S", "-aec", AE, "-aet", "FULL_SCU", *extra, host, str(port),
               "-k", "QueryRetrieveLevel=SERIES", "-k", f"StudyInstanceUID={series.study_uid}",
               "-k", f"SeriesInstanceUID={series.series_uid}"]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)


def test_get_and_move_of_300_slices_while_storing(tmp_path: Path) -> None:
    ct = SeriesFiles.from_files(write_ct_series(tmp_path / "ct", SLICES))
    more = write_mr_series(tmp_path / "more", 30, rows=256, cols=256, seed=11)
    with StoreSCP(tmp_path / "moved", ae_title="FULL_DEST") as dest:
        with serving(tmp_path / "archive", AE, remote_aes={"FULL_DEST": f"{LOOPBACK}:{dest.port}"}) as served:
            archive, host, port = served.archive, served.host, served.port
            for path in ct.files:
                archive.ingest_file(path)
            got = tmp_path / "got"
            got.mkdir()
            jobs: dict[str, Callable[[], subprocess.CompletedProcess[str]]] = {
                "get": lambda: retrieve("getscu", host, port, ct, "+B", "-od", str(got)),
                "move": lambda: retrieve("movescu", host, port, ct, "-aem", "FULL_DEST"),
                "store": lambda: run_storescu(host, port, more, called_ae=AE),
            }
            results: dict[str, subprocess.CompletedProcess[str]] = {}
            threads = [threading.Thread(target=lambda k=k, job=job: results.__setitem__(k, job()))
                       for k, job in jobs.items()]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            for name, done in results.items():
                assert done.returncode == 0, f"{name}: {done.stdout[-1500:]}{done.stderr[-1500:]}"
            archive.wait_for_ingests()
            sent = {sop_of(p): p for p in ct.files}
            for label, received in (("C-GET", sorted(got.iterdir())), ("C-MOVE", dest.files())):
                by_sop = {sop_of(p): p for p in received}
                assert sorted(by_sop) == sorted(sent), f"{label}: {len(by_sop)} of {len(sent)} arrived"
                for sop, path in sent.items():
                    assert data_set(by_sop[sop]) == data_set(path), f"{label}: {sop} differs"
            for path in more:
                assert archive.read_dataset(sop_of(path))[1] == data_set(path)
            assert archive.verify(deep=False) == []
