"""Fixtures of the listener tests: a real archive behind a DicomServer on an ephemeral loopback port."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.archive import Archive
from engine.config import load_settings
from engine.net import DicomServer
from engine.testing.dcmtk import LOOPBACK

AE_TITLE = "NET_TEST"


@dataclass(frozen=True, slots=True)
class Listener:
    """A started DicomServer and the archive behind it."""

    archive: Archive
    server: DicomServer
    host: str
    port: int
    ae_title: str


@pytest.fixture
def start_listener() -> Iterator[Callable[..., Listener]]:
    """start_listener(archive_dir, **dicom_settings) -> a started Listener; all stopped and closed at the end."""
    started: list[Listener] = []

    def start(archive_dir: Path, **dicom: object) -> Listener:
        settings = load_settings(
            archive=archive_dir, dicom={"host": LOOPBACK, "port": 0, "ae_title": AE_TITLE, **dicom}
        )
        archive = Archive(settings)
        server = DicomServer(archive, settings.dicom)
        try:
            host, port = server.start()
        except BaseException:
            archive.close()
            raise
        started.append(Listener(archive, server, host, port, AE_TITLE))
        return started[-1]

    yield start
    for listener in reversed(started):
        listener.server.stop()
        listener.archive.close()


@pytest.fixture
def listener(start_listener: Callable[..., Listener], tmp_archive: Path) -> Listener:
    """A listener on a fresh archive."""
    return start_listener(tmp_archive)
