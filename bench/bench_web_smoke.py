"""The DICOMweb benchmark script runs in CI at a tiny size, so it cannot rot.

The figures at this size mean nothing; what is checked is that every measurement runs against the
real `serve` process and reports a ratio to its raw-file baseline from the same run.
"""

from __future__ import annotations

import web  # bench/ is on sys.path: pytest's rootdir-relative import of this folder

MEASURED = ("frame_full", "frame_range", "frame_level2", "series_metadata", "qido_instances", "series_level2")


def test_web_benchmark_measures_every_endpoint() -> None:
    figures = web.main(["--slices", "4", "--repeat", "3"])
    for name in MEASURED:
        assert figures[f"{name}_p50_ms"] > 0, name
        assert figures[f"{name}_vs_raw"] > 0, name
    assert figures["instances"] == 4
    assert 0 < figures["series_metadata_gzip_kb"] < figures["series_metadata_kb"]
