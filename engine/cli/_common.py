"""What every subcommand shares: opening the archive from the global options, exit codes, formatting."""

from __future__ import annotations

import argparse
import logging
import re
import sys
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

from engine.archive import Archive
from engine.config import Settings, load_settings
from engine.errors import EngineError

EXIT_OK = 0
EXIT_FAILURE = 1  # the command ran and something failed (refused files, problems found, errors)
EXIT_USAGE = 2  # the command line or the configuration is wrong

_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


class CliError(EngineError):
    """A failure the CLI reports as one line (no archive there, unusable arguments)."""


def settings_from(args: argparse.Namespace, dicom: Mapping[str, object] | None = None) -> Settings:
    """Settings for the global --archive / --config options plus [dicom] overrides. Raises ConfigError."""
    return load_settings(archive=args.archive, config_file=args.config, dicom=dicom or {})


def open_archive(args: argparse.Namespace, *, readonly: bool, dicom: Mapping[str, object] | None = None) -> Archive:
    """Open the archive named by --archive. Readers refuse a folder that holds no archive yet.

    Raises ConfigError, CliError, ArchiveInUseError (another writer), other EngineErrors from the archive.
    """
    settings = settings_from(args, dicom)
    if readonly and not settings.index_path.is_dir():
        raise CliError(f"no archive at {settings.archive} (use --archive DIR, or import/serve to create one)")
    return Archive(settings, readonly=readonly)


def checked_uid(uid: str, what: str) -> str:
    """`uid` if it is a well-formed UID (digits and dots, <= 64 characters): safe as a file name."""
    if len(uid) > 64 or not _UID.fullmatch(uid):
        raise CliError(f"{what} {uid!r} is not a valid UID")
    return uid


def human_bytes(n: int) -> str:
    """1234567 -> '1.2 MB' (decimal units, as disk vendors and transfer rates use)."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


Row = dict[str, str | int | None]  # one line of `ls`: JSON as it is, a table row as text


def _cell(value: str | int | None) -> str:
    return "" if value is None else str(value)


def _columns(text: str) -> int:
    """Terminal columns `text` takes: East Asian wide and full-width characters (山田, ヤマダ) take two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 0 if unicodedata.combining(c) else 1 for c in text)


def _pad(text: str, width: int) -> str:
    return text + " " * (width - _columns(text))


def print_table(rows: list[Row], columns: list[tuple[str, str]], out: TextIO | None = None) -> None:
    """Rows as aligned columns under a header on `out` (stdout); `columns` are (key, header) pairs."""
    widths = [max([_columns(header), *(_columns(_cell(row.get(key))) for row in rows)]) for key, header in columns]
    lines = ["  ".join(_pad(h, w) for (_, h), w in zip(columns, widths, strict=True)).rstrip()]
    for row in rows:
        cells = (_pad(_cell(row.get(key)), w) for (key, _), w in zip(columns, widths, strict=True))
        lines.append("  ".join(cells).rstrip())
    (out or sys.stdout).write("\n".join(lines) + "\n")


def configure_logging(level: int) -> None:
    """Log to stderr: `level` for the engine, warnings only from pynetdicom (it logs every message)."""
    logging.basicConfig(
        stream=sys.stderr, level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("pynetdicom").setLevel(max(level, logging.WARNING))


def existing_dir(path: Path) -> Path:
    """Create `path` (and parents) as a folder. Raises CliError when it exists as something else."""
    if path.exists() and not path.is_dir():
        raise CliError(f"{path} exists and is not a folder")
    path.mkdir(parents=True, exist_ok=True)
    return path
