"""multipart/related (RFC 2387) as DICOMweb uses it: writing parts as a stream, reading parts as they arrive."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from engine.web._errors import HttpError

_CRLF = b"\r\n"
MAX_HEADER_BYTES = 16 << 10  # a preamble or the headers of one part; more is not a DICOMweb request


def new_boundary() -> str:
    return uuid.uuid4().hex


def content_type(boundary: str, part_type: str, transfer_syntax: str | None = None) -> str:
    """The Content-Type of a multipart/related body whose parts are `part_type`."""
    syntax = f"; transfer-syntax={transfer_syntax}" if transfer_syntax else ""
    return f'multipart/related; type="{part_type}"{syntax}; boundary={boundary}'


def part_head(boundary: str, headers: Mapping[str, str], first: bool) -> bytes:
    """The delimiter and headers that open a part (the CRLF that ends the previous part included)."""
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    opening = b"" if first else _CRLF
    return opening + f"--{boundary}\r\n{lines}\r\n".encode("latin-1")


def closing(boundary: str) -> bytes:
    return f"\r\n--{boundary}--\r\n".encode("latin-1")


@dataclass(frozen=True, slots=True)
class Part:
    """One received part: its headers (names lower case) and its body."""

    headers: dict[str, str]
    body: bytes


def _headers(raw: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in raw.split(_CRLF):
        if not line:
            continue
        name, sep, value = line.partition(b":")
        if not sep:
            raise HttpError(400, f"malformed multipart: part header line {line[:60]!r} has no ':'")
        headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    return headers


async def iter_parts(chunks: AsyncIterator[bytes], boundary: str) -> AsyncIterator[Part]:
    """Parts of a multipart body as soon as each is complete; the stream is read once, never whole.

    Raises HttpError 400 when there is no opening delimiter, a part has no header end, or the body
    ends before the closing delimiter.
    """
    if not boundary or len(boundary) > 70:
        raise HttpError(400, "malformed multipart: the boundary parameter must be 1 to 70 characters")
    dash = b"--" + boundary.encode("latin-1")
    delimiter = _CRLF + dash
    buffer = bytearray()
    ended = False
    stream = chunks.__aiter__()

    async def more() -> bool:
        nonlocal ended
        if ended:
            return False
        try:
            buffer.extend(await stream.__anext__())
        except StopAsyncIteration:
            ended = True
        return True

    # Preamble: anything before the first delimiter is ignored (RFC 2046 5.1.1).
    while (start := buffer.find(dash)) < 0:
        if len(buffer) > MAX_HEADER_BYTES:
            raise HttpError(400, "malformed multipart: no part delimiter in the first 16 KiB of the body")
        if not await more():
            raise HttpError(400, "malformed multipart: the body has no part delimiter for its boundary")
    del buffer[: start + len(dash)]
    while True:
        while len(buffer) < 2:
            if not await more():
                raise HttpError(400, "malformed multipart: the body ends inside a delimiter")
        if buffer[:2] == b"--":
            return  # closing delimiter; an epilogue is ignored
        search = 0
        while (head_end := buffer.find(_CRLF + _CRLF, search)) < 0:
            if len(buffer) > MAX_HEADER_BYTES:
                raise HttpError(400, "malformed multipart: part headers do not end")
            search = max(0, len(buffer) - 3)
            if not await more():
                raise HttpError(400, "malformed multipart: the body ends inside part headers")
        headers = _headers(bytes(buffer[:head_end]))
        del buffer[: head_end + 4]
        search = 0
        while (end := buffer.find(delimiter, search)) < 0:
            search = max(0, len(buffer) - len(delimiter) + 1)
            if not await more():
                raise HttpError(400, "malformed multipart: the body ends before the closing delimiter")
        body = bytes(buffer[:end])
        del buffer[: end + len(delimiter)]
        yield Part(headers, body)
