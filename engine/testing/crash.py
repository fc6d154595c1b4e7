"""Crash harness: SIGKILL `pacs-engine serve` / `import` at seeded random moments and check what survived.

A helper layer on top of the engine (not part of the core): it drives the CLI as real processes (DCMTK
storescu, STOW-RS over HTTP, `import`), kills them with SIGKILL while instances are in flight, restarts,
and then checks the promise of the storage core: every acknowledged instance reads back with a data set
byte-identical to the one sent, nothing stored is half an instance, and `verify --deep` is clean.
"""

from __future__ import annotations

import logging
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pydicom

from engine.archive import Archive
from engine.errors import NotFoundError
from engine.testing.dcmtk import free_port, storescu_acknowledged
from engine.testing.server import ServerHandle, running_server

LOGGER = logging.getLogger(__name__)

_STOW_REFERENCED = "00081199"
_SOP_INSTANCE = "00081155"
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})


@dataclass(frozen=True, slots=True)
class Source:
    """One file the harness sends: its SOP Instance UID and the data set bytes after its file meta."""

    path: Path
    sop_instance_uid: str
    transfer_syntax_uid: str
    dataset: bytes = field(repr=False)

    @classmethod
    def read(cls, path: Path) -> Source:
        data = path.read_bytes()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        return cls(path, str(ds.SOPInstanceUID), str(ds.file_meta.TransferSyntaxUID), data[_meta_end(data) :])


def _meta_end(data: bytes) -> int:
    """Offset of the data set in a Part-10 file: group 0002 walked element by element (always explicit VR
    little endian), so a File Meta Information Group Length that lies does not matter.
    """
    pos = 132
    while pos + 8 <= len(data) and data[pos : pos + 2] == b"\x02\x00":
        if data[pos + 4 : pos + 6] in _LONG_VRS:
            pos += 12 + int.from_bytes(data[pos + 8 : pos + 12], "little")
        else:
            pos += 8 + int.from_bytes(data[pos + 6 : pos + 8], "little")
    return pos


@dataclass(slots=True)
class CrashReport:
    """What one crash run did and found. `problems` is empty when every promise held."""

    path: str
    seed: int
    kills: int = 0
    mid_transfer: int = 0  # kills that cut a transfer short (the others hit acknowledged, queued work)
    startup_kills: int = 0  # kills of a restarting server while it opens the archive and replays the journal
    attempts: int = 0  # rounds run; a round whose transfer ended before the kill still kills the server
    acked: set[str] = field(default_factory=set)  # SOP Instance UIDs the sender was told are stored
    verified: int = 0  # acknowledged instances read back byte-identical
    stored: int = 0  # instances in the index at the end (acknowledged or not)
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"crash[{self.path}] seed={self.seed}: kills={self.kills} (mid-transfer {self.mid_transfer}, "
            f"at startup {self.startup_kills}) acked={len(self.acked)} verified={self.verified} "
            f"stored={self.stored} rounds={self.attempts} problems={len(self.problems)}"
        )


class CrashHarness:
    """Sends `files` into the archive at `archive_dir` through one ingest path, killing it `kills` times.

    Every round sends the files not yet acknowledged (all of them once each is), kills the process after
    a delay drawn from random.Random(seed) in [0, max_delay] seconds, whether the transfer finished or
    not, and restarts. `check()` then compares every instance in the index against its source file.
    """

    def __init__(
        self,
        archive_dir: Path,
        files: Sequence[Path],
        *,
        seed: int,
        max_delay: float = 1.0,
        startup_kill_chance: float = 0.25,
    ) -> None:
        """`startup_kill_chance`: how often a round first kills the restarting server before it is ready,
        while it opens the archive and ingests what the last kill left in the journal."""
        self.archive_dir = Path(archive_dir)
        self.sources = {s.sop_instance_uid: s for s in map(Source.read, files)}
        self.by_path = {s.path: s for s in self.sources.values()}
        self.seed = seed
        self.max_delay = max_delay
        self.startup_kill_chance = startup_kill_chance
        self._random = random.Random(seed)

    # -- rounds -----------------------------------------------------------------------------------------
    def _remaining(self, report: CrashReport) -> list[Source]:
        left = [s for s in self.sources.values() if s.sop_instance_uid not in report.acked]
        return left or list(self.sources.values())

    def _delay(self) -> float:
        return self._random.uniform(0.05 * self.max_delay, self.max_delay)

    def _maybe_kill_at_startup(self, report: CrashReport) -> None:
        if report.kills and self._random.random() < self.startup_kill_chance:
            _kill_during_startup(self.archive_dir, self._random.uniform(0.0, 1.0))
            report.startup_kills += 1
            report.kills += 1

    @contextmanager
    def _server(self) -> Iterator[tuple[ServerHandle, str]]:
        """A served archive with DICOMweb; yields (handle, base URL). Raises RuntimeError if it will not start."""
        with running_server(self.archive_dir, extra_args=["--http-port", str(free_port())]) as server:
            yield server, f"http://{server.host}:{server.http_port}"  # running_server waited for DICOMweb too

    def run_storescu(self, kills: int) -> CrashReport:
        """`kills` rounds of one DCMTK storescu association racing a SIGKILL of the server."""
        report = CrashReport("storescu", self.seed)
        while report.kills < kills:
            report.attempts += 1
            self._maybe_kill_at_startup(report)
            with self._server() as (server, _):
                files = [s.path for s in self._remaining(report)]
                acked = _storescu_until_killed(server, files, self._delay())
            report.kills += 1
            report.mid_transfer += len(acked) < len(files)
            report.acked.update(self.by_path[p].sop_instance_uid for p in acked)
        return report

    def run_stow(self, kills: int, batch: int = 4) -> CrashReport:
        """`kills` rounds of sequential STOW-RS requests of `batch` instances racing a SIGKILL of the server."""
        report = CrashReport("stow", self.seed)
        while report.kills < kills:
            report.attempts += 1
            self._maybe_kill_at_startup(report)
            with self._server() as (server, base):
                sources = self._remaining(report)
                acked = _stow_until_killed(server, base, sources, self._delay(), batch)
            report.kills += 1
            report.mid_transfer += len(acked) < len(sources)
            report.acked.update(acked)
        return report

    def run_import(self, kills: int, *, max_attempts: int = 0) -> CrashReport:
        """`kills` runs of `pacs-engine import` killed mid-run, then one run to completion (every file acked).

        A run that finished before its delay ran out is not a kill. Each run imports only what is not
        stored yet, so runs get shorter: after one finishes first, delays are drawn within the time it
        took. After `max_attempts` rounds (default 4 x kills) the harness stops trying and the report
        shows fewer kills.
        """
        report = CrashReport("import", self.seed)
        limit = max_attempts or 4 * kills
        finished_in: float | None = None  # how long the last run that beat its kill took
        while report.kills < kills and report.attempts < limit:
            report.attempts += 1
            stored = self.stored_uids()
            left = [s.path for s in self.sources.values() if s.sop_instance_uid not in stored]
            delay = self._delay() if finished_in is None else self._random.uniform(0.1, 0.9) * finished_in
            started = time.monotonic()
            if _import_until_killed(self.archive_dir, left or [s.path for s in self.sources.values()], delay):
                report.kills += 1
                report.mid_transfer += 1
            else:
                finished_in = time.monotonic() - started
        done = _run_import(self.archive_dir, [s.path for s in self.sources.values()])
        if done.returncode != 0:
            report.problems.append(f"the final import exited {done.returncode}: {done.stderr[-2000:]}")
        else:
            report.acked.update(self.sources)  # exit 0: nothing refused, every file is stored
        return report

    # -- checks -----------------------------------------------------------------------------------------
    def stored_uids(self) -> set[str]:
        """SOP Instance UIDs in the index now (the archive must not be open for writing elsewhere)."""
        if not (self.archive_dir / "index" / "data.mdb").exists():
            return set()
        with Archive.open(self.archive_dir, readonly=True) as archive:
            return {sop for study in archive.study_uids() for series in archive.series_uids(study)
                    for sop in archive.instance_uids(series)}  # fmt: skip

    def check(self, report: CrashReport) -> CrashReport:
        """Restart once (recovering the journal), stop cleanly, then compare and `verify --deep`."""
        with self._server() as (server, _):
            code = server.stop()
        if code != 0:
            report.problems.append(f"the recovering server exited {code}:\n{server.log()[-3000:]}")
        leftovers = sorted(p.name for p in (self.archive_dir / "journal").glob("*.journal"))
        if leftovers:
            report.problems.append(f"journal segments left after a clean stop: {leftovers}")
        stored = self.stored_uids()
        report.stored = len(stored)
        report.problems.extend(f"acknowledged {sop} is not in the index" for sop in sorted(report.acked - stored))
        with Archive.open(self.archive_dir, readonly=True) as archive:
            for sop in sorted(stored):
                problem = _compare(archive, self.sources.get(sop), sop)
                if problem:
                    report.problems.append(problem)
                elif sop in report.acked:
                    report.verified += 1
        verify = subprocess.run(
            [sys.executable, "-m", "engine", "--archive", str(self.archive_dir), "verify", "--deep"],
            capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        if verify.returncode != 0:
            report.problems.append(f"verify --deep exited {verify.returncode}: {verify.stdout}{verify.stderr}")
        return report


def _compare(archive: Archive, source: Source | None, sop: str) -> str | None:
    if source is None:
        return f"{sop} is in the index but was never sent"
    try:
        syntax, dataset = archive.read_dataset(sop)
    except NotFoundError as exc:
        return f"{sop} is listed but cannot be read: {exc}"
    if syntax != source.transfer_syntax_uid or dataset != source.dataset:
        return f"{sop} ({source.path.name}) does not read back byte-identical ({syntax}, {len(dataset)} bytes)"
    return None


def _kill_during_startup(archive_dir: Path, delay: float) -> None:
    """Start `serve` and SIGKILL it after `delay` s. Raises RuntimeError if it ended by itself before."""
    command = [sys.executable, "-m", "engine", "serve", "--archive", str(archive_dir), "--dicom-port", "0",
               "--host", "127.0.0.1", "--http-port", "0"]  # fmt: skip
    log = archive_dir.with_name(archive_dir.name + ".serve.log")
    with log.open("ab") as out:
        out.write(f"$ {' '.join(command)}  # killed after {delay:.2f} s\n".encode())
        out.flush()
        with subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT) as process:
            try:
                code = process.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGKILL)
                process.wait()
                return
    # serve runs until a signal: ending by itself means it could not open the archive
    raise RuntimeError(f"pacs-engine serve exited with {code} while starting:\n{log.read_text(errors='replace')[-3000:]}")


def _kill_after(server: ServerHandle, delay: float) -> threading.Thread:
    def kill() -> None:
        time.sleep(delay)
        server.kill(signal.SIGKILL)

    thread = threading.Thread(target=kill, name="crash-kill", daemon=True)
    thread.start()
    return thread


def _storescu_until_killed(server: ServerHandle, files: Sequence[Path], delay: float) -> list[Path]:
    """Stream one storescu association; SIGKILL the server after `delay` s. Returns the acknowledged files."""
    command = ["storescu", "-v", "-nh", "-aec", server.ae_title, server.host, str(server.port), *map(str, files)]
    killer = _kill_after(server, delay)
    with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as storescu:
        assert storescu.stderr is not None
        acknowledged = list(storescu_acknowledged(storescu.stderr))
    killer.join()
    return acknowledged


def _stow_body(parts: Sequence[bytes], boundary: str) -> bytes:
    out = bytearray()
    for part in parts:
        out += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + part + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out)


def stow_content_type(boundary: str) -> str:
    return f'multipart/related; type="application/dicom"; boundary={boundary}'


def stow_acknowledged(response: httpx.Response) -> set[str]:
    """SOP Instance UIDs in the ReferencedSOPSequence of a STOW-RS response (none unless 200/202)."""
    if response.status_code not in (200, 202):
        return set()
    items = response.json().get(_STOW_REFERENCED, {}).get("Value", [])
    return {str(item[_SOP_INSTANCE]["Value"][0]) for item in items if _SOP_INSTANCE in item}


def _stow_until_killed(server: ServerHandle, base: str, sources: Sequence[Source], delay: float, batch: int) -> set[str]:
    acknowledged: set[str] = set()
    killer = _kill_after(server, delay)
    with httpx.Client(base_url=base, timeout=60) as client:
        for start in range(0, len(sources), batch):
            boundary = uuid.uuid4().hex
            body = _stow_body([s.path.read_bytes() for s in sources[start : start + batch]], boundary)
            try:
                response = client.post("/studies", content=body, headers={"content-type": stow_content_type(boundary)})
            except httpx.TransportError:
                break  # killed mid-request: nothing of this request was acknowledged
            acknowledged |= stow_acknowledged(response)
    killer.join()
    return acknowledged


def _import_command(archive_dir: Path, files: Sequence[Path]) -> list[str]:
    return [sys.executable, "-m", "engine", "--archive", str(archive_dir), "import", "-q", *map(str, files)]


def _import_until_killed(archive_dir: Path, files: Sequence[Path], delay: float) -> bool:
    """Run `import`, SIGKILL it after `delay` s; True when it was still running (a real kill)."""
    with subprocess.Popen(_import_command(archive_dir, files), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as run:
        try:
            run.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            run.send_signal(signal.SIGKILL)
            run.wait()
            return True
    return False


def _run_import(archive_dir: Path, files: Sequence[Path]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_import_command(archive_dir, files), capture_output=True, text=True, timeout=600, check=False)
