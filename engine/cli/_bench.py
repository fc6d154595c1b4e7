"""`pacs-engine bench`: run the side-by-side benchmark (bench/compare) against Orthanc and DCMTK."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from engine.cli._common import EXIT_OK, CliError

_TARGETS = "pacs-engine,orthanc,dcmtk"
_SERIES = "ct300,mr,cr"


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser], parent: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "bench",
        help="benchmark pacs-engine side by side with Orthanc and DCMTK storescp",
        description=(
            "Build a workload from real images (generated CT and MR series, pydicom-data's radiographs), start "
            "each target on loopback with its own temporary storage, run every phase (C-STORE, STOW-RS, storage, "
            "C-GET, C-MOVE, frame latency, first image, series metadata, QIDO, mixed load) repeatedly, and write "
            "report.md, results.json and PNG plots to --out. Targets that are not installed are skipped. Needs a "
            "source checkout (the bench/ package) and the bench extra: pip install -e '.[bench]'."
        ),
    )
    p.add_argument("--targets", default=_TARGETS, metavar="LIST",
                   help=f"comma-separated families or target names (default {_TARGETS}; pacs-engine always runs)")
    p.add_argument("--series", default=_SERIES, metavar="LIST", help=f"comma-separated series (default {_SERIES})")
    p.add_argument("--out", type=Path, default=Path("bench-results"), metavar="DIR",
                   help="where report.md, results.json and the plots go (default ./bench-results)")
    p.add_argument("--repeat", type=int, default=3, metavar="R", help="repetitions of every phase (default 3)")
    p.add_argument("--small", action="store_true", help="a few instances and one repetition: checks, not figures")
    p.add_argument("--work", type=Path, metavar="DIR", help="cache the workload files here (default: a temp folder)")
    p.add_argument("--note", default="", help="a line printed at the top of the report")
    p.set_defaults(run=run)


def _split(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def run(args: argparse.Namespace) -> int:
    try:
        compare = importlib.import_module("bench.compare")
    except ImportError as exc:
        raise CliError(
            f"the benchmark package bench.compare cannot be imported ({exc}); it ships in the source checkout: "
            "run from it after pip install -e '.[bench]'"
        ) from exc
    options = compare.BenchOptions(
        out=args.out, targets=_split(args.targets), series=_split(args.series),
        repeats=1 if args.small else args.repeat, small=args.small, work=args.work, note=args.note,
    )

    def progress(line: str) -> None:
        sys.stderr.write(f"bench: {line}\n")
        sys.stderr.flush()

    try:
        compare.run_bench(options, progress)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    sys.stdout.write(f"wrote {args.out / 'report.md'}, results.json and plots\n")
    return EXIT_OK
