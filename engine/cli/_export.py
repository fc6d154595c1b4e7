"""`pacs-engine export`: write a study, series or instance as Part-10 files under OUT/<study>/<series>/."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from engine.archive import Archive
from engine.cli._common import (
    EXIT_OK,
    CliError,
    checked_uid,
    existing_dir,
    open_archive,
)

SYNTAX_WORDS = ("original", "explicit", "stored")


def _syntax(value: str) -> str:
    if value in SYNTAX_WORDS:
        return value
    try:
        return checked_uid(value, "transfer syntax")
    except CliError as exc:
        raise argparse.ArgumentTypeError(
            f"{value!r}: expected one of {', '.join(SYNTAX_WORDS)} or a transfer syntax UID"
        ) from exc


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser], parent: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "export",
        parents=[parent],
        help="write instances as Part-10 files",
        description=(
            "Write the instances of a study, a series or one instance as OUT/<study UID>/<series UID>/"
            "<SOP instance UID>.dcm. --syntax original (default) gives back what was received: the same "
            "data set bytes for uncompressed and lossy input, the same pixels for lossless compressed "
            "input; explicit gives explicit VR little endian; stored gives the archive's own lossless "
            "codestreams without decoding; a transfer syntax UID asks for that syntax."
        ),
    )
    p.add_argument("--out", required=True, type=Path, help="output folder (created if missing)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--study", metavar="UID", help="every instance of this study")
    which.add_argument("--series", metavar="UID", help="every instance of this series")
    which.add_argument("--sop", metavar="UID", help="this one instance")
    p.add_argument("--syntax", type=_syntax, default="original", help="original | explicit | stored | a UID")
    p.set_defaults(run=run)


def _targets(archive: Archive, args: argparse.Namespace) -> list[str]:
    """SOP instance UIDs to export, in study / series / instance order. Raises NotFoundError."""
    if args.sop:
        archive.record(args.sop)  # NotFoundError names the missing instance
        return [args.sop]
    if args.series:
        sops = archive.instance_uids(args.series)
    else:
        sops = [sop for series in archive.series_uids(args.study) for sop in archive.instance_uids(series)]
    if not sops:
        what = f"series {args.series}" if args.series else f"study {args.study}"
        raise CliError(f"no instances of {what} in the archive")
    return sops


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as f:
        f.write(data)
    os.replace(tmp, path)


def run(args: argparse.Namespace) -> int:
    out = existing_dir(args.out)
    with open_archive(args, readonly=True) as archive:
        sops = _targets(archive, args)
        for sop in sops:
            record = archive.record(sop)
            folder = out / checked_uid(record.study_instance_uid, "study UID")
            folder = folder / checked_uid(record.series_instance_uid, "series UID")
            folder.mkdir(parents=True, exist_ok=True)
            data = archive.read_instance(sop, args.syntax)
            _write_atomically(folder / f"{checked_uid(sop, 'SOP instance UID')}.dcm", data)
    sys.stdout.write(f"exported {len(sops)} instances to {out}\n")
    return EXIT_OK
