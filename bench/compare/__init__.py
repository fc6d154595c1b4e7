"""Side-by-side benchmark of pacs-engine against other archives (Orthanc, DCMTK storescp) on one workload.

`run_bench(BenchOptions(out=...))` builds the workload, runs every phase against every target and writes
report.md, results.json and PNG plots; `pacs-engine bench` is its command line.
"""

from __future__ import annotations

from bench.compare.runner import ALL_PHASES, BenchOptions, applicable_phases, run_bench, select_targets
from bench.compare.targets import FAMILIES, Target, all_targets
from bench.compare.workload import SERIES_NAMES, Workload, build_workload

__all__ = [
    "ALL_PHASES",
    "FAMILIES",
    "SERIES_NAMES",
    "BenchOptions",
    "Target",
    "Workload",
    "all_targets",
    "applicable_phases",
    "build_workload",
    "run_bench",
    "select_targets",
]
