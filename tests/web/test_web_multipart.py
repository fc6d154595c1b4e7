"""The streaming multipart reader and the Accept negotiation, without a server: any chunking, any order."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.types import EXPLICIT_VR_LE, HTJ2K_LOSSLESS_RPCL, JPEG_BASELINE
from engine.web import HttpError
from engine.web._frames import plan_frames
from engine.web._media import parse_accept
from engine.web._multipart import closing, iter_parts, part_head

BOUNDARY = "b0undary"


def _body(parts: list[bytes]) -> bytes:
    out = b""
    for i, part in enumerate(parts):
        out += part_head(BOUNDARY, {"Content-Type": "application/dicom"}, i == 0) + part
    return out + closing(BOUNDARY)


def _read(body: bytes, cuts: list[int]) -> list[bytes]:
    positions = sorted({c % (len(body) + 1) for c in cuts} | {0, len(body)})

    async def chunks() -> AsyncIterator[bytes]:
        for start, end in itertools.pairwise(positions):
            yield body[start:end]

    async def collect() -> list[bytes]:
        return [part.body async for part in iter_parts(chunks(), BOUNDARY)]

    return asyncio.run(collect())


# Part bodies may contain CRLF, dashes and pieces of the boundary, but never the delimiter itself.
_PIECES = st.sampled_from([b"\r\n", b"--", b"b0und", b"\r\n--b0und", b"x", b"\x00\xff", b"DICM"])
_PART = st.lists(_PIECES, max_size=30).map(b"".join).filter(lambda b: b"\r\n--" + BOUNDARY.encode() not in b + b"\r\n")


@given(st.lists(_PART, min_size=1, max_size=5), st.lists(st.integers(min_value=0), max_size=20))
def test_any_chunking_gives_the_same_parts(parts: list[bytes], cuts: list[int]) -> None:
    assert _read(_body(parts), cuts) == parts


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"no delimiter here",
        b"--b0undary\r\nContent-Type: x\r\n\r\nbody without end",
        b"--b0undary\r\nContent-Type x\r\n\r\n",
    ],
)
def test_malformed_bodies_raise_400(body: bytes) -> None:
    with pytest.raises(HttpError) as caught:
        _read(body, [])
    assert caught.value.status == 400


def test_a_body_without_delimiter_is_refused_early() -> None:
    with pytest.raises(HttpError, match="first 16 KiB"):
        _read(b"x" * 100_000, list(range(0, 100_000, 1000)))


def test_accept_ranges_are_ordered_by_quality() -> None:
    ranges = parse_accept('image/jls;q=0.5, multipart/related; type="image/jphc"; transfer-syntax=*, */*;q=0.1')
    assert [r.part_type for r in ranges] == ["image/jphc", "image/jls", "*/*"]
    assert ranges[0].transfer_syntax == "*" and ranges[0].multipart


@pytest.mark.parametrize(
    ("accept", "stored", "kind", "media", "syntax"),
    [
        ("", HTJ2K_LOSSLESS_RPCL, "native", "application/octet-stream", EXPLICIT_VR_LE),
        ("image/jphc", HTJ2K_LOSSLESS_RPCL, "stored", "image/jphc", HTJ2K_LOSSLESS_RPCL),
        ("image/jhc", None, "encode", "image/jhc", HTJ2K_LOSSLESS_RPCL),
        (
            'multipart/related; type="application/octet-stream"; transfer-syntax=*',
            HTJ2K_LOSSLESS_RPCL,
            "stored",
            "application/octet-stream",
            HTJ2K_LOSSLESS_RPCL,
        ),
        ('multipart/related; type="*/*"; transfer-syntax=*', JPEG_BASELINE, "stored", "image/jpeg", JPEG_BASELINE),
        ("image/jpeg", JPEG_BASELINE, "stored", "image/jpeg", JPEG_BASELINE),
        ("image/gif, image/jls", HTJ2K_LOSSLESS_RPCL, "encode", "image/jls", "1.2.840.10008.1.2.4.80"),
    ],
)
def test_frame_negotiation(accept: str, stored: str | None, kind: str, media: str, syntax: str) -> None:
    plan = plan_frames(parse_accept(accept), stored)
    assert (plan.kind, plan.media_type, plan.transfer_syntax) == (kind, media, syntax)


def test_jpeg_frames_cannot_be_made_from_lossless_storage() -> None:
    with pytest.raises(HttpError) as caught:
        plan_frames(parse_accept("image/jpeg"), HTJ2K_LOSSLESS_RPCL)
    assert caught.value.status == 406
