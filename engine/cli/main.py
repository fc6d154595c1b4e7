"""The `pacs-engine` command: global options, subcommands, and how errors reach the user."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from engine import __version__
from engine.cli import _bench, _delete, _export, _import, _inspect, _ls, _password, _scu, _serve
from engine.cli._common import EXIT_FAILURE, EXIT_USAGE, configure_logging
from engine.errors import ConfigError, EngineError

LOGGER = logging.getLogger(__name__)

DEFAULT_ARCHIVE = Path("archive")


def _global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    # The same options on the main parser and on every subcommand; a subcommand's copy must not
    # overwrite a value given before the subcommand name, hence SUPPRESS there.
    archive_default = argparse.SUPPRESS if suppress else DEFAULT_ARCHIVE
    config_default = argparse.SUPPRESS if suppress else None
    parser.add_argument(
        "--archive", type=Path, default=archive_default, metavar="DIR", help="archive folder (default: ./archive)"
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=config_default,
        metavar="FILE",
        help="engine.toml settings file (default: ARCHIVE/engine.toml when present)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pacs-engine",
        description="A lossless, fast medical image archive: DICOM listener, import, export, integrity.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _global_options(parser, suppress=False)
    parent = argparse.ArgumentParser(add_help=False)
    _global_options(parent, suppress=True)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _serve.add_parser(subparsers, parent)
    _import.add_parser(subparsers, parent)
    _export.add_parser(subparsers, parent)
    _ls.add_parser(subparsers, parent)
    _inspect.add_parsers(subparsers, parent)
    _scu.add_parsers(subparsers, parent)
    _password.add_parser(subparsers, parent)
    _delete.add_parser(subparsers, parent)
    _bench.add_parser(subparsers, parent)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one pacs-engine command; return its exit status (0 ok, 1 failure, 2 usage or configuration)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(logging.INFO if args.command == "serve" else logging.WARNING)
    try:
        status: int = args.run(args)
    except ConfigError as exc:
        sys.stderr.write(f"pacs-engine {args.command}: configuration error: {exc}\n")
        return EXIT_USAGE
    except EngineError as exc:
        sys.stderr.write(f"pacs-engine {args.command}: error: {exc}\n")
        return EXIT_FAILURE
    except OSError as exc:
        sys.stderr.write(f"pacs-engine {args.command}: error: {exc}\n")
        return EXIT_FAILURE
    except KeyboardInterrupt:
        sys.stderr.write(f"pacs-engine {args.command}: interrupted\n")
        return 130
    return status


if __name__ == "__main__":
    raise SystemExit(main())
