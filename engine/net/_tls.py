"""The DIMSE listener's TLS: handshakes in each connection's own thread, with a time limit.

pynetdicom's server wraps each accepted socket with the TLS context in its accept loop, handshake included
and without a timeout: one client that connects and stays silent would stop every later association.
Here the accept loop only wraps; the handshake runs in the connection's thread, bounded by
HANDSHAKE_TIMEOUT_SECONDS, and a failure is reported (log and audit) instead of passing unnoticed.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import ssl
import threading
from collections.abc import Callable
from typing import Any, cast

from pynetdicom import AE
from pynetdicom.transport import ThreadedAssociationServer

LOGGER = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT_SECONDS = 10.0

HandshakeFailure = Callable[[str, str], None]  # (peer "ip:port", reason)


class TlsAssociationServer(ThreadedAssociationServer):
    """A ThreadedAssociationServer whose TLS handshakes happen off the accept loop."""

    on_handshake_failure: HandshakeFailure | None = None

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        listener = cast(socket.socket, self.socket)
        client, address = listener.accept()
        context = cast(ssl.SSLContext, self.ssl_context)
        try:
            wrapped = context.wrap_socket(client, server_side=True, do_handshake_on_connect=False)
        except (OSError, ValueError):
            client.close()
            raise
        return wrapped, address

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        peer = f"{client_address[0]}:{client_address[1]}"
        try:
            previous = request.gettimeout()
            request.settimeout(HANDSHAKE_TIMEOUT_SECONDS)
            request.do_handshake()
            request.settimeout(previous)
        except (OSError, ValueError) as exc:  # ssl.SSLError and socket.timeout are OSErrors
            reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
            LOGGER.warning("TLS handshake with %s failed: %s", peer, reason)
            if self.on_handshake_failure is not None:
                self.on_handshake_failure(peer, str(reason))
            self.shutdown_request(request)
            return
        super().process_request_thread(request, client_address)

    def shutdown(self) -> None:
        # pynetdicom's own shutdown also unlists the server from its AE, where start_tls_server never put it.
        socketserver.BaseServer.shutdown(self)
        self.server_close()


def start_tls_server(ae: AE, address: tuple[str, int], context: ssl.SSLContext, handlers: list[Any],
                     contexts: list[Any], on_failure: HandshakeFailure | None) -> TlsAssociationServer:
    """Listen with TLS on `address` in a background thread, as AE.start_server(block=False) does without it."""
    server = cast(TlsAssociationServer, ae.make_server(
        address, contexts=contexts, ssl_context=context, evt_handlers=handlers, server_class=TlsAssociationServer
    ))
    server.on_handshake_failure = on_failure
    thread = threading.Thread(target=server.serve_forever, name=f"TlsAcceptor@{address[1]}", daemon=True)
    thread.start()
    return server
