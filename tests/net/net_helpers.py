"""A real archive behind a DicomServer on an ephemeral loopback port, for the listener tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from engine.archive import Archive
from engine.config import load_settings
from engine.net import DicomServer
from engine.testing.dcmtk import LOOPBACK


@dataclass(frozen=True, slots=True)
class Listener:
    """A started DicomServer and the archive behind it."""

    archive: Archive
    server: DicomServer
    host: str
    port: int
    ae_title: str


@contextmanager
def serving(archive_dir: Path, ae_title: str, **dicom: object) -> Iterator[Listener]:
    """The archive at `archive_dir` served on loopback as `ae_title` (more [dicom] settings in `dicom`);
    the server is stopped, then the archive closed, when the block ends."""
    settings = load_settings(archive=archive_dir, dicom={"host": LOOPBACK, "port": 0, "ae_title": ae_title, **dicom})
    with Archive(settings) as archive:
        server = DicomServer(archive, settings.dicom)
        host, port = server.start()
        try:
            yield Listener(archive, server, host, port, ae_title)
        finally:
            server.stop()
