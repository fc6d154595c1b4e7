"""`pacs-engine delete`: remove a study, series or instance from the archive, when the configuration allows."""

from __future__ import annotations

import argparse
import json
import sys

from engine.archive import DeleteResult, DeletionDisabledError
from engine.cli._common import (
    EXIT_OK,
    EXIT_USAGE,
    checked_uid,
    human_bytes,
    open_archive,
    settings_from,
)


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser], parent: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "delete",
        parents=[parent],
        help="delete a study, series or instance (needs [storage] allow_delete = true)",
        description=(
            "Remove every instance of a study or series, or one instance, from the index and the pixel "
            "store, and print what was removed and the bytes reclaimed. Refused unless [storage] "
            "allow_delete = true (engine.toml) or PACS_ENGINE_STORAGE__ALLOW_DELETE=1. Asks for "
            "confirmation on a terminal; --yes skips the question (needed when stdin is not a terminal). "
            "While `serve` runs, delete through DICOMweb (DELETE /studies/{uid}) instead."
        ),
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--study", metavar="UID", help="every instance of this study")
    which.add_argument("--series", metavar="UID", help="every instance of this series")
    which.add_argument("--sop", metavar="UID", help="this one instance")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.set_defaults(run=run)


def _target(args: argparse.Namespace) -> tuple[str, str]:
    if args.study:
        return "study", checked_uid(args.study, "study UID")
    if args.series:
        return "series", checked_uid(args.series, "series UID")
    return "instance", checked_uid(args.sop, "SOP instance UID")


def _confirmed(level: str, uid: str) -> bool:
    sys.stderr.write(f"delete {level} {uid} and all it holds, for good? [y/N] ")
    sys.stderr.flush()
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def run(args: argparse.Namespace) -> int:
    level, uid = _target(args)
    settings = settings_from(args)
    if not settings.storage.allow_delete:
        # Checked before opening: a refused deletion must not sweep or recover anything either.
        raise DeletionDisabledError(
            f"deletion is disabled for archive {settings.archive}: set allow_delete = true in the [storage] "
            "section of engine.toml, or PACS_ENGINE_STORAGE__ALLOW_DELETE=1"
        )
    if not args.yes:
        if not sys.stdin.isatty():
            sys.stderr.write("pacs-engine delete: refusing without --yes (stdin is not a terminal)\n")
            return EXIT_USAGE
        if not _confirmed(level, uid):
            sys.stderr.write("pacs-engine delete: nothing deleted\n")
            return EXIT_USAGE
    with open_archive(args, readonly=False) as archive:
        result = archive.delete(level, uid)
    _report(result, as_json=args.json)
    return EXIT_OK


def _report(result: DeleteResult, *, as_json: bool) -> None:
    if as_json:
        payload = {
            "level": result.level,
            "uid": result.uid,
            "instances": result.instances,
            "series": result.series,
            "studies": result.studies,
            "patients": result.patients,
            "received_bytes": result.received_bytes,
            "stored_bytes": result.stored_bytes,
            "reclaimed_bytes": result.reclaimed_bytes,
            "last_sequence": result.last_sequence,
            "sop_instance_uids": list(result.sop_instance_uids),
        }
        json.dump(payload, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    sys.stdout.write(
        f"deleted {result.level} {result.uid}: {result.instances} instances, {result.series} series, "
        f"{result.studies} studies\n"
        f"stored     {human_bytes(result.stored_bytes)} ({result.stored_bytes} bytes) less in the archive\n"
        f"reclaimed  {human_bytes(result.reclaimed_bytes)} ({result.reclaimed_bytes} bytes) of pixel files\n"
    )
