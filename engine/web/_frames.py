"""WADO-RS frames: negotiated encodings, resolution levels, byte ranges, and a whole series at one level.

Progressive access (documented for viewers):
- `GET .../instances/{sop}/frames/{n}?level=k` answers resolution level k (1/2**k a side). For
  `image/jphc` (or `transfer-syntax=*`) of an instance stored as HTJ2K this is exactly the leading
  bytes of the stored RPCL codestream that decode level k: a valid codestream of a lower resolution.
  For `application/octet-stream` it is the decoded level-k pixels, little endian.
- A `Range: bytes=a-b` request on one frame answers 206 with those bytes of the frame's body as
  negotiated (the stored codestream for `image/jphc` / `transfer-syntax=*`), not wrapped in multipart.
  `X-Level-Prefixes` gives, for a stored HTJ2K frame, the byte counts that decode each level (0 first).
- `GET /studies/{s}/series/{se}/frames?level=k[&frame=n]` answers frame n (default 1) of every instance
  of the series at level k, in instance order, as one multipart/related response; each part names its
  instance in Content-Location. A viewer shows a whole volume from it before full frames arrive.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace

import numpy as np
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from engine import codecs
from engine.errors import NotStoredYetError
from engine.index import IndexReader
from engine.types import (
    CODEC_PASSTHROUGH,
    EXPLICIT_VR_LE,
    HTJ2K,
    HTJ2K_LOSSLESS,
    HTJ2K_LOSSLESS_RPCL,
    JPEG2000,
    JPEG2000_LOSSLESS,
    JPEG_BASELINE,
    JPEG_EXTENDED,
    JPEG_LOSSLESS_P14,
    JPEG_LOSSLESS_SV1,
    JPEGLS_LOSSLESS,
    JPEGLS_NEAR_LOSSLESS,
    RLE_LOSSLESS,
    InstanceRecord,
)
from engine.web._context import WebContext, base_url, uid
from engine.web._errors import HttpError
from engine.web._media import ANY, JHC, JLS, JP2, JPEG, JPHC, OCTET_STREAM, STORED, MediaRange, parse_accept
from engine.web._multipart import closing, content_type, new_boundary, part_head
from engine.web._wado import instance_record

LOGGER = logging.getLogger(__name__)

# The media type a frame of each compressed syntax travels as (PS3.18 Table 8.7.3-5).
MEDIA_OF_SYNTAX = {
    HTJ2K_LOSSLESS: JPHC,
    HTJ2K_LOSSLESS_RPCL: JPHC,
    HTJ2K: JPHC,
    JPEGLS_LOSSLESS: JLS,
    JPEGLS_NEAR_LOSSLESS: JLS,
    JPEG2000_LOSSLESS: JP2,
    JPEG2000: JP2,
    JPEG_BASELINE: JPEG,
    JPEG_EXTENDED: JPEG,
    JPEG_LOSSLESS_P14: JPEG,
    JPEG_LOSSLESS_SV1: JPEG,
    RLE_LOSSLESS: "image/dicom-rle",
}
# Media types we can make from any frame, and the lossless syntax each is encoded in.
ENCODED_MEDIA = {JPHC: HTJ2K_LOSSLESS_RPCL, JHC: HTJ2K_LOSSLESS_RPCL, JLS: JPEGLS_LOSSLESS, JP2: JPEG2000_LOSSLESS}
_SYNTAXES_OF_MEDIA = {
    JPHC: (HTJ2K_LOSSLESS_RPCL, HTJ2K_LOSSLESS, HTJ2K),
    JHC: (HTJ2K_LOSSLESS_RPCL, HTJ2K_LOSSLESS, HTJ2K),
    JLS: (JPEGLS_LOSSLESS, JPEGLS_NEAR_LOSSLESS),
    JP2: (JPEG2000_LOSSLESS, JPEG2000),
    JPEG: (JPEG_BASELINE, JPEG_EXTENDED, JPEG_LOSSLESS_P14, JPEG_LOSSLESS_SV1),
}


@dataclass(frozen=True, slots=True)
class FramePlan:
    """How to answer frames of one instance: "native" pixels, the "stored" codestream, or "encode" anew."""

    kind: str
    media_type: str  # Content-Type of each frame (without parameters)
    transfer_syntax: str  # the syntax of the bytes sent
    multipart: bool


def stored_syntax(record: InstanceRecord) -> str | None:
    """The syntax of the stored chunks when they are frames of a DICOM syntax (None: zstd or raw)."""
    if record.layout == "raw" or record.codec is None:
        return None
    if record.codec == CODEC_PASSTHROUGH:
        return record.transfer_syntax_uid
    return codecs.syntax_for_codec(record.codec)


def _plan_for(r: MediaRange, stored: str | None) -> FramePlan | None:
    syntax = r.transfer_syntax
    part = r.part_type
    stored_media = MEDIA_OF_SYNTAX.get(stored or "")
    wildcard = part in (ANY, "*", "image/*")
    if syntax == STORED:
        if stored is None:
            return FramePlan("native", OCTET_STREAM, EXPLICIT_VR_LE, r.multipart) if r.matches(OCTET_STREAM) else None
        if part == OCTET_STREAM:
            return FramePlan("stored", OCTET_STREAM, stored, r.multipart)
        if wildcard or r.matches(stored_media or ""):
            return FramePlan("stored", stored_media or OCTET_STREAM, stored, r.multipart)
        syntax = None  # `*` for a media type other than the stored one: any syntax of that type
    if part == OCTET_STREAM or (wildcard and part != "image/*"):
        if syntax in (None, EXPLICIT_VR_LE):
            return FramePlan("native", OCTET_STREAM, EXPLICIT_VR_LE, r.multipart or wildcard)
        return None
    for media in (JPHC, JHC, JLS, JP2, JPEG):
        if part != media and not (part == "image/*" and media == stored_media):
            continue
        allowed = _SYNTAXES_OF_MEDIA[media]
        if syntax is not None and syntax not in allowed:
            return None
        if stored in allowed and (syntax is None or syntax == stored):
            return FramePlan("stored", media, stored or "", r.multipart)
        if media in ENCODED_MEDIA and (syntax is None or syntax == ENCODED_MEDIA[media]):
            return FramePlan("encode", media, ENCODED_MEDIA[media], r.multipart)
    return None


def plan_frames(ranges: Sequence[MediaRange], stored: str | None, *, allow_bare: bool = True) -> FramePlan:
    """The first acceptable way to send frames; raises HttpError 406 listing what could be sent."""
    for r in ranges:
        plan = _plan_for(r, stored)
        if plan is not None:
            return plan if allow_bare or plan.multipart else replace(plan, multipart=True)
    offers = [OCTET_STREAM, JPHC, JHC, JLS, JP2] + ([MEDIA_OF_SYNTAX[stored]] if stored in MEDIA_OF_SYNTAX else [])
    asked = ", ".join(f"{r.media_type} {r.params}" for r in ranges)
    raise HttpError(
        406, f"frames are available as {', '.join(dict.fromkeys(offers))} (or transfer-syntax=*); asked: {asked}"
    )


def plan_for_level(record: InstanceRecord, plan: FramePlan, level: int) -> FramePlan:
    """The plan for `level`: a stored frame without embedded levels (JPEG-LS, JPEG 2000 profiles, lossy
    input) has no stored bytes of a reduced level, so that level is encoded in the asked media type, or
    sent decoded when octet-stream with any syntax was asked (the part's type says so). Raises HttpError
    406 otherwise; called before a response starts, so a client never gets a truncated body instead.
    """
    if plan.kind == "native" and level == 0 and record.layout == "raw":
        # The native form of a packed frame (1-bit, 4:2:2) is its packed bits, not the unpacked pixels
        # read_frame gives; those exist only within the whole value (bulk data, the instance).
        raise HttpError(406, f"{record.sop_instance_uid}: packed pixel data is served whole, as bulk data")
    if plan.kind != "stored" or level == 0 or record.levels[0].level_prefixes:
        return plan
    if plan.media_type in ENCODED_MEDIA:
        return replace(plan, kind="encode", transfer_syntax=ENCODED_MEDIA[plan.media_type])
    if plan.media_type == OCTET_STREAM:
        return replace(plan, kind="native", transfer_syntax=EXPLICIT_VR_LE)
    raise HttpError(
        406, f"{record.sop_instance_uid}: level {level} of a {plan.transfer_syntax} frame exists only decoded"
    )


def frame_bytes(ctx: WebContext, record: InstanceRecord, plan: FramePlan, frame: int, level: int) -> bytes:
    """One frame (0-based) at `level` in the planned encoding."""
    sop = record.sop_instance_uid
    archive = ctx.archive
    plan = plan_for_level(record, plan, level)
    if plan.kind == "stored":
        if level == 0:
            return archive.read_frame_encoded(sop, frame)[1]
        return archive.read_frame_prefix(sop, frame, level)
    pixels = archive.read_frame(sop, frame, level)
    if plan.kind == "native":
        return np.ascontiguousarray(pixels.astype(pixels.dtype.newbyteorder("<"))).tobytes()
    assert record.pixel is not None
    desc = replace(record.pixel, rows=pixels.shape[0], columns=pixels.shape[1], frames=1)
    return codecs.encode_syntax_frame(pixels, plan.transfer_syntax, desc)


def part_type(plan: FramePlan) -> str:
    return f"{plan.media_type}; transfer-syntax={plan.transfer_syntax}"


def parse_frame_list(text: str) -> list[int]:
    """1-based frame numbers from "1,3,5"; raises HttpError 400."""
    try:
        numbers = [int(item) for item in text.split(",")]
    except ValueError:
        raise HttpError(400, f"frame list {text!r} is not comma-separated frame numbers") from None
    if not numbers or min(numbers) < 1:
        raise HttpError(400, f"frame numbers start at 1; got {text!r}")
    return numbers


def parse_level(request: Request) -> int:
    raw = request.query_params.get("level", "0")
    try:
        level = int(raw)
    except ValueError:
        raise HttpError(400, f"level={raw!r} is not a whole number") from None
    if level < 0:
        raise HttpError(400, f"level={level} is negative; 0 is full resolution")
    return level


def parse_range(header: str, length: int) -> tuple[int, int] | None:
    """(first, last) byte of a single `bytes=` range; None to ignore it; HttpError 416 if unsatisfiable."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None  # other units and multiple ranges: RFC 9110 lets us send the whole body
    first_text, dash, last_text = spec.strip().partition("-")
    try:
        if not dash:
            return None
        if first_text == "":
            suffix = int(last_text)
            if suffix <= 0:
                raise HttpError(416, f"range {header!r} asks for no bytes", {"Content-Range": f"bytes */{length}"})
            return max(0, length - suffix), length - 1
        first = int(first_text)
        last = int(last_text) if last_text else length - 1
    except ValueError:
        return None  # a malformed Range is ignored (RFC 9110 14.2)
    if first >= length:
        raise HttpError(
            416,
            f"range {header!r} starts beyond the {length} bytes of the frame",
            {"Content-Range": f"bytes */{length}"},
        )
    if first > last:
        return None  # invalid, so ignored (RFC 9110 14.1.1)
    return first, min(last, length - 1)


def _check_frames(record: InstanceRecord, numbers: Sequence[int], level: int) -> None:
    if record.pixel is None:
        raise HttpError(404, f"instance {record.sop_instance_uid} has no pixel data")
    if max(numbers) > record.pixel.frames:
        raise HttpError(
            404, f"instance {record.sop_instance_uid} has frames 1..{record.pixel.frames}; asked {max(numbers)}"
        )
    if level >= len(record.levels):
        raise HttpError(
            404, f"instance {record.sop_instance_uid} has levels 0..{len(record.levels) - 1}; asked {level}"
        )


async def frames(request: Request, ctx: WebContext, study: str, series: str, sop: str, frame_list: str) -> Response:
    record = await instance_record(ctx, study, series, sop, pixels=True)
    numbers = parse_frame_list(frame_list)
    level = parse_level(request)
    _check_frames(record, numbers, level)
    plan = plan_for_level(record, plan_frames(parse_accept(request.headers.get("accept")), stored_syntax(record)), level)
    range_header = request.headers.get("range")
    if len(numbers) == 1 and (range_header or not plan.multipart):
        data = await ctx.run(frame_bytes, ctx, record, plan, numbers[0] - 1, level)
        headers = {"Accept-Ranges": "bytes"}
        if plan.kind == "stored" and record.levels[0].level_prefixes:
            headers["X-Level-Prefixes"] = ",".join(map(str, record.levels[0].level_prefixes[numbers[0] - 1]))
        selected = parse_range(range_header, len(data)) if range_header else None
        if selected is not None:
            first, last = selected
            headers["Content-Range"] = f"bytes {first}-{last}/{len(data)}"
            return Response(data[first : last + 1], status_code=206, media_type=part_type(plan), headers=headers)
        return Response(data, media_type=part_type(plan), headers=headers)
    boundary = new_boundary()
    location = f"{base_url(request)}/studies/{study}/series/{series}/instances/{sop}/frames/"

    async def body() -> AsyncIterator[bytes]:
        for i, n in enumerate(numbers):
            data = await ctx.run(frame_bytes, ctx, record, plan, n - 1, level)
            yield part_head(boundary, {"Content-Type": part_type(plan), "Content-Location": f"{location}{n}"}, i == 0)
            yield data
        yield closing(boundary)

    return StreamingResponse(body(), media_type=content_type(boundary, plan.media_type, plan.transfer_syntax))


# -- a whole series at one level -----------------------------------------------------------------------
_BATCH = 32  # instances per worker-thread call: one thread hop costs about as much as a small prefix read


def _series_records(reader: IndexReader, study: str, series: str) -> list[InstanceRecord]:
    if reader.series_record(series).study_instance_uid != study:
        raise HttpError(404, f"series {series} is not in study {study}")
    return reader.get_instances(reader.instance_uids(series))


async def series_frames(request: Request, ctx: WebContext, study: str, series: str) -> Response:
    """Frame `frame` (default 1) of every instance of a series at `level`, in instance order, one response."""
    study, series = uid(study, "Study Instance UID"), uid(series, "Series Instance UID")
    level = parse_level(request)
    number = parse_frame_list(request.query_params.get("frame", "1"))[0]
    await ctx.wait_for(study, series)
    records = await ctx.run(ctx.archive.index.read, lambda r: _series_records(r, study, series))
    if any(r.pending for r in records):  # still being stored after the wait: all of them or none
        raise NotStoredYetError(f"series {series} has instances still being stored; ask again in a moment")
    records = [r for r in records if r.pixel is not None and r.pixel.frames >= number]
    if not records:
        raise HttpError(404, f"series {series} has no instance with a frame {number}")
    ranges = parse_accept(request.headers.get("accept"))
    # Planned per instance at its own level before the response starts: a part's type must say what it holds.
    plans = [plan_for_level(r, plan_frames(ranges, stored_syntax(r), allow_bare=False), min(level, len(r.levels) - 1))
             for r in records]  # fmt: skip
    boundary = new_boundary()
    base = base_url(request)
    kinds = {p.media_type for p in plans}
    overall = plans[0].media_type if len(kinds) == 1 else ANY

    def batch(start: int) -> list[bytes]:
        out = []
        for record, plan in zip(records[start : start + _BATCH], plans[start : start + _BATCH], strict=True):
            k = min(level, len(record.levels) - 1)  # small images have fewer levels: their smallest
            out.append(frame_bytes(ctx, record, plan, number - 1, k))
        return out

    async def body() -> AsyncIterator[bytes]:
        for start in range(0, len(records), _BATCH):
            chunk = await ctx.run(batch, start)
            for i, data in enumerate(chunk):
                record, plan = records[start + i], plans[start + i]
                location = f"{base}/studies/{study}/series/{series}/instances/{record.sop_instance_uid}/frames/{number}"
                headers = {"Content-Type": part_type(plan), "Content-Location": location}
                yield part_head(boundary, headers, start + i == 0)
                yield data
        yield closing(boundary)

    return StreamingResponse(body(), media_type=content_type(boundary, overall))
