"""The retrieve benchmark runs in CI at a tiny size, so it cannot rot.

The figures at this size mean nothing; what is checked is that every phase runs against real peers, moves
every instance, and reports ratios to the baseline from the same run.
"""

from __future__ import annotations

import pytest

from engine.testing.dcmtk import dcmtk_available

import retrieve  # bench/ is on sys.path: pytest's rootdir-relative import of this folder


@pytest.mark.skipif(not dcmtk_available(), reason="needs DCMTK (apt-get install dcmtk)")
def test_retrieve_benchmark_runs_every_phase() -> None:
    figures = retrieve.main(["--slices", "4", "--repeat", "1"])
    for kind in ("move_stored", "move_explicit", "get_stored", "get_explicit", "move_jpegls", "get_jpegls"):
        assert figures[f"{kind}_vs_baseline"] > 0, kind
        assert figures[f"{kind}_vs_baseline_low"] <= figures[f"{kind}_vs_baseline_high"], kind
    assert figures["instances"] == 4
    # A 4-instance transfer can pass between two clock ticks: its CPU figure may be 0, never missing
    for kind in ("baseline", "move_explicit", "get_explicit"):
        assert figures[f"{kind}_cpu_ms_per_inst"] >= 0, kind
    assert 0.0 <= figures["steal_share"] <= 1.0
