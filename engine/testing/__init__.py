"""Test and benchmark helpers that ship with the engine: real-file corpus, realistic series, real peers.

This package is a helper layer on top of the engine, not part of the core: it imports pydicom and numpy
directly (the core keeps pydicom inside `engine.dicom`), and nothing in the core imports it. The test
suite, the benchmarks and `pacs-engine bench` use it.
"""

from __future__ import annotations

from engine.testing.corpus import (
    KNOWN_BAD,
    corpus_files,
    corpus_problem,
    pydicom_data_dir,
    pydicom_test_files_dir,
    read_problem,
    readable,
)
from engine.testing.dcmtk import (
    StoreSCP,
    dcmtk_available,
    dcmtk_version,
    free_port,
    run_echoscu,
    run_storescu,
    wait_for_port,
)
from engine.testing.series import (
    SeriesFiles,
    ct_series_datasets,
    mr_series_datasets,
    write_ct_series,
    write_mr_series,
)
from engine.testing.server import ServerHandle, running_server

__all__ = [
    "KNOWN_BAD",
    "SeriesFiles",
    "ServerHandle",
    "StoreSCP",
    "corpus_files",
    "corpus_problem",
    "ct_series_datasets",
    "dcmtk_available",
    "dcmtk_version",
    "free_port",
    "mr_series_datasets",
    "pydicom_data_dir",
    "pydicom_test_files_dir",
    "read_problem",
    "readable",
    "run_echoscu",
    "run_storescu",
    "running_server",
    "wait_for_port",
    "write_ct_series",
    "write_mr_series",
]
