"""Fixtures of the DICOMweb tests: one archive with a CT series and real corpus files, served over loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file
from web_helpers import Served

from engine.archive import Archive
from engine.testing.dcmtk import LOOPBACK
from engine.testing.series import SeriesFiles, write_ct_series, write_mr_series
from engine.web import WebServer

CT_SLICES = 20
# Real files: signed CT, multi-frame MR, 8-bit RGB, and lossy JPEG kept as received (passthrough).
CORPUS = ("CT_small.dcm", "emri_small.dcm", "SC_rgb.dcm", "JPEG-lossy.dcm", "SC_ybr_full_422_uncompressed.dcm")


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """An archive holding a 20-slice CT series and four real files, served by WebServer on loopback."""
    root = tmp_path_factory.mktemp("web")
    ct = SeriesFiles.from_files(write_ct_series(root / "ct", CT_SLICES))
    mr = write_mr_series(root / "mr", 4, seed=7)
    corpus = {name: Path(get_testdata_file(name)) for name in CORPUS}
    archive = Archive.open(root / "archive")
    try:
        for path in (*ct.files, *corpus.values()):
            archive.ingest_file(path)
        server = WebServer(archive, LOOPBACK, 0)
        host, port = server.start()
        try:
            yield Served(archive, f"http://{host}:{port}", ct, corpus, tuple(mr))
        finally:
            server.stop()
    finally:
        archive.close()
