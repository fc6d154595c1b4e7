"""The bench's HTTP client against peers that drop kept-alive connections, gzip, chunk, and answer badly."""

from __future__ import annotations

import gzip
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from bench.compare.client import HttpClient, ProtocolError
from engine.testing.dcmtk import LOOPBACK


def _read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return b""
        data += chunk
    return data


@contextmanager
def _peer(handle: Callable[[socket.socket], None]) -> Iterator[int]:
    """A loopback listener whose thread passes each accepted connection to `handle`; yields its port."""
    server = socket.create_server((LOOPBACK, 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                handle(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        try:
            server.shutdown(socket.SHUT_RDWR)  # wakes the accept(); closing alone does not
        except OSError:
            pass
        server.close()
        thread.join(5)


@pytest.fixture
def one_request_per_connection() -> Iterator[tuple[int, list[bytes]]]:
    """An HTTP peer that answers one request per connection and then closes it without saying so
    (no Connection: close), as a server does when its keep-alive timeout passes between two requests."""
    requests: list[bytes] = []

    def answer(conn: socket.socket) -> None:
        request = _read_request(conn)
        if not request:
            return
        requests.append(request)
        body = b'{"n": %d}' % len(requests)
        gzipped = b"accept-encoding: gzip" in request.lower() and len(requests) % 2 == 0
        if gzipped:
            body = gzip.compress(body)
        head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n" % len(body)
        conn.sendall(head + (b"Content-Encoding: gzip\r\n" if gzipped else b"") + b"\r\n" + body)

    with _peer(answer) as port:
        yield port, requests


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


@pytest.fixture
def scripted() -> Iterator[tuple[int, list[list[bytes]]]]:
    """A peer that answers each connection's requests with the next canned answers, byte for byte, split
    into small pieces (so every answer arrives over several recv calls), then closes the connection.
    Tests put one list of answers per connection they expect into the returned list."""
    script: list[list[bytes]] = []

    def play(conn: socket.socket) -> None:
        for answer in script.pop(0) if script else []:
            if not _read_request(conn):
                return
            for start in range(0, len(answer), 7):
                conn.sendall(answer[start : start + 7])

    with _peer(play) as port:
        yield port, script


def test_chunked_sized_interim_and_empty_bodies_on_one_connection(scripted: tuple[int, list[list[bytes]]]) -> None:
    port, script = scripted
    zipped = gzip.compress(b'{"z": 1}')
    script.append([
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\n{\"a\"\r\n4\r\n: 1}\r\n0\r\nX-T: 1\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Encoding: gzip\r\n\r\n"
        % len(zipped) + zipped,
        b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\nSet-Cookie: a\r\nset-cookie: b\r\n\r\n",
    ])
    url = f"http://{LOOPBACK}:{port}/x"
    with HttpClient(timeout=10) as client:
        replies = [client.get(url, "application/json") for _ in range(4)]
    assert [(r.status, r.body) for r in replies] == [(200, b'{"a": 1}'), (200, b'{"z": 1}'), (304, b""), (204, b"")]


def test_a_body_that_ends_with_the_connection_then_a_new_connection(scripted: tuple[int, list[list[bytes]]]) -> None:
    port, script = scripted
    script += [[b"HTTP/1.0 200 OK\r\n\r\nall of it"],
               [b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"],
               [b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nyes"]]
    url = f"http://{LOOPBACK}:{port}/x"
    with HttpClient(timeout=10) as client:
        assert [client.get(url, "*/*").body for _ in range(3)] == [b"all of it", b"ok", b"yes"]


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP/1.x status line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "5 bytes before the body's end"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "not hexadecimal"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "without a colon"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n", "not a byte count"),
        (b"HTTP/1.1 200 OK\r\nContent-Le", "inside the HTTP headers"),
    ],
)
def test_an_answer_that_is_not_http_is_an_error_and_not_retried(
    scripted: tuple[int, list[list[bytes]]], answer: bytes, message: str
) -> None:
    port, script = scripted
    script += [[answer], [b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"]]
    with HttpClient(timeout=10) as client:
        with pytest.raises(ProtocolError, match=message):
            client.get(f"http://{LOOPBACK}:{port}/x", "*/*")
        assert client.get(f"http://{LOOPBACK}:{port}/x", "*/*").status == 200  # a new connection after it
    assert script == []
