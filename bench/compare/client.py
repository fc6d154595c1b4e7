"""The HTTP client of the DICOMweb read phases: http.client on kept-alive connections, nothing more.

The phases time requests from the client's side, so the client's own work is part of every figure. httpx
spent about 1 ms of CPU a request on this machine (its request and response models, header handling),
more than pacs-engine needs to answer a QIDO search: latency figures measured the client as much as the
server. http.client adds about 0.1 ms. Every target is read through the same client.
"""

from __future__ import annotations

import gzip
import http.client
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

# A kept-alive connection the server has closed in the meantime fails on its next request in one of
# these ways; the request is sent again once on a new connection, as browsers and httpx do.
_STALE = (http.client.RemoteDisconnected, http.client.BadStatusLine, ConnectionResetError, BrokenPipeError)


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes  # decompressed when the server sent gzip

    def json(self) -> Any:
        return json.loads(self.body)


class HttpClient:
    """GET requests over one kept-alive connection per host; asks for gzip as a browser does.

    Not shared between threads: each reader thread has its own.
    """

    def __init__(self, timeout: float = 120.0) -> None:
        self._timeout = timeout
        self._connections: dict[tuple[str, int], http.client.HTTPConnection] = {}

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for connection in self._connections.values():
            connection.close()
        self._connections.clear()

    def get(self, url: str, accept: str, params: dict[str, str] | None = None) -> Reply:
        """GET `url` (absolute, http) and read the whole body. Raises OSError / http.client errors."""
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"{url!r}: only http:// URLs are read by this client")
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        if params:
            target += ("&" if parts.query else "?") + urlencode(params)
        key = (parts.hostname, parts.port or 80)
        headers = {"Accept": accept, "Accept-Encoding": "gzip"}
        for attempt in (1, 2):
            reused = key in self._connections
            connection = self._connections.get(key) or http.client.HTTPConnection(*key, timeout=self._timeout)
            self._connections[key] = connection
            try:
                connection.request("GET", target, headers=headers)
                response = connection.getresponse()
                body = response.read()
            except _STALE:
                connection.close()
                del self._connections[key]
                if reused and attempt == 1:
                    continue
                raise
            except BaseException:
                connection.close()
                del self._connections[key]
                raise
            if response.will_close:
                connection.close()
                del self._connections[key]
            if response.getheader("Content-Encoding", "").lower() == "gzip":
                body = gzip.decompress(body)
            return Reply(response.status, body)
        raise AssertionError("unreachable: the second attempt returns or raises")
