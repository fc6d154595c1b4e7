"""`pacs-engine stats` and `pacs-engine verify`: what the archive holds, and whether it is intact."""

from __future__ import annotations

import argparse
import json
import sys

from engine.cli._common import EXIT_FAILURE, EXIT_OK, human_bytes, open_archive


def add_parsers(subparsers: argparse._SubParsersAction[argparse.ArgumentParser], parent: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "stats",
        parents=[parent],
        help="counts, received and stored bytes, storage ratio",
        description="Patients, studies, series, instances; bytes received (raw) and stored; their ratio.",
    )
    p.add_argument("--json", action="store_true", help="one JSON object instead of text")
    p.set_defaults(run=run_stats)
    p = subparsers.add_parser(
        "verify",
        parents=[parent],
        help="check that the index and the pixel store agree",
        description=(
            "Check that the index and the pixel store agree and that every stored chunk has its recorded "
            "length and checksum; --deep also decodes every frame and compares it with the pixel hash "
            "recorded at ingest. Prints each problem; exit status 1 when there is any."
        ),
    )
    p.add_argument("--deep", action="store_true", help="decode every frame and compare its hash")
    p.set_defaults(run=run_verify)


def run_stats(args: argparse.Namespace) -> int:
    with open_archive(args, readonly=True) as archive:
        stats = archive.stats()
    if args.json:
        payload = {
            "patients": stats.patients,
            "studies": stats.studies,
            "series": stats.series,
            "instances": stats.instances,
            "received_bytes": stats.received_bytes,
            "stored_bytes": stats.stored_bytes,
            "ratio": round(stats.ratio, 4),
        }
        json.dump(payload, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return EXIT_OK
    sys.stdout.write(
        f"patients   {stats.patients}\nstudies    {stats.studies}\nseries     {stats.series}\n"
        f"instances  {stats.instances}\n"
        f"received   {human_bytes(stats.received_bytes)} ({stats.received_bytes} bytes, raw)\n"
        f"stored     {human_bytes(stats.stored_bytes)} ({stats.stored_bytes} bytes)\n"
        f"ratio      {stats.ratio:.2f}\n"
    )
    return EXIT_OK


def run_verify(args: argparse.Namespace) -> int:
    with open_archive(args, readonly=True) as archive:
        problems = archive.verify(deep=args.deep)
        instances = archive.stats().instances
    for problem in problems:
        sys.stdout.write(f"{problem}\n")
    if problems:
        sys.stderr.write(f"FAILED: {len(problems)} problems in {instances} instances\n")
        return EXIT_FAILURE
    sys.stdout.write(f"OK: {instances} instances verified{' (deep)' if args.deep else ''}\n")
    return EXIT_OK
