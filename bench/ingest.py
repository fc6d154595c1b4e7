"""End-to-end ingest benchmark: pacs-engine against raw-file baselines measured in the same run.

Builds the generated CT series (real CT slices from pydicom-data), then measures
  1. `pacs-engine import DIR`      against copying the same files with fsync (the disk's floor);
  2. DCMTK storescu -> `serve`     against storescu -> a pynetdicom SCP that only writes raw files;
  3. the storage ratio (received bytes / stored bytes) with the chosen profile.
Beside each time, the machine's busy CPU time per instance (bench/host_cpu.py: both ends, the kernel), and
the share of CPU time the host stole over the timed runs.
Prints a table and, with --json, writes the figures. Usage:
  python bench/ingest.py [--slices 300] [--profile htj2k] [--repeat 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from engine.testing.dcmtk import dcmtk_available, free_port, run_storescu, wait_for_port
from engine.testing.series import write_ct_series
from engine.testing.server import running_server

from host_cpu import CpuMeter, CpuTimes, steal_share, timed  # bench/ is on sys.path when run as a script and under pytest

HERE = Path(__file__).resolve().parent
PIXEL_BYTES_PER_SLICE = 512 * 512 * 2


def _copy_with_fsync(files: list[Path], out: Path) -> None:
    out.mkdir(parents=True)
    for f in files:
        target = out / f.name
        with open(f, "rb") as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
            dst.flush()
            os.fsync(dst.fileno())
    fd = os.open(out, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _cli(archive: Path, *args: str, profile: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PACS_ENGINE_STORAGE__PROFILE": profile}
    command = [sys.executable, "-m", "engine", *args, "--archive", str(archive), "--quiet"]
    if args[0] != "import":
        command.remove("--quiet")
    return subprocess.run(command, capture_output=True, text=True, env=env, check=False)


class _CpuLog:
    """Busy CPU seconds of each timed run by name, and all the CPU times that passed in them."""

    def __init__(self) -> None:
        self.busy: dict[str, list[float]] = {}
        self.used: list[CpuTimes] = []

    def timed(self, name: str, fn: Callable[[], None]) -> float:
        """Seconds `fn` takes; its CPU times are logged under `name`."""
        seconds, used = timed(fn)
        self.log(name, used)
        return seconds

    def log(self, name: str, used: CpuTimes | None, *, overlaps: bool = False) -> None:
        """Log `used` under `name`; `overlaps`: it spans runs already logged, so it stays out of the steal."""
        if used is None:
            return
        self.busy.setdefault(name, []).append(used.busy)
        if not overlaps:
            self.used.append(used)

    def figures(self, n: int) -> dict[str, float]:
        """`NAME_cpu_ms_per_inst` (median) for each name, and `steal_share` over every run."""
        out = {f"{name}_cpu_ms_per_inst": 1000 * statistics.median(v) / n for name, v in self.busy.items()}
        if self.used:
            out["steal_share"] = steal_share(self.used)
        return out


def _median(samples: list[float]) -> tuple[float, float]:
    """Median and spread (max - min) of repeated timings."""
    return statistics.median(samples), (max(samples) - min(samples)) if len(samples) > 1 else 0.0


def bench_import(
    series: Path, files: list[Path], work: Path, profile: str, repeat: int, cpu: _CpuLog
) -> dict[str, float]:
    copy_t, import_t, inner_t = [], [], []
    for k in range(repeat):
        copy_t.append(cpu.timed("copy_fsync", lambda k=k: _copy_with_fsync(files, work / f"copy{k}")))
        archive = work / f"import{k}"

        def run(archive: Path = archive) -> None:
            result = _cli(archive, "import", str(series), profile=profile)
            if result.returncode != 0:
                raise RuntimeError(f"import failed: {result.stderr[-2000:]}")
            # The command's own figure: from opening the archive to the last commit, without the
            # interpreter's start-up and imports (~0.45 s here), which a long migration pays once.
            inner = re.search(r"instances in ([0-9.]+) s", result.stdout)
            if inner is None:
                raise RuntimeError(f"import did not report its time: {result.stdout[-500:]}")
            inner_t.append(float(inner[1]))

        import_t.append(cpu.timed("import", run))
    stats = json.loads(_cli(work / "import0", "stats", "--json", profile=profile).stdout)
    n = len(files)
    copy_med, copy_spread = _median(copy_t)
    imp_med, imp_spread = _median(import_t)
    inner_med, inner_spread = _median(inner_t)
    return {
        "instances": n,
        "copy_fsync_s": copy_med,
        "copy_fsync_spread_s": copy_spread,
        "import_s": imp_med,
        "import_spread_s": imp_spread,
        "import_inst_per_s": n / imp_med,
        "import_pixel_MB_per_s": n * PIXEL_BYTES_PER_SLICE / imp_med / 1e6,
        "import_vs_copy_fsync": copy_med / imp_med,
        "import_ingest_s": inner_med,
        "import_ingest_spread_s": inner_spread,
        "import_ingest_pixel_MB_per_s": n * PIXEL_BYTES_PER_SLICE / inner_med / 1e6,
        "storage_ratio": float(stats["ratio"]),
        "received_bytes": float(stats["received_bytes"]),
        "stored_bytes": float(stats["stored_bytes"]),
    }


def _storescu(port: int, ae: str, series: Path) -> None:
    result = run_storescu("127.0.0.1", port, [series], called_ae=ae)
    if result.returncode != 0:
        raise RuntimeError(f"storescu failed ({result.returncode}): {result.stderr[-2000:]}")


def bench_cstore(series: Path, n: int, work: Path, profile: str, repeat: int, cpu: _CpuLog) -> dict[str, float]:
    raw_t: list[float] = []
    engine_t: list[float] = []
    indexed_t: list[float] = []
    for k in range(repeat):
        port = free_port()
        out = work / f"raw{k}"
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "raw_scp.py"), "--port", str(port), "--out", str(out)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            proc.stdout.readline()  # the readiness line
            wait_for_port("127.0.0.1", port, 30)
            raw_t.append(cpu.timed("raw_scp", partial(_storescu, port, "RAW_SCP", series)))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            if proc.stdout is not None:
                proc.stdout.close()
        env = {"PACS_ENGINE_STORAGE__PROFILE": profile}
        with running_server(work / f"serve{k}", env=env) as server, CpuMeter() as meter:
            start = time.perf_counter()
            engine_t.append(cpu.timed("serve_ack", lambda: _storescu(server.port, server.ae_title, series)))
            # Acknowledged instances may still be transcoding: a clean stop waits until all are indexed.
            server.stop()
            indexed_t.append(time.perf_counter() - start)
        # until all are indexed: what the C-STOREs cost, transcoding included
        cpu.log("serve_all_indexed", meter.used, overlaps=True)
    raw_med, raw_spread = _median(raw_t)
    eng_med, eng_spread = _median(engine_t)
    return {
        "raw_scp_s": raw_med,
        "raw_scp_spread_s": raw_spread,
        "raw_scp_inst_per_s": n / raw_med,
        "serve_s": eng_med,
        "serve_spread_s": eng_spread,
        "serve_inst_per_s": n / eng_med,
        "serve_pixel_MB_per_s": n * PIXEL_BYTES_PER_SLICE / eng_med / 1e6,
        "serve_vs_raw_scp": raw_med / eng_med,
        "serve_all_indexed_s": _median(indexed_t)[0],
        "serve_indexed_inst_per_s": n / _median(indexed_t)[0],
    }


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run the benchmark and return its figures (also printed)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--profile", default="htj2k", choices=["htj2k", "jpegls", "jpeg2k"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--skip-cstore", action="store_true", help="only the import phase")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pacs-bench-", dir=os.environ.get("PACS_BENCH_TMP")) as tmp:
        work = Path(tmp)
        files = write_ct_series(work / "series", args.slices)
        figures: dict[str, float] = {"slices": args.slices}
        cpu = _CpuLog()
        figures.update(bench_import(work / "series", files, work, args.profile, args.repeat, cpu))
        if not args.skip_cstore and dcmtk_available():
            figures.update(bench_cstore(work / "series", len(files), work, args.profile, args.repeat, cpu))
        figures.update(cpu.figures(len(files)))
    width = max(map(len, figures))
    print(f"ingest benchmark, profile {args.profile}, {os.cpu_count()} cores, median of {args.repeat}")
    for key, value in figures.items():
        print(f"  {key:<{width}}  {value:,.3f}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
