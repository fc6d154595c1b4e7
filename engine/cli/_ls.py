"""`pacs-engine ls`: list studies, series or instances with their key attributes, as a table or JSON."""

from __future__ import annotations

import argparse
import json
import sys

from engine.archive import Archive
from engine.cli._common import EXIT_OK, CliError, Row, open_archive, print_table

STUDY_COLUMNS = [
    ("study_uid", "STUDY UID"),
    ("patient_id", "PATIENT ID"),
    ("patient_name", "PATIENT NAME"),
    ("study_date", "DATE"),
    ("modalities", "MODALITIES"),
    ("series", "SERIES"),
    ("instances", "INSTANCES"),
]
SERIES_COLUMNS = [
    ("series_uid", "SERIES UID"),
    ("study_uid", "STUDY UID"),
    ("modality", "MODALITY"),
    ("series_number", "NUMBER"),
    ("description", "DESCRIPTION"),
    ("instances", "INSTANCES"),
]
INSTANCE_COLUMNS = [
    ("sop_uid", "SOP INSTANCE UID"),
    ("instance_number", "NUMBER"),
    ("modality", "MODALITY"),
    ("transfer_syntax", "RECEIVED AS"),
    ("received_bytes", "RECEIVED"),
    ("stored_bytes", "STORED"),
]


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser], parent: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "ls",
        parents=[parent],
        help="list studies, series or instances",
        description="List the archive's studies (default), series or instances; --study / --series narrow it.",
    )
    p.add_argument("level", nargs="?", choices=("studies", "series", "instances"), default="studies")
    p.add_argument("--study", metavar="UID", help="only this study")
    p.add_argument("--series", metavar="UID", help="only this series (series and instances levels)")
    p.add_argument("--json", action="store_true", help="JSON array instead of a table")
    p.set_defaults(run=run)


def _studies(archive: Archive, args: argparse.Namespace) -> list[str]:
    if args.study is None:
        return archive.study_uids()
    if args.study not in archive.study_uids():
        raise CliError(f"no study {args.study} in the archive")
    return [args.study]


def _series(archive: Archive, args: argparse.Namespace) -> list[str]:
    if args.series is not None:
        if not archive.instance_uids(args.series):
            raise CliError(f"no series {args.series} in the archive")
        return [args.series]
    return [series for study in _studies(archive, args) for series in archive.series_uids(study)]


def study_rows(archive: Archive, args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    for study in _studies(archive, args):
        series = archive.series_uids(study)
        counts = [archive.instance_uids(s) for s in series]
        first = archive.record(next(sops[0] for sops in counts if sops)).query if any(counts) else {}
        modalities = sorted({archive.record(sops[0]).query.get("Modality", "") for sops in counts if sops} - {""})
        rows.append(
            {
                "study_uid": study,
                "patient_id": first.get("PatientID", ""),
                "patient_name": first.get("PatientName", ""),
                "study_date": first.get("StudyDate", ""),
                "modalities": "\\".join(modalities),
                "series": len(series),
                "instances": sum(len(sops) for sops in counts),
            }
        )
    return rows


def series_rows(archive: Archive, args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    for series in _series(archive, args):
        sops = archive.instance_uids(series)
        record = archive.record(sops[0])
        rows.append(
            {
                "series_uid": series,
                "study_uid": record.study_instance_uid,
                "modality": record.query.get("Modality", ""),
                "series_number": record.query.get("SeriesNumber", ""),
                "description": record.query.get("SeriesDescription", ""),
                "instances": len(sops),
            }
        )
    return rows


def instance_rows(archive: Archive, args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    for series in _series(archive, args):
        for sop in archive.instance_uids(series):
            record = archive.record(sop)
            rows.append(
                {
                    "sop_uid": sop,
                    "instance_number": record.instance_number,
                    "modality": record.query.get("Modality", ""),
                    "transfer_syntax": record.transfer_syntax_uid,
                    "received_bytes": record.received_bytes,
                    "stored_bytes": record.stored_bytes,
                }
            )
    return rows


LEVELS = {
    "studies": (study_rows, STUDY_COLUMNS),
    "series": (series_rows, SERIES_COLUMNS),
    "instances": (instance_rows, INSTANCE_COLUMNS),
}


def run(args: argparse.Namespace) -> int:
    if args.level == "studies" and args.series is not None:
        raise CliError("--series narrows the series and instances levels, not studies")
    rows_of, columns = LEVELS[args.level]
    with open_archive(args, readonly=True) as archive:
        rows = rows_of(archive, args)
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print_table(rows, columns)
    return EXIT_OK
