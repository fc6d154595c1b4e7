"""The bench's HTTP client against a peer that drops kept-alive connections and one that gzips."""

from __future__ import annotations

import gzip
import socket
import threading
from collections.abc import Iterator

import pytest

from bench.compare.client import HttpClient
from engine.testing.dcmtk import LOOPBACK


def _read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return b""
        data += chunk
    return data


@pytest.fixture
def one_request_per_connection() -> Iterator[tuple[int, list[bytes]]]:
    """An HTTP peer that answers one request per connection and then closes it without saying so
    (no Connection: close), as a server does when its keep-alive timeout passes between two requests."""
    server = socket.create_server((LOOPBACK, 0))
    requests: list[bytes] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                request = _read_request(conn)
                if not request:
                    continue
                requests.append(request)
                body = b'{"n": %d}' % len(requests)
                gzipped = b"accept-encoding: gzip" in request.lower() and len(requests) % 2 == 0
                if gzipped:
                    body = gzip.compress(body)
                head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n" % len(body)
                conn.sendall(head + (b"Content-Encoding: gzip\r\n" if gzipped else b"") + b"\r\n" + body)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], requests
    finally:
        server.close()
        thread.join(5)


def test_a_dropped_kept_alive_connection_is_reopened_once(one_request_per_connection: tuple[int, list[bytes]]) -> None:
    port, requests = one_request_per_connection
    with HttpClient(timeout=10) as client:
        replies = [client.get(f"http://{LOOPBACK}:{port}/studies", "application/dicom+json",
                              params={"PatientID": "A B"}) for _ in range(3)]
    assert [r.status for r in replies] == [200, 200, 200]
    assert [r.json() for r in replies] == [{"n": 1}, {"n": 2}, {"n": 3}]  # the second came gzipped
    assert len(requests) == 3
    assert all(r.startswith(b"GET /studies?PatientID=A+B HTTP/1.1\r\n") for r in requests)
    assert all(b"accept: application/dicom+json" in r.lower() for r in requests)


def test_a_peer_that_is_gone_is_an_error_not_a_retry_loop() -> None:
    server = socket.create_server((LOOPBACK, 0))
    port = server.getsockname()[1]
    server.close()
    with HttpClient(timeout=10) as client, pytest.raises(ConnectionRefusedError):
        client.get(f"http://{LOOPBACK}:{port}/studies", "application/dicom+json")


def test_only_http_urls() -> None:
    with HttpClient() as client, pytest.raises(ValueError, match="only http://"):
        client.get("https://example.org/studies", "application/dicom+json")
