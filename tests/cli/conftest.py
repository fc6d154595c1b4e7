"""Fixtures of the CLI tests: run `pacs-engine` in this process with its output captured."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.cli import main


@dataclass(frozen=True, slots=True)
class Run:
    """What one command did: exit status, stdout, stderr."""

    code: int
    out: str
    err: str

    def json(self) -> object:
        return json.loads(self.out)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., Run]:
    """cli(archive, *args) runs `pacs-engine --archive ARCHIVE ARGS...` (the real main, a real archive)."""

    def run(archive: Path, *args: str) -> Run:
        capsys.readouterr()
        code = main(["--archive", str(archive), *args])
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run
