"""The HTTP client of the DICOMweb read phases: HTTP/1.1 GETs on kept-alive sockets, nothing more.

The phases time requests from the client's side, so the client's own work is part of every figure, and
being the same for every target it narrows the gap between a fast server and a slow one. httpx spent
about 1 ms of CPU a request on this machine (request and response models, header handling), more than
pacs-engine needs to answer a QIDO search; http.client still spent 0.19-0.30 ms (its email-parser
header handling), this client 0.05-0.08 ms (client CPU time over 1,500 QIDO searches of `serve`, each
client in turn, three rounds). Every target is read through this same client.

It speaks just what a GET needs: a Content-Length or chunked body, or one that ends with the connection;
gzip content coding; keep-alive, and one retry on a new connection when a kept-alive one turns out to
have been closed by the server before it answered.
"""

from __future__ import annotations

import gzip
import json
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

_READ = 262_144  # bytes asked of recv() at a time
_MAX_HEAD = 65_536  # a status line and headers longer than this are not an HTTP answer
_NO_BODY = frozenset({204, 304})


class ProtocolError(OSError):
    """The peer's answer is not HTTP/1.x this client can read."""


class _Closed(OSError):
    """The connection ended before the answer began: on a kept-alive connection, the server closed it."""


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes  # decompressed when the server sent gzip

    def json(self) -> Any:
        return json.loads(self.body)


class _Connection:
    """One socket and the bytes received past the last answer."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.pending = bytearray()

    def close(self) -> None:
        self.sock.close()

    def fill(self) -> bool:
        """Receive more bytes into `pending`; False when the peer has closed the connection."""
        chunk = self.sock.recv(_READ)
        self.pending += chunk
        return bool(chunk)

    def take_line(self) -> bytes:
        while (end := self.pending.find(b"\r\n")) < 0:
            if len(self.pending) > _MAX_HEAD:
                raise ProtocolError("an HTTP line longer than 64 KiB")
            if not self.fill():
                raise ProtocolError("the connection ended inside the HTTP headers")
        line = bytes(self.pending[:end])
        del self.pending[: end + 2]
        return line

    def take(self, count: int) -> bytes:
        while len(self.pending) < count:
            if not self.fill():
                raise ProtocolError(f"the connection ended {count - len(self.pending)} bytes before the body's end")
        data = bytes(self.pending[:count])
        del self.pending[:count]
        return data


class HttpClient:
    """GET requests over one kept-alive connection per host; asks for gzip as a browser does.

    Not shared between threads: each reader thread has its own.
    """

    def __init__(self, timeout: float = 120.0) -> None:
        self._timeout = timeout
        self._connections: dict[tuple[str, int], _Connection] = {}

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for connection in self._connections.values():
            connection.close()
        self._connections.clear()

    def get(self, url: str, accept: str, params: dict[str, str] | None = None) -> Reply:
        """GET `url` (absolute, http) and read the whole body. Raises OSError (ProtocolError for an answer
        that is not HTTP)."""
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"{url!r}: only http:// URLs are read by this client")
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if params:
            target += ("&" if parts.query else "?") + urlencode(params)
        key = (parts.hostname, parts.port or 80)
        request = (f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nAccept: {accept}\r\n"
                   "Accept-Encoding: gzip\r\n\r\n").encode("latin-1")
        for attempt in (1, 2):
            reused = key in self._connections
            connection = self._connections.get(key) or _Connection(*key, self._timeout)
            self._connections[key] = connection
            try:
                connection.sock.sendall(request)
                status, body, keep = _read_reply(connection)
            except (_Closed, ConnectionResetError, BrokenPipeError):
                self._drop(key)
                if reused and attempt == 1:
                    continue  # the server closed the idle connection: once more on a new one
                raise
            except BaseException:
                self._drop(key)
                raise
            if not keep:
                self._drop(key)
            return Reply(status, body)
        raise AssertionError("unreachable: the second attempt returns or raises")

    def _drop(self, key: tuple[str, int]) -> None:
        connection = self._connections.pop(key, None)
        if connection is not None:
            connection.close()


def _read_reply(connection: _Connection) -> tuple[int, bytes, bool]:
    """(status, decoded body, whether the connection stays open) of the next answer on `connection`."""
    if not connection.pending and not connection.fill():
        raise _Closed("the server closed the connection before it answered")
    version, status, headers = _read_head(connection)
    while 100 <= status < 200:  # an interim answer: the final one follows
        version, status, headers = _read_head(connection)
    keep = version != b"HTTP/1.0" and b"close" not in headers.get(b"connection", b"").lower()
    if status in _NO_BODY:
        body = b""
    elif b"chunked" in headers.get(b"transfer-encoding", b"").lower():
        body = _read_chunked(connection)
    elif b"content-length" in headers:
        length = headers[b"content-length"]
        if not length.isdigit():  # also a repeated one, joined with a comma
            raise ProtocolError(f"a Content-Length that is not a byte count: {length[:40]!r}")
        body = connection.take(int(length))
    else:  # the body ends with the connection
        while connection.fill():
            pass
        body, keep = bytes(connection.pending), False
        connection.pending.clear()
    if headers.get(b"content-encoding", b"").lower() == b"gzip":
        body = gzip.decompress(body)
    return status, body, keep


def _read_head(connection: _Connection) -> tuple[bytes, int, dict[bytes, bytes]]:
    """HTTP version, status code and headers (lower-case names, repeated ones joined) of one answer."""
    status_line = connection.take_line()
    version, _, rest = status_line.partition(b" ")
    code = rest[:3]
    if not version.startswith(b"HTTP/1.") or not code.isdigit():
        raise ProtocolError(f"not an HTTP/1.x status line: {status_line[:100]!r}")
    headers: dict[bytes, bytes] = {}
    while line := connection.take_line():
        name, colon, value = line.partition(b":")
        if not colon:
            raise ProtocolError(f"a header line without a colon: {line[:100]!r}")
        name = name.strip().lower()
        headers[name] = headers[name] + b", " + value.strip() if name in headers else value.strip()
    return version, int(code), headers


def _read_chunked(connection: _Connection) -> bytes:
    parts: list[bytes] = []
    while True:
        size_field = connection.take_line().split(b";", 1)[0].strip()
        try:
            size = int(size_field, 16)
        except ValueError:
            raise ProtocolError(f"a chunk size that is not hexadecimal: {size_field[:40]!r}") from None
        if size == 0:
            while connection.take_line():  # trailer fields, up to the empty line
                pass
            return b"".join(parts)
        parts.append(connection.take(size))
        if connection.take(2) != b"\r\n":
            raise ProtocolError("a chunk not followed by CRLF")
