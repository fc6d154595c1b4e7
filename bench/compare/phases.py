"""One function per benchmark phase; each runs once against a started target and returns its figures.

Every phase uses the same client for every target: DCMTK storescu / getscu / movescu for DIMSE (and
pynetdicom's SCU, through engine.net, for a C-GET in the stored syntax, which DCMTK 3.6.7 cannot ask for
when it is HTJ2K), httpx for STOW-RS, and bench.compare.client (HTTP/1.1 GETs on kept-alive sockets) for
DICOMweb reads. Figures are plain floats keyed by metric name.
"""

from __future__ import annotations

import functools
import http.client
import os
import random
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import imagecodecs
import numpy as np
import pydicom

from bench.compare.client import HttpClient
from bench.compare.targets import BENCH_AE, Target, cpu_seconds, disk_bytes, peak_rss_bytes
from bench.compare.workload import Series, Workload
from engine.net import Peer, ScuOptions, scu_get
from engine.testing.dcmtk import StoreSCP, run_storescu

Figures = dict[str, float]
FRAME_ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
JSON_ACCEPT = "application/dicom+json"
LOW_LEVEL = 2  # 1/4 a side: what "first image at low resolution" asks pacs-engine for
SETTLE_TIMEOUT = 900.0
# A target counts as idle after an ingest once it used less than this share of a core over a window.
IDLE_WINDOW = 0.25
IDLE_CPU_SHARE = 0.1
STOW_BATCH_BYTES = 32_000_000


class PhaseError(RuntimeError):
    """A phase could not run against a target (a refused store, a failed retrieve, an HTTP error)."""


@dataclass(frozen=True, slots=True)
class Sizes:
    """How much each phase does in one run (small mode shrinks all of it)."""

    frame_requests: int = 300
    query_repeats: int = 20  # at least this many requests per query and repetition ...
    # ... and more until this many seconds have gone by: a median of 20 sub-millisecond requests moved
    # by a third when the shared host hiccuped once (QIDO series 0.50-1.14 ms in one run).
    query_seconds: float = 1.0
    first_image_repeats: int = 5
    readers: int = 4
    series_concurrency: int = 4

    @classmethod
    def small(cls) -> Sizes:
        return cls(frame_requests=20, query_repeats=3, query_seconds=0.0, first_image_repeats=2, readers=2,
                   series_concurrency=2)


@dataclass(slots=True)
class PhaseResult:
    """One run's figures plus facts worth printing (e.g. the transfer syntax a C-GET received)."""

    figures: Figures
    info: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- ingest


def _check_storescu(done: subprocess.CompletedProcess[str], target: Target) -> None:
    if done.returncode != 0:
        raise PhaseError(f"storescu to {target.name} failed ({done.returncode}): {done.stderr[-1500:]}")


def ingest_figures(target: Target, workload: Workload, ack: float, settled: float, cpu: float) -> Figures:
    size = workload.size
    return {
        "seconds": settled,
        "ack_seconds": ack,
        "mb_per_s": size / 1e6 / settled,
        "instances_per_s": workload.instances / settled,
        "cpu_s_per_gb": cpu / (size / 1e9),
        "peak_rss_mb": peak_rss_bytes(target.pid) / 1e6,
    }


def cpu_after_work(pid: int) -> float:
    """The target's CPU seconds once it has gone idle: work it does after answering (pacs-engine
    transcodes behind its acknowledgements) counts for the ingest that caused it."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    previous = cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(IDLE_WINDOW)
        now = cpu_seconds(pid)
        if now - previous < IDLE_WINDOW * IDLE_CPU_SHARE:
            return now
        previous = now
    return previous


def clean_start() -> float:
    """perf_counter time to measure a transfer from, once nothing is left to write back to disk.

    Every target and every receiver here writes what it gets, and writing back the last transfer's data
    would otherwise take CPU from whichever target came next on these two cores.
    """
    os.sync()
    return time.perf_counter()


def cstore_ingest(target: Target, workload: Workload, associations: int) -> PhaseResult:
    """Store every workload file with DCMTK storescu over `associations` concurrent associations."""
    files = workload.files
    parts = [files[k::associations] for k in range(associations)]
    node = target.dicom
    cpu0 = cpu_seconds(target.pid)
    start = clean_start()
    with ThreadPoolExecutor(associations) as pool:
        runs = list(pool.map(lambda part: run_storescu(node.host, node.port, part, called_ae=node.ae_title,
                                                       calling_ae=BENCH_AE, extra=["-pdu", "131072"]), parts))
    ack = time.perf_counter() - start
    for done in runs:
        _check_storescu(done, target)
    settled = wait_settled(target, workload.series) - start
    return PhaseResult(ingest_figures(target, workload, ack, settled, cpu_after_work(target.pid) - cpu0))


def stow_bodies(files: Sequence[Path], boundary: str = "bench-stow-boundary-7d1f") -> list[bytes]:
    """multipart/related bodies of application/dicom parts, split so none passes STOW_BATCH_BYTES by much."""
    bodies, parts, size = [], [], 0
    for path in files:
        data = path.read_bytes()
        parts.append(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data + b"\r\n")
        size += len(data)
        if size >= STOW_BATCH_BYTES:
            bodies.append(b"".join(parts) + f"--{boundary}--\r\n".encode())
            parts, size = [], 0
    if parts:
        bodies.append(b"".join(parts) + f"--{boundary}--\r\n".encode())
    return bodies


def stow_ingest(target: Target, workload: Workload) -> PhaseResult:
    """Store every workload file with STOW-RS, one study at a time, in ~32 MB multipart requests."""
    boundary = "bench-stow-boundary-7d1f"
    headers = {"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
               "Accept": JSON_ACCEPT}
    requests = [(s.study_uid, body) for s in workload.series for body in stow_bodies(s.files, boundary)]
    cpu0 = cpu_seconds(target.pid)
    start = clean_start()
    with httpx.Client(timeout=600) as client:
        for study, body in requests:
            response = client.post(f"{target.web_root}/studies/{study}", content=body, headers=headers)
            if response.status_code != 200:
                raise PhaseError(f"STOW-RS to {target.name}: HTTP {response.status_code}: {response.text[:500]}")
    ack = time.perf_counter() - start
    settled = wait_settled(target, workload.series) - start
    return PhaseResult(ingest_figures(target, workload, ack, settled, cpu_after_work(target.pid) - cpu0))


def _count_instances(client: HttpClient, target: Target, series: Series) -> int:
    """Instances of `series` the target can find: QIDO at series level, NumberOfSeriesRelatedInstances.

    A series-level query is cheap for every target (Orthanc answers it from its index, where a query of
    the instances reads every file), so polling does not slow the ingest it waits for.
    """
    reply = client.get(f"{target.web_root}/studies/{series.study_uid}/series", JSON_ACCEPT,
                       params={"SeriesInstanceUID": series.series_uid, "includefield": "00201209"})
    if reply.status in (204, 404):
        return 0
    if reply.status != 200:
        raise PhaseError(f"{target.name}: series QIDO: HTTP {reply.status}: {reply.body[:300]!r}")
    found = reply.json()
    if not found:
        return 0
    value = found[0].get("00201209", {}).get("Value")
    if not value:
        raise PhaseError(f"{target.name}: series QIDO has no NumberOfSeriesRelatedInstances (0020,1209)")
    return int(value[0])


def wait_settled(target: Target, series: Sequence[Series]) -> float:
    """Wait until every instance of `series` is queryable (files written, for a target without queries);
    return the perf_counter time at which the answer that counted them all arrived.

    pacs-engine acknowledges once an instance is journalled and commits its query record right behind
    the senders (its pixels are transcoded after that, and reads of them wait for it), so this is where
    ingest ends for the comparison. Raises PhaseError after SETTLE_TIMEOUT.
    """
    deadline = time.monotonic() + SETTLE_TIMEOUT
    expected = sum(len(s.files) for s in series)
    with HttpClient(timeout=SETTLE_TIMEOUT) as client:
        while True:
            if target.web:
                count = sum(_count_instances(client, target, s) for s in series)
            else:
                count = sum(1 for p in target.storage_dir.rglob("*") if p.is_file())
            if count >= expected:
                return time.perf_counter()
            if time.monotonic() > deadline:
                raise PhaseError(f"{target.name}: {count} of {expected} instances visible after {SETTLE_TIMEOUT} s")
            time.sleep(0.02)


def storage(target: Target, workload: Workload) -> PhaseResult:
    """Bytes on disk under the target's storage folder once it stops changing (journals emptied)."""
    previous, stable_since = -1, time.monotonic()
    while True:
        now = disk_bytes(target.storage_dir)
        if now != previous:
            previous, stable_since = now, time.monotonic()
        elif time.monotonic() - stable_since >= 0.5:
            break
        time.sleep(0.1)
    folders = sorted(p for p in target.storage_dir.iterdir() if p.is_dir())
    # A breakdown helps where the folders mean something (pacs-engine's index, journal and pixels), not
    # for Orthanc's 256 hash buckets.
    where = ", ".join(f"{p.name} {disk_bytes(p) / 1e6:.1f} MB" for p in folders) if len(folders) <= 8 else ""
    return PhaseResult({"mb": now / 1e6, "input_over_stored": workload.size / now}, {"folders": where} if where else {})


# ---------------------------------------------------------------------------------------------- DIMSE retrieve


def _series_keys(series: Series) -> list[str]:
    return ["-k", "QueryRetrieveLevel=SERIES", "-k", f"StudyInstanceUID={series.study_uid}",
            "-k", f"SeriesInstanceUID={series.series_uid}"]


def _run(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        raise PhaseError(f"{what} failed ({done.returncode}): {done.stderr[-1500:]}")


def cget_uncompressed(target: Target, series: Series, out_dir: Path) -> PhaseResult:
    """DCMTK getscu of one series, proposing uncompressed syntaxes (what most DIMSE peers ask for)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    node = target.dicom
    command = ["getscu", "-aet", BENCH_AE, "-aec", node.ae_title, "-S", "-pdu", "131072", *_series_keys(series),
               "-od", str(out_dir), node.host, str(node.port)]
    start = clean_start()
    _run(command, f"getscu from {target.name}")
    seconds = time.perf_counter() - start
    received = [p for p in out_dir.iterdir() if p.is_file()]
    if len(received) != len(series.files):
        raise PhaseError(f"getscu from {target.name}: {len(received)} of {len(series.files)} instances arrived")
    size = sum(p.stat().st_size for p in received)
    shutil.rmtree(out_dir)
    return PhaseResult({"seconds": seconds, "mb_per_s": series.size / 1e6 / seconds, "received_mb": size / 1e6})


def cget_stored(target: Target, series: Series) -> PhaseResult:
    """C-GET of one series proposing every lossless syntax alone, so the target sends what it stores."""
    node = target.dicom
    syntaxes: dict[str, int] = {}
    lock = threading.Lock()

    def receive(data: bytes, syntax: str) -> None:
        with lock:
            syntaxes[syntax] = syntaxes.get(syntax, 0) + 1

    keys = {"StudyInstanceUID": series.study_uid, "SeriesInstanceUID": series.series_uid}
    start = clean_start()
    summary = scu_get(Peer(node.ae_title, node.host, node.port), "SERIES", keys, receive,
                      sop_classes=series.sop_classes, options=ScuOptions(calling_ae=BENCH_AE))
    seconds = time.perf_counter() - start
    if summary.completed != len(series.files):
        raise PhaseError(f"C-GET from {target.name}: {summary.completed} of {len(series.files)} completed "
                         f"({summary.failed} failed)")
    info = {"syntax": ", ".join(f"{s} x{n}" for s, n in sorted(syntaxes.items()))}
    return PhaseResult({"seconds": seconds, "mb_per_s": series.size / 1e6 / seconds,
                        "received_mb": summary.bytes / 1e6}, info)


def cmove(target: Target, series: Series, destination: StoreSCP) -> PhaseResult:
    """DCMTK movescu of one series to the bench's own storescp (AE BENCH)."""
    for old in destination.files():
        old.unlink()
    node = target.dicom
    command = ["movescu", "-aet", BENCH_AE, "-aec", node.ae_title, "-aem", BENCH_AE, "-S", *_series_keys(series),
               node.host, str(node.port)]
    start = clean_start()
    _run(command, f"movescu from {target.name}")
    seconds = time.perf_counter() - start
    received = destination.files()
    if len(received) != len(series.files):
        raise PhaseError(f"C-MOVE from {target.name}: {len(received)} of {len(series.files)} instances arrived")
    size = sum(p.stat().st_size for p in received)
    return PhaseResult({"seconds": seconds, "mb_per_s": series.size / 1e6 / seconds, "received_mb": size / 1e6})


# ---------------------------------------------------------------------------------------------- DICOMweb reads


def frame_url(target: Target, series: Series, sop: str, level: int | None = None) -> str:
    url = f"{target.web_root}/studies/{series.study_uid}/series/{series.series_uid}/instances/{sop}/frames/1"
    return url if level is None else f"{url}?level={level}"


def _get(client: HttpClient, url: str, accept: str) -> tuple[float, int]:
    """(seconds, body bytes) of one GET read to its end. Raises PhaseError on an HTTP error."""
    start = time.perf_counter()
    reply = client.get(url, accept)
    seconds = time.perf_counter() - start
    if reply.status != 200:
        raise PhaseError(f"GET {url}: HTTP {reply.status}: {reply.body[:300]!r}")
    if not reply.body:
        raise PhaseError(f"GET {url}: empty body")
    return seconds, len(reply.body)


def _percentiles(seconds: Sequence[float], prefix: str = "") -> Figures:
    ms = np.asarray(seconds) * 1000
    return {f"{prefix}p50_ms": float(np.percentile(ms, 50)), f"{prefix}p95_ms": float(np.percentile(ms, 95)),
            f"{prefix}p99_ms": float(np.percentile(ms, 99))}


def random_frames(workload: Workload, count: int, seed: int) -> list[tuple[Series, str]]:
    rng = random.Random(seed)
    pool = [(s, sop) for s in workload.series for sop in s.sop_uids]
    return [rng.choice(pool) for _ in range(count)]


def frame_latency(target: Target, workload: Workload, sizes: Sizes, seed: int) -> PhaseResult:
    """WADO-RS frame 1 of random instances, one at a time, each in the syntax the target stores."""
    picks = random_frames(workload, sizes.frame_requests, seed)
    with HttpClient() as client:
        _get(client, frame_url(target, *picks[0]), FRAME_ACCEPT)  # the connection, not the frame, is warmed
        timings = [_get(client, frame_url(target, s, sop), FRAME_ACCEPT) for s, sop in picks]
    figures = _percentiles([t for t, _ in timings])
    figures["mean_kb"] = sum(n for _, n in timings) / len(timings) / 1e3
    return PhaseResult(figures)


def _first_image(target: Target, series: Series, level: int | None) -> float:
    """Seconds from nothing (a new connection) to the first frame of a series: QIDO its instances, then one frame."""
    with HttpClient() as client:  # a new client connects on its first request, inside the clock
        start = time.perf_counter()
        reply = client.get(f"{target.web_root}/studies/{series.study_uid}/series/{series.series_uid}/instances",
                           JSON_ACCEPT)
        if reply.status != 200:
            raise PhaseError(f"{target.name}: QIDO instances: HTTP {reply.status}: {reply.body[:300]!r}")
        first = min(reply.json(), key=lambda d: int(d.get("00200013", {}).get("Value", [0])[0]))
        sop = first["00080018"]["Value"][0]
        _get(client, frame_url(target, series, sop, level), FRAME_ACCEPT if level is None else target.low_res_accept)
        return time.perf_counter() - start


def first_image(target: Target, series: Series, sizes: Sizes) -> PhaseResult:
    """Time to first image, full resolution (and at 1/4 resolution where the target has levels)."""
    figures = {"ms": 1000 * float(np.median([_first_image(target, series, None)
                                                for _ in range(sizes.first_image_repeats)]))}
    if target.low_res_accept:
        figures["low_res_ms"] = 1000 * float(np.median([_first_image(target, series, LOW_LEVEL)
                                                         for _ in range(sizes.first_image_repeats)]))
    return PhaseResult(figures)


def _series_all_frames(target: Target, series: Series, concurrency: int) -> tuple[float, int]:
    """Every instance's first frame at full resolution over `concurrency` connections, as a viewer loads a
    stack: each connection asks for the next frame nobody has asked for yet."""
    clients = [HttpClient() for _ in range(concurrency)]
    order = iter(series.sop_uids)
    lock = threading.Lock()

    def load(client: HttpClient) -> int:
        received = 0
        while True:
            with lock:
                sop = next(order, None)
            if sop is None:
                return received
            received += _get(client, frame_url(target, series, sop), FRAME_ACCEPT)[1]

    try:
        start = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            received = sum(pool.map(load, clients))
        return time.perf_counter() - start, received
    finally:
        for client in clients:
            client.close()


def series_low_resolution(target: Target, series: Series, sizes: Sizes) -> PhaseResult:
    """A whole series as fast as the target can show it: low resolution in one request where it has levels
    (pacs-engine's series /frames?level=k), else every frame at full resolution."""
    full_seconds, full_bytes = _series_all_frames(target, series, sizes.series_concurrency)
    figures = {"seconds_full": full_seconds, "full_mb": full_bytes / 1e6}
    if target.low_res_accept:
        url = f"{target.web_root}/studies/{series.study_uid}/series/{series.series_uid}/frames?level={LOW_LEVEL}"
        with HttpClient(timeout=300) as client:
            seconds, size = _get(client, url, target.low_res_accept)
        figures.update(seconds=seconds, mb=size / 1e6)
    else:
        figures.update(seconds=full_seconds, mb=full_bytes / 1e6)
    return PhaseResult(figures)


QUERY_MAX_REQUESTS = 2000


def _median_ms(client: HttpClient, url: str, sizes: Sizes) -> float:
    """Median latency of at least sizes.query_repeats requests, sampled for up to sizes.query_seconds."""
    samples: list[float] = []
    deadline = time.perf_counter() + sizes.query_seconds
    while len(samples) < sizes.query_repeats or (time.perf_counter() < deadline and len(samples) < QUERY_MAX_REQUESTS):
        samples.append(_get(client, url, JSON_ACCEPT)[0])
    return 1000 * float(np.median(samples))


def series_metadata(target: Target, series: Series, sizes: Sizes) -> PhaseResult:
    """WADO-RS series metadata: the first call, then the median of repeated calls."""
    url = f"{target.web_root}/studies/{series.study_uid}/series/{series.series_uid}/metadata"
    with HttpClient(timeout=300) as client:
        first, size = _get(client, url, JSON_ACCEPT)
        return PhaseResult({"ms": _median_ms(client, url, sizes), "first_ms": first * 1000,
                            "kb": size / 1e3})


def qido(target: Target, series: Series, sizes: Sizes) -> PhaseResult:
    """QIDO-RS latency at the three levels a viewer walks: studies of a patient, series, instances."""
    root, study = target.web_root, series.study_uid
    urls = {"studies_ms": f"{root}/studies?PatientID={series.patient_id}",
            "series_ms": f"{root}/studies/{study}/series",
            "instances_ms": f"{root}/studies/{study}/series/{series.series_uid}/instances"}
    with HttpClient(timeout=300) as client:
        _get(client, urls["studies_ms"], JSON_ACCEPT)
        return PhaseResult({key: _median_ms(client, url, sizes) for key, url in urls.items()})


def mixed_load(target: Target, workload: Workload, store: Series, sizes: Sizes, seed: int) -> PhaseResult:
    """N readers fetch random frames while storescu stores another study: frame throughput and tail latency."""
    stop = threading.Event()
    timings: list[list[float]] = [[] for _ in range(sizes.readers)]
    errors: list[BaseException] = []

    def reader(k: int) -> None:
        picks = random_frames(workload, 100_000, seed * 100 + k)
        try:
            with HttpClient() as client:
                for s, sop in picks:
                    if stop.is_set() and len(timings[k]) >= 3:
                        return
                    timings[k].append(_get(client, frame_url(target, s, sop), FRAME_ACCEPT)[0])
        except (PhaseError, OSError, http.client.HTTPException) as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(k,), daemon=True) for k in range(sizes.readers)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    node = target.dicom
    done = run_storescu(node.host, node.port, store.files, called_ae=node.ae_title, calling_ae=BENCH_AE,
                        extra=["-pdu", "131072"])
    store_seconds = time.perf_counter() - start
    stop.set()
    for thread in threads:
        thread.join()
    window = time.perf_counter() - start
    _check_storescu(done, target)
    if errors:
        raise PhaseError(f"a reader failed during the mixed load on {target.name}: {errors[0]}")
    every = [t for ts in timings for t in ts]
    figures = {"frames_per_s": len(every) / window, "store_seconds": store_seconds,
               "store_mb_per_s": store.size / 1e6 / store_seconds}
    figures.update(_percentiles(every))
    return PhaseResult(figures)


# ------------------------------------------------------------------------------------------- the host


@functools.lru_cache(maxsize=4)
def _codestream(sample: Path) -> bytes:
    return bytes(imagecodecs.htj2k_encode(pydicom.dcmread(sample).pixel_array, reversible=True))


def host_speed(sample: Path, decodes: int = 20, loop: int = 300_000) -> PhaseResult:
    """A fixed CPU task timed in the bench process while the target is idle: not a target's figure.

    Targets are measured one at a time, and other machines share this host: a ratio between two
    targets' figures holds only if the host kept its speed meanwhile. Timed before every read phase of
    every target, so the report shows how much it moved. Pure Python (a loop) and native code (HTJ2K
    decodes of `sample`'s pixels) each as the fastest of three tries, in milliseconds.
    """
    data = _codestream(sample)

    def python() -> None:
        total = 0
        for i in range(loop):
            total += i * i

    def native() -> None:
        for _ in range(decodes):
            imagecodecs.htj2k_decode(data)

    return PhaseResult({"python_ms": 1000 * min(_seconds(python) for _ in range(3)),
                        "decode_ms": 1000 * min(_seconds(native) for _ in range(3))})


def _seconds(task: Callable[[], None]) -> float:
    start = time.perf_counter()
    task()
    return time.perf_counter() - start


def memory(target: Target) -> PhaseResult:
    """Peak resident memory of the server process over everything it did."""
    return PhaseResult({"peak_rss_mb": peak_rss_bytes(target.pid) / 1e6})

