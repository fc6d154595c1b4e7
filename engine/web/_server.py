"""Running the DICOMweb app with uvicorn on its own thread and event loop, beside the DICOM listener."""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Sequence

import uvicorn
from starlette.applications import Starlette
from starlette.routing import BaseRoute

from engine.archive import Archive
from engine.audit import AuditLog
from engine.config import AuthSettings
from engine.errors import EngineError
from engine.web._app import create_app

LOGGER = logging.getLogger(__name__)

START_TIMEOUT_SECONDS = 30.0


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or "localhost") only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class WebServer:
    """DICOMweb over HTTP/1.1 for one archive; `start()` returns once connections are accepted.

    HTTPS when `certfile` and `keyfile` are given (PEM); credentials and roles from `auth`; one audit line
    per request in `audit` (see engine.web._auth).
    """

    def __init__(
        self, archive: Archive, host: str = "127.0.0.1", port: int = 0, extra_routes: Sequence[BaseRoute] = (),
        *, certfile: str = "", keyfile: str = "", auth: AuthSettings | None = None, audit: AuditLog | None = None,
    ) -> None:
        self._app = create_app(archive, extra_routes, auth=auth, audit=audit)
        self._host = host
        self._port = port
        self._certfile = certfile
        self._keyfile = keyfile
        self._open = auth is None or not auth.enabled
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    @property
    def app(self) -> Starlette:
        """The ASGI application (e.g. to serve it with another server, or to add routes before start)."""
        return self._app

    def start(self) -> tuple[str, int]:
        """Bind, serve on a daemon thread, and return (host, port) once uvicorn has started.

        Raises OSError when the address cannot be bound, EngineError when the server does not start.
        """
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted connections inherit it: a small response must not wait for the client's delayed ACK
        # (measured: 44 ms per request on a kept-alive connection without it, 2 ms with it).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.bind((self._host, self._port))
        except OSError:
            sock.close()
            raise
        sock.listen(128)
        sock.set_inheritable(True)
        self._socket = sock
        config = uvicorn.Config(
            self._app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=5,
            ssl_certfile=self._certfile or None, ssl_keyfile=self._keyfile or None,
        )
        server = uvicorn.Server(config)
        self._server = server
        self._thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="dicomweb", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not server.started:
            if not self._thread.is_alive():
                raise EngineError(f"the DICOMweb server on {self._host}:{self._port} stopped while starting")
            if time.monotonic() > deadline:
                raise EngineError(f"the DICOMweb server did not start within {START_TIMEOUT_SECONDS:.0f} s")
            self._thread.join(0.01)  # wakes as soon as uvicorn fails; otherwise polls its started flag
        host, port = sock.getsockname()[:2]
        LOGGER.info("DICOMweb listening on %s://%s:%d", "https" if self._certfile else "http", host, port)
        if self._open and not is_loopback(str(host)):
            LOGGER.warning("DICOMweb on %s:%d is open to anyone who can reach it: no [auth] tokens or users are "
                           "configured", host, port)
        elif not self._certfile and not is_loopback(str(host)):
            LOGGER.warning("DICOMweb on %s:%d takes credentials over plain HTTP, readable on the network: "
                           "set [tls] cert_file and key_file", host, port)
        return str(host), int(port)

    def stop(self, timeout: float = 10.0) -> None:
        """Ask uvicorn to finish open requests and exit; wait up to `timeout` seconds."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                LOGGER.warning("the DICOMweb server did not stop within %.0f s", timeout)
        if self._socket is not None:
            self._socket.close()
            self._socket = None
