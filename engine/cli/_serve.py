"""`pacs-engine serve`: open the archive, run the DICOM listener until SIGTERM/SIGINT, shut down cleanly."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from types import FrameType

from typing import TYPE_CHECKING

from engine.archive import Archive
from engine.audit import AuditLog
from engine.cli._common import EXIT_OK, open_archive
from engine.cli._malloc import keep_freed_buffers
from engine.security import server_ssl_context

if TYPE_CHECKING:  # imported when serving: starlette and uvicorn cost every other command 0.14 s
    from engine.web import WebServer

LOGGER = logging.getLogger(__name__)

# How long open associations may finish their work after a stop signal before they are aborted.
SHUTDOWN_GRACE_SECONDS = 5.0


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser], parent: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "serve",
        parents=[parent],
        help="run the DICOM listener (C-ECHO, C-STORE) on the archive",
        description=(
            "Open the archive for writing and accept C-ECHO and C-STORE of every storage SOP class until "
            "SIGTERM or SIGINT. Prints one line 'listening: dicom=HOST:PORT ae=AE_TITLE archive=PATH' on "
            "stdout once ready; logs to stderr. A C-STORE succeeds only once the instance is durable."
        ),
    )
    p.add_argument("--ae-title", help="AE title of the listener (default: [dicom] ae_title, PACS_ENGINE)")
    p.add_argument("--dicom-port", type=int, help="TCP port, 0 for any free port (default: [dicom] port, 11112)")
    p.add_argument("--host", help="address to listen on (default: [dicom] host, 0.0.0.0)")
    p.add_argument(
        "--http-port",
        type=int,
        help="also serve DICOMweb on this TCP port, 0 for any free port (default: [http] port; 0 there: off)."
        " Prints a second line 'listening: http=HOST:PORT' once ready",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    keep_freed_buffers()  # before the threads that decode and send exist: see _malloc
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        LOGGER.info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    # Installed before anything is opened, so a signal during start-up also ends in a clean close.
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        overrides = {"ae_title": args.ae_title, "port": args.dicom_port, "host": args.host}
        with open_archive(args, readonly=False, dicom=overrides) as archive, \
                AuditLog.from_settings(archive.settings) as audit:
            tls = archive.settings.tls
            context = server_ssl_context(tls.cert_file, tls.key_file, tls.client_ca_file) if tls.dicom_enabled else None
            from engine.net import DicomServer  # pynetdicom loads only for the command that listens

            server = DicomServer(archive, archive.settings.dicom, ssl_context=context, audit=audit)
            host, port = server.start()
            try:
                sys.stdout.write(
                    f"listening: dicom={host}:{port} ae={archive.settings.dicom.ae_title} "
                    f"archive={archive.settings.archive.resolve()}\n"
                )
                sys.stdout.flush()
                web = _start_web(args, archive, audit)
                try:
                    stop.wait()
                finally:
                    if web is not None:
                        web.stop(SHUTDOWN_GRACE_SECONDS)
            finally:
                server.stop(SHUTDOWN_GRACE_SECONDS)
            LOGGER.info("closing the archive (flushing pending commits)")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    LOGGER.info("stopped")
    return EXIT_OK


def _start_web(args: argparse.Namespace, archive: Archive, audit: AuditLog) -> WebServer | None:
    """Start DICOMweb when --http-port or [http] port asks for it; print its readiness line."""
    settings = archive.settings
    http = settings.http
    if args.http_port is None and not http.port:
        return None
    from engine.web import WebServer

    tls = settings.tls
    if tls.http_enabled:
        server_ssl_context(tls.cert_file, tls.key_file)  # a bad certificate is a ConfigError here, not in uvicorn
    web = WebServer(archive, args.host or http.host, http.port if args.http_port is None else args.http_port,
                    certfile=tls.cert_file if tls.http_enabled else "", keyfile=tls.key_file if tls.http_enabled else "",
                    auth=settings.auth, audit=audit)
    host, port = web.start()
    sys.stdout.write(f"listening: http={host}:{port}\n")
    sys.stdout.flush()
    return web
