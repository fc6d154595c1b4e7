"""Retrieve benchmark: C-MOVE and C-GET from `pacs-engine serve` against a raw-file baseline in the same run.

Builds the generated CT series (real CT slices from pydicom-data), imports it into an archive, then times
  0. baseline: DCMTK storescu sending a storescp-written folder of the series to a DCMTK storescp;
  1. C-MOVE from `serve` (a) to bench/raw_scp.py (pynetdicom, accepts HTJ2K: the stored codestreams travel
     as they are; DCMTK 3.6.7 cannot receive HTJ2K) and (b) to a DCMTK storescp, which accepts only
     uncompressed syntaxes here, so every frame is decoded on the fly;
  2. C-GET (a) by pacs-engine's SCU (`scu_get`: HTJ2K proposed, bytes counted and dropped) and
     (b) by DCMTK getscu (uncompressed, written to disk);
  3. the same series imported with the `jpegls` profile, whose stored syntax DCMTK does receive: C-MOVE to
     a DCMTK storescp and C-GET by DCMTK getscu, both in stored JPEG-LS, so both ends but ours are DCMTK.
Every receiver but 2a writes what it receives to disk, as the baseline's storescp does. The baseline and
every kind take turns in each of `--repeat` rounds, and each transfer starts after a sync (see _timed).
Prints instances/s, MB/s of pixel data, the ratio to the baseline, and the machine's busy CPU time per
instance (both ends and the kernel; bench/host_cpu.py), with the share of CPU time the host stole. Usage:
  python bench/retrieve.py [--slices 300] [--repeat 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from engine.archive import Archive
from engine.net import Peer, ScuOptions, scu_get, scu_move
from engine.testing.dcmtk import LOOPBACK, StoreSCP, dcmtk_available, free_port, run_storescu, wait_for_port
from engine.testing.series import SeriesFiles, write_ct_series
from engine.testing.server import running_server

from host_cpu import CpuTimes, steal_share, timed  # bench/ is on sys.path when run as a script and under pytest

HERE = Path(__file__).resolve().parent
PIXEL_BYTES_PER_SLICE = 512 * 512 * 2
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


@dataclass(frozen=True, slots=True)
class Timing:
    """One timed transfer: its seconds, and the machine's CPU times meanwhile (None off Linux)."""

    seconds: float
    cpu: CpuTimes | None


def _timed(fn: Callable[[], object]) -> Timing:
    """How long `fn` takes, started with no dirty pages: every receiver here writes 158 MB to disk, and
    writing back the last transfer's files would otherwise take CPU from whichever transfer came next."""
    os.sync()
    return Timing(*timed(fn))


def _median(samples: list[float]) -> float:
    return statistics.median(samples)


def _check(done: subprocess.CompletedProcess[str], what: str) -> None:
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({done.returncode}): {done.stderr[-2000:]}")


def make_folder(series: Path, work: Path) -> Path:
    """The series as a storescp-written folder: what the baseline sends."""
    with StoreSCP(work / "folder", ae_title="FOLDER") as folder:
        _check(run_storescu(LOOPBACK, folder.port, [series], called_ae="FOLDER"), "storescu to the folder")
    return work / "folder"


def baseline(folder: Path, work: Path, k: int) -> Timing:
    """storescu sending the storescp-written folder to a storescp writing files, timed."""
    with StoreSCP(work / f"base{k}", ae_title="SINK") as sink:
        timing = _timed(lambda: _check(run_storescu(LOOPBACK, sink.port, [folder], called_ae="SINK"),
                                       "baseline storescu"))
        if len(sink.files()) != len(list(folder.iterdir())):
            raise RuntimeError("the baseline storescp did not receive every instance")
    return timing


class RawScp:
    """bench/raw_scp.py (a pynetdicom SCP writing what it receives as files, every syntax accepted) on a port."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.port = free_port()
        self.ae_title = "RAW_SCP"
        self._process: subprocess.Popen[str] | None = None

    def __enter__(self) -> RawScp:
        command = [sys.executable, str(HERE / "raw_scp.py"), "--port", str(self.port), "--out", str(self.out)]
        self._process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert self._process.stdout is not None
        self._process.stdout.readline()  # its readiness line
        wait_for_port(LOOPBACK, self.port, 30)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=30)
            if self._process.stdout is not None:
                self._process.stdout.close()

    def files(self) -> list[Path]:
        return sorted(self.out.iterdir())


def import_series(series: SeriesFiles, archive_dir: Path, profile: str | None = None) -> Path:
    """An archive holding the series, stored with `profile` (None: the default)."""
    with Archive.open(archive_dir, storage=None if profile is None else {"profile": profile}) as archive:
        for path in series.files:
            archive.ingest_file(path)
    return archive_dir


def serve_round(series: SeriesFiles, archive_dir: Path, work: Path, k: int) -> dict[str, Timing]:
    """Each retrieve kind from the default-profile archive, timed, each checked to move every instance."""
    n = len(series.files)
    keys = {"StudyInstanceUID": series.study_uid, "SeriesInstanceUID": series.series_uid}
    times: dict[str, Timing] = {}
    stored = RawScp(work / f"move_stored{k}")
    explicit = StoreSCP(work / f"move_explicit{k}", ae_title="SINK_EXPLICIT")
    with stored, explicit:
        remote = f'RAW_SCP = "{LOOPBACK}:{stored.port}"\nSINK_EXPLICIT = "{LOOPBACK}:{explicit.port}"\n'
        (archive_dir / "engine.toml").write_text("[remote_aes]\n" + remote, encoding="utf-8")
        with running_server(archive_dir) as server:
            peer = Peer(server.ae_title, server.host, server.port)
            options = ScuOptions(calling_ae="BENCH")
            for kind, destination in (("move_stored", stored.ae_title), ("move_explicit", explicit.ae_title)):
                summary = scu_move(peer, "SERIES", keys, destination, options=options)
                if summary.completed != n:
                    raise RuntimeError(f"{kind}: {summary.completed} of {n} completed")
                # Warm-up above (first association, caches); the timed run follows.
                times[kind] = _timed(partial(scu_move, peer, "SERIES", keys, destination, options=options))
            received: list[int] = []
            summary = scu_get(peer, "SERIES", keys, lambda data, syntax: received.append(len(data)),
                              sop_classes=[CT_IMAGE_STORAGE], options=options)
            if summary.completed != n:
                raise RuntimeError(f"get_stored: {summary.completed} of {n} completed")
            times["get_stored"] = _timed(lambda: scu_get(
                peer, "SERIES", keys, lambda data, syntax: None, sop_classes=[CT_IMAGE_STORAGE], options=options))
            out = work / f"getscu{k}"
            out.mkdir()
            command = ["getscu", "-S", "-aet", "BENCH", "-aec", server.ae_title, "+B", "-od", str(out),
                       server.host, str(server.port), "-k", "QueryRetrieveLevel=SERIES",
                       "-k", f"StudyInstanceUID={series.study_uid}", "-k", f"SeriesInstanceUID={series.series_uid}"]
            times["get_explicit"] = _timed(lambda: _check(
                subprocess.run(command, capture_output=True, text=True, check=False), "getscu"))
            if len(list(out.iterdir())) != n:
                raise RuntimeError("getscu did not receive every instance")
    return times


def jpegls_round(series: SeriesFiles, archive_dir: Path, work: Path, k: int) -> dict[str, Timing]:
    """C-MOVE and C-GET in stored JPEG-LS with DCMTK on the other end, timed."""
    n = len(series.files)
    keys = ["-k", "QueryRetrieveLevel=SERIES", "-k", f"StudyInstanceUID={series.study_uid}",
            "-k", f"SeriesInstanceUID={series.series_uid}"]  # fmt: skip
    sink = StoreSCP(work / f"move_jpegls{k}", ae_title="SINK_JLS")
    with sink:
        (archive_dir / "engine.toml").write_text(
            f'[storage]\nprofile = "jpegls"\n[remote_aes]\nSINK_JLS = "{LOOPBACK}:{sink.port}"\n', encoding="utf-8")
        with running_server(archive_dir) as server:
            address = [server.host, str(server.port)]
            move = ["movescu", "-S", "-aet", "BENCH", "-aec", server.ae_title, "-aem", "SINK_JLS", *address, *keys]
            moved = _timed(lambda: _check(subprocess.run(move, capture_output=True, text=True, check=False),
                                          "movescu"))
            out = work / f"getscu_jpegls{k}"
            out.mkdir()
            get = ["getscu", "-S", "+xt", "-aet", "BENCH", "-aec", server.ae_title, "+B", "-od", str(out),
                   *address, *keys]
            got = _timed(lambda: _check(subprocess.run(get, capture_output=True, text=True, check=False), "getscu"))
    for label, folder in (("C-MOVE", sink.out_dir), ("C-GET", out)):
        if len(list(folder.iterdir())) != n:
            raise RuntimeError(f"{label} in JPEG-LS did not deliver every instance")
    return {"move_jpegls": moved, "get_jpegls": got}


def run_rounds(series: SeriesFiles, work: Path, repeat: int) -> dict[str, list[Timing]]:
    """The baseline and every retrieve kind, timed in each of `repeat` rounds.

    Each round runs the baseline and then every kind, so a host that slows down or speeds up during the
    run (a shared one does, by up to 2x here) weighs on both sides of each ratio alike. A first JPEG-LS
    round warms its caches and is not counted; the other kinds warm up within their round.
    """
    folder = make_folder(series.files[0].parent, work)
    default = import_series(series, work / "archive")
    jpegls = import_series(series, work / "archive-jpegls", "jpegls")
    jpegls_round(series, jpegls, work, -1)
    samples: dict[str, list[Timing]] = {}
    for k in range(repeat):
        figures = {"baseline": baseline(folder, work, k), **serve_round(series, default, work, k),
                   **jpegls_round(series, jpegls, work, k)}
        for kind, timing in figures.items():
            samples.setdefault(kind, []).append(timing)
    return samples


def summarize(samples: dict[str, list[Timing]], n: int) -> dict[str, float]:
    """Median figures of each kind, ratios to the baseline's median, and the host's steal over all.

    `KIND_vs_baseline_low` / `_high` bound the ratios of the single rounds (each kind against the
    baseline of its own round): how far the host moved the ratio within the run.
    """
    seconds = {kind: _median([t.seconds for t in timings]) for kind, timings in samples.items()}
    base = seconds.pop("baseline")
    figures: dict[str, float] = {"instances": n, "baseline_s": base, "baseline_inst_per_s": n / base}
    for kind, value in seconds.items():
        figures[f"{kind}_s"] = value
        figures[f"{kind}_inst_per_s"] = n / value
        figures[f"{kind}_pixel_MB_per_s"] = n * PIXEL_BYTES_PER_SLICE / value / 1e6
        figures[f"{kind}_vs_baseline"] = base / value
        rounds = [b.seconds / t.seconds for b, t in zip(samples["baseline"], samples[kind], strict=True)]
        figures[f"{kind}_vs_baseline_low"], figures[f"{kind}_vs_baseline_high"] = min(rounds), max(rounds)
    used = [t.cpu for timings in samples.values() for t in timings if t.cpu is not None]
    if used:
        for kind, timings in samples.items():
            figures[f"{kind}_cpu_ms_per_inst"] = 1000 * _median([t.cpu.busy for t in timings if t.cpu]) / n
        figures["steal_share"] = steal_share(used)
    return figures


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, received files)")
    args = parser.parse_args(argv)
    if not dcmtk_available():
        raise SystemExit("DCMTK (storescu, storescp, getscu) is needed: apt-get install dcmtk")
    # DCMTK tools read TCP_NODELAY from the environment; without it each small response waits for a
    # delayed ACK (storescp measured at 21 inst/s instead of 468): the baseline gets its best setting.
    os.environ.setdefault("TCP_NODELAY", "1")
    work = Path(tempfile.mkdtemp(prefix="bench-retrieve-"))
    try:
        files = write_ct_series(work / "series", args.slices)
        samples = run_rounds(SeriesFiles.from_files(files), work, args.repeat)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    figures = summarize(samples, args.slices)
    _print(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1), encoding="utf-8")
    return figures


def _print(f: dict[str, float]) -> None:
    n = int(f["instances"])
    rows = [("baseline: storescu folder -> storescp", "baseline", 1.0)]
    names = {
        "move_stored": "C-MOVE, stored HTJ2K -> raw_scp.py",
        "move_explicit": "C-MOVE, explicit VR LE (decode) -> storescp",
        "get_stored": "C-GET, stored HTJ2K -> pacs-engine SCU",
        "get_explicit": "C-GET, explicit VR LE (decode) -> getscu",
        "move_jpegls": "C-MOVE, stored JPEG-LS -> storescp",
        "get_jpegls": "C-GET, stored JPEG-LS -> getscu",
    }
    for kind, label in names.items():
        rows.append((label, kind, f[f"{kind}_vs_baseline"]))
    sys.stdout.write(f"{n} CT slices of 512 x 512 x 16 bit; ratio: of the medians (single rounds' range); "
                     "CPU: the machine's busy CPU time per instance\n")
    for label, kind, ratio in rows:
        seconds = f[f"{kind}_s"]
        cpu = f.get(f"{kind}_cpu_ms_per_inst")
        low, high = f.get(f"{kind}_vs_baseline_low", 1.0), f.get(f"{kind}_vs_baseline_high", 1.0)
        sys.stdout.write(f"  {label:<46} {seconds:7.2f} s  {n / seconds:7.1f} inst/s  "
                         f"{n * PIXEL_BYTES_PER_SLICE / seconds / 1e6:7.1f} MB/s  {ratio:5.2f}x ({low:.2f}-{high:.2f})"
                         + (f"  CPU {cpu:5.2f} ms\n" if cpu is not None else "\n"))
    if "steal_share" in f:
        sys.stdout.write(f"  the host stole {100 * f['steal_share']:.0f}% of the CPU time of the timed transfers\n")


if __name__ == "__main__":
    main()
