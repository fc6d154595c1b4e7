"""DICOMweb latency benchmark: pacs-engine's HTTP answers against reading the same bytes from raw files.

Builds the generated CT series (real CT slices from pydicom-data), ingests it, runs
`pacs-engine serve --http-port 0` on loopback as its own process, and measures with one keep-alive
HTTP client (p50 / p95 over --repeat requests, each after a warm-up):
  frame_full      one frame, image/jphc (the stored HTJ2K codestream)
  frame_range     the same frame, `Range: bytes=0-N` with N+1 the level-2 prefix (206)
  frame_level2    the same frame, `?level=2`
  series_metadata /studies/{s}/series/{se}/metadata, gzip accepted (the first, uncached request too)
  qido_instances  /studies/{s}/series/{se}/instances
  series_level2   /studies/{s}/series/{se}/frames?level=2: the whole series at 1/4 resolution
Each is set against a baseline taken in the same run: open and read a raw file holding exactly the
bytes of that response (one file per frame for the series). Prints a table; --json writes the figures.
Usage: python bench/web.py [--slices 300] [--repeat 50] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from engine.archive import Archive
from engine.testing.dcmtk import LOOPBACK
from engine.testing.series import SeriesFiles, write_ct_series

JPHC = {"Accept": "image/jphc"}


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return statistics.median(ordered) * 1e3, p95 * 1e3


def _time(fn: Callable[[int], object], repeat: int) -> list[float]:
    samples = []
    for i in range(repeat):
        start = time.perf_counter()
        fn(i)
        samples.append(time.perf_counter() - start)
    return samples


def _read_files(paths: list[Path]) -> None:
    for path in paths:
        with open(path, "rb") as f:
            f.read()


class _Bench:
    def __init__(self, http: httpx.Client, raw_dir: Path, repeat: int) -> None:
        self.http = http
        self.raw_dir = raw_dir
        self.repeat = repeat
        self.figures: dict[str, float] = {}

    def measure(self, name: str, request: Callable[[int], list[bytes]]) -> None:
        """Time `request(i)` (which returns the bodies it received) and a raw-file read of those bodies."""
        bodies = [request(i) for i in range(min(self.repeat, 8))]  # warm up, and the bytes to write
        files: list[list[Path]] = []
        for i, parts in enumerate(bodies):
            paths = []
            for j, part in enumerate(parts):
                path = self.raw_dir / f"{name}-{i}-{j}.bin"
                path.write_bytes(part)
                paths.append(path)
            files.append(paths)
        served = _time(request, self.repeat)
        baseline = _time(lambda i: _read_files(files[i % len(files)]), self.repeat)
        p50, p95 = _percentiles(served)
        b50, b95 = _percentiles(baseline)
        self.figures.update({f"{name}_p50_ms": p50, f"{name}_p95_ms": p95, f"{name}_raw_p50_ms": b50,
                             f"{name}_raw_p95_ms": b95, f"{name}_vs_raw": p50 / b50 if b50 else 0.0})  # fmt: skip


def _parts(response: httpx.Response) -> list[bytes]:
    boundary = response.headers["content-type"].split("boundary=")[1].strip('"').encode()
    return [s.split(b"\r\n\r\n", 1)[1].removesuffix(b"\r\n") for s in response.content.split(b"--" + boundary)[1:-1]]


@contextmanager
def _serve(archive: Path) -> Iterator[str]:
    """`pacs-engine serve --http-port 0` as its own process (the client must not share its GIL); the base URL."""
    command = [sys.executable, "-m", "engine", "serve", "--archive", str(archive), "--host", LOOPBACK,
               "--dicom-port", "0", "--http-port", "0"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline().decode().strip() for _ in range(2)]
        match = re.match(r"listening: http=(\S+):(\d+)$", lines[1])
        if match is None:
            raise RuntimeError(f"pacs-engine serve did not start DICOMweb: {lines}")
        yield f"http://{match[1]}:{match[2]}"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        if process.stdout is not None:
            process.stdout.close()


def run(series: SeriesFiles, root: Path, repeat: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    with Archive.open(root / "archive") as archive:
        start = time.perf_counter()
        for path in series.files:
            archive.ingest_file(path)
        figures["ingest_s"] = time.perf_counter() - start
        sops = archive.instance_uids(series.series_uid)
        prefix2 = [archive.record(sop).levels[0].level_prefixes[0][2] for sop in sops]
    raw = root / "raw"
    raw.mkdir()
    series_url = f"/studies/{series.study_uid}/series/{series.series_uid}"
    with _serve(root / "archive") as base, httpx.Client(base_url=base, timeout=120) as http:
        bench = _Bench(http, raw, repeat)

        def frame(i: int) -> str:
            return f"{series_url}/instances/{sops[i % len(sops)]}/frames/1"

        def get(url: str, headers: dict[str, str], status: int = 200) -> httpx.Response:
            response = http.get(url, headers=headers)
            if response.status_code != status:
                raise RuntimeError(f"GET {url}: {response.status_code} {response.text[:200]}")
            return response

        start = time.perf_counter()
        first = get(f"{series_url}/metadata", {"Accept-Encoding": "gzip"})
        figures["series_metadata_first_ms"] = (time.perf_counter() - start) * 1e3
        figures["series_metadata_kb"] = len(first.content) / 1e3
        figures["series_metadata_gzip_kb"] = int(first.headers["content-length"]) / 1e3
        bench.measure("frame_full", lambda i: [get(frame(i), JPHC).content])
        ranged = lambda i: {**JPHC, "Range": f"bytes=0-{prefix2[i % len(sops)] - 1}"}
        bench.measure("frame_range", lambda i: [get(frame(i), ranged(i), 206).content])
        bench.measure("frame_level2", lambda i: [get(frame(i) + "?level=2", JPHC).content])
        bench.measure("series_metadata", lambda i: [get(f"{series_url}/metadata", {"Accept-Encoding": "gzip"}).content])
        bench.measure("qido_instances", lambda i: [get(f"{series_url}/instances", {}).content])
        accept = {"Accept": 'multipart/related; type="image/jphc"'}
        bench.measure("series_level2", lambda i: _parts(get(f"{series_url}/frames?level=2", accept)))
        figures.update(bench.figures)
    figures["instances"] = len(series.files)
    return figures


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-web-") as tmp:
        root = Path(tmp)
        series = SeriesFiles.from_files(write_ct_series(root / "ct", args.slices))
        figures = run(series, root, args.repeat)
    for key, value in figures.items():
        print(f"{key:32s} {value:10.3f}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
