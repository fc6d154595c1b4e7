"""Helpers of the DICOMweb tests: the served archive, and a plain multipart/related splitter as an oracle."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from dicomweb_client.api import DICOMwebClient

from engine.archive import Archive
from engine.testing.series import SeriesFiles


@dataclass(frozen=True, slots=True)
class Served:
    """A running DICOMweb server, its archive and what was stored in it."""

    archive: Archive
    base: str
    ct: SeriesFiles
    corpus: dict[str, Path]  # name -> file
    mr_files: tuple[Path, ...]  # a series not stored at start: for STOW tests

    def client(self) -> DICOMwebClient:
        return DICOMwebClient(self.base)

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=60)


def split_multipart(response: httpx.Response) -> list[tuple[dict[str, str], bytes]]:
    """(headers, body) of each part of a multipart/related response, by plain splitting on the boundary."""
    content_type = response.headers["content-type"]
    assert content_type.startswith("multipart/related"), content_type
    params = dict(p.strip().split("=", 1) for p in content_type.split(";")[1:])
    boundary = params["boundary"].strip('"').encode()
    body = response.content
    sections = body.split(b"--" + boundary)
    assert sections[-1].strip() in (b"--", b"--\r\n".strip()), "no closing delimiter"
    parts = []
    for section in sections[1:-1]:
        assert section.startswith(b"\r\n"), section[:20]
        head, _, content = section[2:].partition(b"\r\n\r\n")
        if content.endswith(b"\r\n"):
            content = content[:-2]  # the CRLF before the next delimiter belongs to it
        headers = {}
        for line in head.split(b"\r\n"):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        parts.append((headers, content))
    return parts


def multipart_body(parts: list[bytes], boundary: str, part_type: str = "application/dicom") -> bytes:
    """A multipart/related request body as dicomweb-client builds it (preamble CRLF, no epilogue)."""
    out = b""
    for part in parts:
        out += f"\r\n--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode() + part
    return out + f"\r\n--{boundary}--".encode()


def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> bool:
    """Whether `condition` became true within `timeout` seconds (checked every 10 ms, no fixed sleep)."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not condition():
        if time.monotonic() > deadline:
            return False
        pause.wait(0.01)
    return True
