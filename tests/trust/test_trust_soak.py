"""Soak: 8 storescu associations storing and 16 HTTP readers (frames, metadata, QIDO-RS) against one
`serve` for PACS_SOAK_SECONDS (default 180; slow suite), or 15 s in CI. No errors; the server's anonymous
memory stable (the last third of the run against the first); tail latencies printed.
"""

from __future__ import annotations

import os
import random
import shutil
import statistics
import subprocess
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from engine.testing.crash import Source
from engine.testing.dcmtk import free_port
from engine.testing.series import write_ct_series, write_mr_series
from engine.testing.server import ServerHandle, running_server

pytestmark = pytest.mark.dcmtk

STORERS = 8
READERS = 16
BATCH = 12  # files one storescu association sends before the next starts
MEMORY_MARGIN = 1.25  # the last third may use this much more anonymous memory than the first ...
MEMORY_SLACK_MB = 48  # ... plus this (allocator arenas of threads that start late, caches filling)


@dataclass
class Tally:
    lock: threading.Lock = field(default_factory=threading.Lock)
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: list[str] = field(default_factory=list)
    stored: int = 0
    rss: list[tuple[float, int, int]] = field(default_factory=list)  # (time, VmRSS kB, RssAnon kB)

    def latency(self, kind: str, seconds: float) -> None:
        with self.lock:
            self.latencies[kind].append(seconds)

    def error(self, text: str) -> None:
        with self.lock:
            self.errors.append(text)


def _relabel(data: bytes, old_uid: bytes, tag: str) -> bytes:
    """The same file under a new SOP Instance UID of the same length (meta and data set), no re-encoding."""
    new = (old_uid[: len(old_uid) - len(tag)] + tag.encode()).rstrip(b"\0")
    return data.replace(old_uid.rstrip(b"\0"), new.ljust(len(old_uid.rstrip(b"\0")), b"9"))


def _storer(k: int, server: ServerHandle, sources: list[Source], work: Path, stop: threading.Event, tally: Tally) -> None:
    """Send relabelled copies of `sources` in batches until told to stop; every store must succeed."""
    work.mkdir()
    originals = [(s.path.read_bytes(), s.sop_instance_uid.encode()) for s in sources]
    round_ = 0
    while not stop.is_set():
        round_ += 1
        batch = []
        for i in range(BATCH):
            data, uid = originals[(round_ * BATCH + i) % len(originals)]
            path = work / f"{i}.dcm"
            path.write_bytes(_relabel(data, uid, f".{k}{round_:06d}{i:02d}"))
            batch.append(str(path))
        started = time.monotonic()
        done = subprocess.run(
            ["storescu", "-nh", "-aec", server.ae_title, server.host, str(server.port), *batch],
            capture_output=True, timeout=300, check=False,
        )  # fmt: skip
        tally.latency("store batch", time.monotonic() - started)
        if done.returncode != 0:
            tally.error(f"storescu {k}: exit {done.returncode}: {done.stderr.decode(errors='replace')[-500:]}")
            return
        with tally.lock:
            tally.stored += len(batch)


def _reader(k: int, base: str, targets: list[tuple[str, str, str]], stop: threading.Event, tally: Tally) -> None:
    rng = random.Random(k)
    with httpx.Client(base_url=base, timeout=60) as client:
        while not stop.is_set():
            study, series, sop = rng.choice(targets)
            kind, url, headers = rng.choice([
                ("frame", f"/studies/{study}/series/{series}/instances/{sop}/frames/1",
                 {"accept": 'multipart/related; type="application/octet-stream"'}),
                ("metadata", f"/studies/{study}/series/{series}/metadata", {}),
                ("qido", f"/studies?PatientID={_PATIENT}*&limit=20", {}),
                ("qido", f"/studies/{study}/series/{series}/instances?limit=50", {}),
            ])  # fmt: skip
            started = time.monotonic()
            try:
                response = client.get(url, headers=headers)
            except httpx.HTTPError as exc:
                tally.error(f"reader {k}: {url}: {exc!r}")
                continue
            tally.latency(kind, time.monotonic() - started)
            if response.status_code != 200:
                tally.error(f"reader {k}: {url}: {response.status_code} {response.text[:200]}")


_PATIENT = ""


def _memory(pid: int) -> tuple[int, int]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]), int(fields.get("RssAnon", "0 kB").split()[0])


def _sampler(pid: int, stop: threading.Event, tally: Tally) -> None:
    started = time.monotonic()
    while not stop.wait(0.5):
        rss, anon = _memory(pid)
        tally.rss.append((time.monotonic() - started, rss, anon))


def _percentiles(values: list[float]) -> str:
    q = statistics.quantiles(values, n=100, method="inclusive")
    return f"n={len(values)} p50={q[49] * 1000:.1f} ms p95={q[94] * 1000:.1f} ms p99={q[98] * 1000:.1f} ms"


def soak(tmp_path: Path, seconds: float) -> Tally:
    global _PATIENT
    root = tmp_path / "sources"
    read_series = write_ct_series(root / "read", 16, rows=256, cols=256, seed=41)
    pool = [Source.read(p) for p in write_mr_series(root / "store", 24, seed=42)]
    port = free_port()
    tally = Tally()
    with running_server(tmp_path / "archive", extra_args=["--http-port", str(port)]) as server:
        base = f"http://127.0.0.1:{port}"
        done = subprocess.run(["storescu", "-aec", server.ae_title, server.host, str(server.port), *map(str, read_series)],
                              capture_output=True, timeout=300, check=False)  # fmt: skip
        assert done.returncode == 0, done.stderr
        import pydicom

        first = pydicom.dcmread(read_series[0], stop_before_pixels=True)
        _PATIENT = str(first.PatientID)[:4]
        targets = [(str(first.StudyInstanceUID), str(first.SeriesInstanceUID), Source.read(p).sop_instance_uid) for p in read_series]
        stop = threading.Event()
        threads = [threading.Thread(target=_sampler, args=(server.pid, stop, tally))]
        threads += [threading.Thread(target=_storer, args=(k, server, pool[k::2] + pool[k + 1 :: 2], tmp_path / f"s{k}", stop, tally))
                    for k in range(STORERS)]  # fmt: skip
        threads += [threading.Thread(target=_reader, args=(k, base, targets, stop, tally)) for k in range(READERS)]
        for thread in threads:
            thread.start()
        stop.wait(seconds)
        stop.set()
        for thread in threads:
            thread.join(timeout=300)
        assert server.process.poll() is None, server.log()[-3000:]
        assert server.stop() == 0, server.log()[-3000:]
    shutil.rmtree(root)
    return tally


def _report_and_check(tally: Tally, seconds: float) -> None:
    third = len(tally.rss) // 3
    first = tally.rss[:third]
    last = tally.rss[-third:]
    mean = lambda rows, i: statistics.fmean(r[i] for r in rows) / 1024
    print(f"\nsoak {seconds:.0f} s: {tally.stored} instances stored by {STORERS} storescu loops, "
          f"{sum(len(v) for k, v in tally.latencies.items() if k != 'store batch')} reads by {READERS} readers, "
          f"{len(tally.errors)} errors")  # fmt: skip
    for kind, values in sorted(tally.latencies.items()):
        print(f"  {kind:12s} {_percentiles(values)}")
    print(f"  server VmRSS first third {mean(first, 1):.0f} MiB, last third {mean(last, 1):.0f} MiB; "
          f"RssAnon {mean(first, 2):.0f} -> {mean(last, 2):.0f} MiB; peak VmRSS {max(r[1] for r in tally.rss) / 1024:.0f} MiB")
    assert tally.errors == [], tally.errors[:10]
    assert tally.stored > 0 and all(len(v) > 0 for v in tally.latencies.values())
    assert mean(last, 2) <= mean(first, 2) * MEMORY_MARGIN + MEMORY_SLACK_MB, "anonymous memory keeps growing"


def test_soak_short(tmp_path: Path) -> None:
    _report_and_check(soak(tmp_path, 15.0), 15.0)


@pytest.mark.slow
def test_soak(tmp_path: Path) -> None:
    seconds = float(os.environ.get("PACS_SOAK_SECONDS", "180"))
    _report_and_check(soak(tmp_path, seconds), seconds)
