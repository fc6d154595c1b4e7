"""The end-to-end benchmark scripts run in CI at a tiny size, so they cannot rot.

The figures at this size mean nothing; what is checked is that every phase runs against real peers
and reports ratios from the same run.
"""

from __future__ import annotations

import pytest

from engine.testing.dcmtk import dcmtk_available

import ingest  # bench/ is on sys.path: pytest's rootdir-relative import of this folder


@pytest.mark.skipif(not dcmtk_available(), reason="needs DCMTK (apt-get install dcmtk)")
def test_ingest_benchmark_runs_every_phase() -> None:
    figures = ingest.main(["--slices", "6", "--repeat", "1"])
    for key in ("import_vs_copy_fsync", "import_ingest_pixel_MB_per_s", "serve_vs_raw_scp", "storage_ratio",
                "serve_indexed_inst_per_s"):
        assert figures[key] > 0, key
    assert figures["instances"] == 6
    # /proc/stat counts in clock ticks; an import (interpreter start-up included) spans many
    assert figures["import_cpu_ms_per_inst"] > 0
    assert 0.0 <= figures["steal_share"] <= 1.0
