"""The `pacs-engine` command line: serve, import, export, ls, stats, verify."""

from __future__ import annotations

from engine.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
