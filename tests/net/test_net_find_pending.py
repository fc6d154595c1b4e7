"""C-FIND finds what C-STORE acknowledged before it is transcoded: DCMTK storescu, then findscu, while
every transcode worker is held busy. A C-GET of the same series waits for the transcodes and gets it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pydicom
import pytest
from net_helpers import serving

from engine.testing.dcmtk import run_storescu
from engine.testing.series import write_mr_series
from engine.testing.transcodes import workers_held

pytestmark = pytest.mark.dcmtk

AE = "PENDING_TEST"


def test_findscu_finds_instances_whose_transcodes_wait(tmp_path: Path) -> None:
    files = write_mr_series(tmp_path / "mr", 4, seed=31)
    first = pydicom.dcmread(files[0], stop_before_pixels=True)
    series = str(first.SeriesInstanceUID)
    with serving(tmp_path / "archive", AE) as listener:
        with workers_held(listener.archive):
            stored = run_storescu(listener.host, listener.port, files, called_ae=AE)
            assert stored.returncode == 0, stored.stderr
            out = tmp_path / "found"
            out.mkdir()
            found = subprocess.run(
                ["findscu", "-S", "-aec", AE, "-X", "-od", str(out), "-k", "QueryRetrieveLevel=SERIES",
                 "-k", f"StudyInstanceUID={first.StudyInstanceUID}", "-k", f"SeriesInstanceUID={series}",
                 "-k", "NumberOfSeriesRelatedInstances", listener.host, str(listener.port)],
                capture_output=True, text=True, timeout=120, check=False,
            )  # fmt: skip
            assert found.returncode == 0, found.stderr
            [answer] = [pydicom.dcmread(p) for p in out.glob("rsp*.dcm")]
            assert int(answer.NumberOfSeriesRelatedInstances) == len(files)
            assert all(listener.archive.index.get_instance(str(pydicom.dcmread(p, stop_before_pixels=True)
                                                               .SOPInstanceUID)).pending for p in files)  # fmt: skip
        got = tmp_path / "got"
        got.mkdir()
        fetched = subprocess.run(
            ["getscu", "-S", "-aec", AE, "-od", str(got), "-k", "QueryRetrieveLevel=SERIES",
             "-k", f"StudyInstanceUID={first.StudyInstanceUID}", "-k", f"SeriesInstanceUID={series}",
             listener.host, str(listener.port)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert fetched.returncode == 0, fetched.stderr
        assert len(list(got.iterdir())) == len(files)
