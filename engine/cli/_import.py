"""`pacs-engine import`: ingest files and folders in parallel, with a progress bar and a summary."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from engine.archive import Archive, IngestResult
from engine.cli._common import EXIT_FAILURE, EXIT_OK, human_bytes, open_archive
from engine.errors import EngineError

LOGGER = logging.getLogger(__name__)

PART10_MAGIC_OFFSET = 128  # PS3.10 7.1: a 128-byte preamble, then "DICM"

DESCRIPTION = """\
Ingest DICOM Part-10 files into the archive, in parallel.

Files named on the command line are always ingested; if one is not DICOM the archive refuses it and
says why. Folders are searched recursively, and there only files with the 'DICM' prefix at offset 128
are taken: other files (README, thumbnails, DICOMDIR) are skipped and counted, not refused.
An instance already stored with identical content counts as 'already present'; one with the same SOP
Instance UID and different content is refused unless [storage] overwrite = true.
Exit status: 0 when nothing was refused, 1 otherwise (one line per refused file on stderr).
"""


@dataclass(slots=True)
class ImportOutcome:
    """Counts and reasons of one import run."""

    stored: int = 0
    duplicate: int = 0
    replaced: int = 0
    received_bytes: int = 0
    stored_bytes: int = 0
    refused: list[tuple[Path, str]] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)

    def add(self, result: IngestResult) -> None:
        if result.status == "duplicate":
            self.duplicate += 1
            return
        if result.status == "replaced":
            self.replaced += 1
        else:
            self.stored += 1
        self.received_bytes += result.received_bytes
        self.stored_bytes += result.stored_bytes


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser], parent: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "import",
        parents=[parent],
        help="ingest DICOM files and folders (recursive, parallel)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="DICOM files and folders")
    p.add_argument("-j", "--jobs", type=int, default=0, help="parallel ingests (default: 2 per core)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true", help="also list the files skipped in folders")
    p.set_defaults(run=run)


def has_part10_magic(path: Path) -> bool:
    """True when the file holds 'DICM' at offset 128 (unreadable files count as DICOM: let ingest say why)."""
    try:
        with path.open("rb") as f:
            head = f.read(PART10_MAGIC_OFFSET + 4)
    except OSError:
        return True
    return head[PART10_MAGIC_OFFSET:] == b"DICM"


def _walk(folder: Path) -> Iterator[Path]:
    for root, dirs, files in os.walk(folder, onerror=None):
        dirs.sort()
        for name in sorted(files):
            yield Path(root) / name


def collect(paths: Iterable[Path], outcome: ImportOutcome) -> list[Path]:
    """Files to ingest: named files as they are, folders' DICOM files; the rest goes to `outcome`."""
    chosen: list[Path] = []
    for path in paths:
        if path.is_dir():
            for file in _walk(path):
                if file.name.upper() != "DICOMDIR" and has_part10_magic(file):
                    chosen.append(file)
                else:
                    outcome.skipped.append(file)
        elif path.exists():
            chosen.append(path)
        else:
            outcome.refused.append((path, "no such file or folder"))
    return chosen


# Files handed to the index committer and not yet durable; each holds its record and header, not pixels.
MAX_UNCOMMITTED = 256


def ingest_all(archive: Archive, files: list[Path], jobs: int, outcome: ImportOutcome, progress: tqdm[None]) -> None:
    """Ingest `files` with `jobs` threads, each going on to its next file while the last one commits.

    Waiting for each commit's fsync would leave the cores idle; instead a file's outcome is recorded when
    its commit future resolves. At most 2 files per thread are being transcoded and MAX_UNCOMMITTED
    are waiting for their commit, so memory stays bounded.
    """
    working: dict[Future[Future[IngestResult]], Path] = {}
    committing: dict[Future[IngestResult], Path] = {}
    queue = iter(files)
    exhausted = False
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="import") as pool:
        while True:
            while not exhausted and len(working) < 2 * jobs and len(committing) < MAX_UNCOMMITTED:
                path = next(queue, None)
                if path is None:
                    exhausted = True
                    break
                working[pool.submit(archive.ingest_file_async, path)] = path
            if not working and not committing:
                return
            in_flight: list[Future[Any]] = [*working, *committing]
            done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in done:
                if future in working:
                    path = working.pop(future)
                    try:
                        committing[future.result()] = path
                    except Exception:  # noqa: BLE001 - _record reads the same exception again and says why
                        _record(future, path, outcome)
                        progress.update(1)
                else:
                    _record(future, committing.pop(future), outcome)
                    progress.update(1)


def _record(future: Future[IngestResult], path: Path, outcome: ImportOutcome) -> None:
    try:
        outcome.add(future.result())
    except (EngineError, OSError) as exc:
        outcome.refused.append((path, str(exc) or type(exc).__name__))
    except Exception as exc:  # one broken file must not end a bulk import; the trace is logged
        LOGGER.exception("internal error while importing %s", path)
        outcome.refused.append((path, f"internal error: {type(exc).__name__}: {exc}"))


def run(args: argparse.Namespace) -> int:
    outcome = ImportOutcome()
    files = collect(args.paths, outcome)
    jobs = args.jobs if args.jobs > 0 else 2 * (os.cpu_count() or 1)
    started = time.monotonic()
    with open_archive(args, readonly=False) as archive:
        bar_off = args.quiet or not sys.stderr.isatty()
        with tqdm(total=len(files), unit="file", file=sys.stderr, disable=bar_off, dynamic_ncols=True) as bar:
            ingest_all(archive, files, jobs, outcome, bar)
    _report(outcome, time.monotonic() - started, verbose=args.verbose)
    return EXIT_FAILURE if outcome.refused else EXIT_OK


def _report(outcome: ImportOutcome, seconds: float, *, verbose: bool) -> None:
    for path in outcome.skipped if verbose else ():
        sys.stderr.write(f"skipped: {path}: not a DICOM Part-10 file\n")
    for path, reason in outcome.refused:
        sys.stderr.write(f"refused: {path}: {reason}\n")
    done = outcome.stored + outcome.duplicate + outcome.replaced
    rate = outcome.received_bytes / seconds if seconds > 0 else 0.0
    ratio = outcome.received_bytes / outcome.stored_bytes if outcome.stored_bytes else 0.0
    out = sys.stdout
    out.write(
        f"stored {outcome.stored}, already present {outcome.duplicate}, replaced {outcome.replaced}, "
        f"refused {len(outcome.refused)}, skipped {len(outcome.skipped)} (not DICOM)\n"
    )
    out.write(
        f"{done} instances in {seconds:.2f} s ({done / seconds if seconds > 0 else 0.0:.1f} inst/s, "
        f"{human_bytes(int(rate))}/s): received {human_bytes(outcome.received_bytes)}, "
        f"stored {human_bytes(outcome.stored_bytes)} (ratio {ratio:.2f})\n"
    )
