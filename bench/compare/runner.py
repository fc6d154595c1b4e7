"""Run every phase against every target, repeated, and collect the figures into one results tree."""

from __future__ import annotations

import http.client
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.compare import phases
from bench.compare.phases import Figures, PhaseError, PhaseResult, Sizes
from bench.compare.targets import BENCH_AE, FAMILIES, Node, PacsEngine, Target, all_targets, orthanc_binary
from bench.compare.workload import SERIES_NAMES, Workload, build_workload
from engine import __version__
from engine.testing.dcmtk import StoreSCP, dcmtk_version

LOGGER = logging.getLogger(__name__)

INGEST_PHASES = ("cstore_1", "cstore_4", "stow")
RETRIEVE_PHASES = ("cget", "cget_stored", "cmove")
WEB_PHASES = ("frame_latency", "first_image", "series_low_res", "series_metadata", "qido", "mixed_load")
ALL_PHASES = ("cstore_1", "storage", *RETRIEVE_PHASES, *WEB_PHASES, "memory", "cstore_4", "stow")
_FAILURES = (PhaseError, RuntimeError, httpx.HTTPError, http.client.HTTPException, subprocess.SubprocessError, OSError,
             ValueError, KeyError)

Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class BenchOptions:
    """What to run: which targets (families or names), series, repetitions, where to write, and small mode."""

    out: Path
    targets: tuple[str, ...] = FAMILIES
    series: tuple[str, ...] = SERIES_NAMES
    repeats: int = 3
    small: bool = False
    work: Path | None = None  # where the workload files are cached; a temporary folder when None
    note: str = ""  # printed at the top of the report (e.g. what else was running on the machine)


def applicable_phases(target: Target) -> list[str]:
    """The phases a target takes part in, in run order."""
    names = []
    for name in ALL_PHASES:
        if name in RETRIEVE_PHASES and not target.retrieve:
            continue
        if (name in WEB_PHASES or name == "stow") and not target.web:
            continue
        names.append(name)
    return names


def select_targets(names: Sequence[str]) -> list[Target]:
    """Targets matching the given families or target names. Raises ValueError naming unknown ones."""
    every = all_targets()
    known = {t.family for t in every} | {t.name for t in every}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown targets {', '.join(unknown)}; choose from {', '.join(sorted(known))}")
    chosen = [t for t in every if t.family in names or t.name in names]
    if not any(isinstance(t, PacsEngine) and t.profile == "htj2k" for t in chosen):
        chosen.insert(0, PacsEngine())  # the reference every ratio is taken against
    return chosen


@dataclass(slots=True)
class TargetRun:
    """What one target did: per phase the figures of each repetition, facts, and the first error."""

    target: Target
    status: str = "ok"  # ok, skipped, crashed (the server died during the run)
    notes: list[str] = field(default_factory=list)
    phases: dict[str, dict[str, Any]] = field(default_factory=dict)
    host_speed: list[Figures] = field(default_factory=list)  # timed before each read phase

    def record(self, phase: str, result: PhaseResult) -> None:
        entry = self.phases.setdefault(phase, {"runs": [], "info": {}})
        entry["runs"].append(result.figures)
        entry["info"].update(result.info)

    def fail(self, phase: str, exc: BaseException) -> None:
        entry = self.phases.setdefault(phase, {"runs": [], "info": {}})
        entry["error"] = f"{type(exc).__name__}: {exc}"
        self.notes.append(f"{phase} failed: {entry['error']}")

    def as_json(self) -> dict[str, Any]:
        return {"name": self.target.name, "family": self.target.family, "status": self.status,
                "notes": self.notes, "phases": self.phases, "host_speed": self.host_speed}


class _Runner:
    """One target's phases, a repetition at a time: ingest on fresh storage, reads on the kept archive.

    The schedule (_run_targets) has the targets take turns, so each target's repetitions are spread over
    the whole run rather than bunched into its own few minutes of it.
    """

    def __init__(self, target: Target, workload: Workload, options: BenchOptions, workdir: Path,
                 progress: Progress) -> None:
        self.target, self.workload, self.options = target, workload, options
        self.workdir, self.progress = workdir, progress
        self.sizes = Sizes.small() if options.small else Sizes()
        self.run = TargetRun(target)
        self.destination: StoreSCP | None = None
        self.reading = False  # up with the archive of its last cstore_1 run, for the read phases

    def open(self) -> None:
        self.destination = StoreSCP(self.workdir / "moved", ae_title=BENCH_AE).__enter__()

    def close(self) -> None:
        self.end_reads()
        if self.destination is not None:
            self.destination.stop()
            self.destination = None

    def takes(self, phase: str) -> bool:
        """Whether the phase still applies: the target runs, takes part in it, and it has not failed."""
        failed = "error" in self.run.phases.get(phase, {})
        return self.run.status == "ok" and phase in applicable_phases(self.target) and not failed

    def _node(self) -> Node:
        assert self.destination is not None
        return Node(BENCH_AE, self.destination.host, self.destination.port)

    def _stop(self) -> None:
        crash = self.target.stop()
        if crash:
            self.run.notes.append(f"the server crashed: {crash}")
            self.run.status = "crashed"

    def ingest(self, phase: str, r: int) -> None:
        """Repetition r of an ingest phase on a freshly started, empty target. The last cstore_1 run stays
        up for the read phases."""
        run_dir = self.workdir / f"{phase}-{r}"
        self.progress(f"{self.target.name}: {phase} run {r + 1}/{self.options.repeats}")
        try:
            self.target.start(run_dir, self._node())
        except _FAILURES as exc:
            self.run.fail(phase, exc)
            return
        keep = phase == "cstore_1" and r == self.options.repeats - 1
        try:
            self.run.record(phase, self._ingest_once(phase))
            if phase == "cstore_1":
                self.run.record("storage", phases.storage(self.target, self.workload))
        except _FAILURES as exc:
            self.run.fail(phase, exc)
            keep = False
        finally:
            if not keep:
                self._stop()
                shutil.rmtree(run_dir, ignore_errors=True)
        self.reading = keep and self.run.status == "ok"

    def _ingest_once(self, phase: str) -> PhaseResult:
        if phase == "stow":
            return phases.stow_ingest(self.target, self.workload)
        return phases.cstore_ingest(self.target, self.workload, 4 if phase == "cstore_4" else 1)

    def read(self, phase: str, r: int) -> None:
        """Repetition r of a read phase against the kept archive; the host is timed before the first."""
        if not self.reading or not self.takes(phase):
            return
        if r == 0:
            self.run.host_speed.append(phases.host_speed(self.workload.main_series().files[0]).figures)
        self.progress(f"{self.target.name}: {phase} run {r + 1}/{read_repeats(phase, self.options)}")
        try:
            self.run.record(phase, self._read_once(phase, r))
        except _FAILURES as exc:
            self.run.fail(phase, exc)
            if not self.target.alive():  # it died: nothing more to read from it
                self.end_reads()

    def end_reads(self) -> None:
        if self.reading:
            self.reading = False
            self._stop()

    def _read_once(self, phase: str, r: int) -> PhaseResult:
        target, workload, sizes = self.target, self.workload, self.sizes
        main = workload.main_series()
        if phase == "cget":
            return phases.cget_uncompressed(target, main, self.workdir / "cget")
        if phase == "cget_stored":
            return phases.cget_stored(target, main)
        if phase == "cmove":
            assert self.destination is not None
            return phases.cmove(target, main, self.destination)
        if phase == "frame_latency":
            return phases.frame_latency(target, workload, sizes, seed=r)
        if phase == "first_image":
            return phases.first_image(target, main, sizes)
        if phase == "series_low_res":
            return phases.series_low_resolution(target, main, sizes)
        if phase == "series_metadata":
            return phases.series_metadata(target, main, sizes)
        if phase == "qido":
            return phases.qido(target, main, sizes)
        if phase == "mixed_load":
            return phases.mixed_load(target, workload, workload.mixed[r], sizes, seed=r)
        if phase == "memory":
            return phases.memory(target)
        raise ValueError(f"unknown phase {phase}")


def read_repeats(phase: str, options: BenchOptions) -> int:
    return 1 if phase == "memory" else options.repeats


def _run_targets(runners: Sequence[_Runner], options: BenchOptions) -> None:
    """Every phase of every target, the targets taking turns at each repetition.

    Targets run one at a time, but a host shared with other machines changes speed over minutes: with
    each target's phases bunched together, a slow spell fell on one target's figures only (this host's
    speed check varied by a third within one run). Taking turns spreads it over all of them. All
    targets stay up, idle, for the read phases, each with the archive of its last cstore_1 run.
    """
    for r in range(options.repeats):
        for runner in runners:
            if runner.takes("cstore_1"):
                runner.ingest("cstore_1", r)
    try:
        for phase in ALL_PHASES:
            if phase in INGEST_PHASES or phase == "storage":
                continue
            for r in range(read_repeats(phase, options)):
                for runner in runners:
                    runner.read(phase, r)
    finally:
        for runner in runners:
            runner.end_reads()
    for phase in ("cstore_4", "stow"):
        for r in range(options.repeats):
            for runner in runners:
                if runner.takes(phase):
                    runner.ingest(phase, r)


def _machine() -> dict[str, Any]:
    cpu = ""
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), "")
    except OSError:
        pass
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "system": platform.platform(),
            "load_average_at_start": load}


def _orthanc_version() -> str | None:
    binary = orthanc_binary()
    if binary is None:
        return None
    done = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30, check=False)
    return (done.stdout or done.stderr).splitlines()[0].strip() if (done.stdout or done.stderr) else None


@contextmanager
def _dcmtk_nodelay() -> Iterator[None]:
    """TCP_NODELAY=1 for every DCMTK process the bench starts (storescu, getscu, movescu, storescp, Orthanc).

    Debian's DCMTK leaves Nagle's algorithm on unless this variable is set, and a single association then
    stalls about 40 ms per instance on delayed ACKs (measured here: storescu to storescp at 21 against
    333 instances/s). Every DCMTK-based target and client gets the same setting.
    """
    previous = os.environ.get("TCP_NODELAY")
    os.environ["TCP_NODELAY"] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TCP_NODELAY", None)
        else:
            os.environ["TCP_NODELAY"] = previous


def run_bench(options: BenchOptions, progress: Progress = lambda line: None) -> dict[str, Any]:
    """Build the workload, run every phase against every selected target, write report.md, results.json
    and plots into options.out; return the results tree. Raises ValueError for unknown targets or series."""
    with _dcmtk_nodelay():
        return _run_bench(options, progress)


def _run_bench(options: BenchOptions, progress: Progress) -> dict[str, Any]:
    from bench.compare import report

    targets = select_targets(options.targets)
    if options.repeats < 1:
        raise ValueError("--repeat must be at least 1")
    options.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pacs-bench-") as tmp:
        work = options.work or Path(tmp) / "workload"
        progress(f"building the workload ({', '.join(options.series)}{', small' if options.small else ''})")
        workload = build_workload(work, options.series, small=options.small, repeats=options.repeats)
        started = time.time()
        runs, runners = [], []
        for target in targets:
            missing = target.missing()
            if missing:
                runs.append(TargetRun(target, status="skipped", notes=[missing]))
                progress(f"{target.name}: skipped: {missing}")
                continue
            workdir = Path(tmp) / target.name
            workdir.mkdir()
            runners.append(_Runner(target, workload, options, workdir, progress))
            runs.append(runners[-1].run)
        try:
            for runner in runners:
                runner.open()
            _run_targets(runners, options)
        finally:
            for runner in runners:
                runner.close()
                shutil.rmtree(runner.workdir, ignore_errors=True)
        results = {
            "meta": {"started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)),
                     "seconds": round(time.time() - started, 1), "repeats": options.repeats, "small": options.small,
                     "note": options.note, "pacs_engine": __version__, "orthanc": _orthanc_version(),
                     "dcmtk": dcmtk_version(), **_machine()},
            "workload": {"series": [{"name": s.name, "instances": len(s.files), "mb": s.size / 1e6,
                                     "study_uid": s.study_uid, "series_uid": s.series_uid} for s in workload.series],
                         "mb": workload.size / 1e6, "instances": workload.instances,
                         "mixed_instances": len(workload.mixed[0].files), "main_series": workload.main_series().name},
            "targets": [r.as_json() for r in runs],
        }
        report.write_report(results, options.out)
    return results
