"""WADO-RS retrieval of whole instances (study, series, instance), metadata and bulk data."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from engine import dicom
from engine.archive import check_stored
from engine.index import IndexReader
from engine.types import EXPLICIT_VR_LE, IMPLICIT_VR_LE, InstanceRecord
from engine.web._context import WebContext, base_url, encode_json, json_response, make_etag, not_modified, uid
from engine.web._errors import HttpError
from engine.web._media import DICOM, DICOM_JSON, OCTET_STREAM, STORED, choose, parse_accept
from engine.web._multipart import closing, content_type, new_boundary, part_head

LOGGER = logging.getLogger(__name__)



# -- which instances -----------------------------------------------------------------------------------
def _study_instances(reader: IndexReader, study: str) -> list[str]:
    return [sop for series in reader.series_uids(study) for sop in reader.instance_uids(series)]


def _series_instances(reader: IndexReader, study: str, series: str) -> list[str]:
    if reader.series_record(series).study_instance_uid != study:
        raise HttpError(404, f"series {series} is not in study {study}")
    return reader.instance_uids(series)


async def instance_record(
    ctx: WebContext, study: str, series: str, sop: str, *, pixels: bool = False
) -> InstanceRecord:
    """The record of an instance addressed by its full path; 404 when any level disagrees. With
    `pixels`, 503 (NotStoredYetError) while it is pending: acknowledged, its pixels not stored."""
    record = await ctx.run(ctx.archive.record, uid(sop, "SOP Instance UID"))
    if record.study_instance_uid != uid(study, "Study Instance UID") or record.series_instance_uid != uid(
        series, "Series Instance UID"
    ):
        raise HttpError(404, f"instance {sop} is not in series {series} of study {study}")
    if pixels:
        check_stored(record)
    return record


async def sops_of(ctx: WebContext, study: str, series: str | None = None) -> list[str]:
    """Instances of a study or series in order, read in one index snapshot; 404 if unknown or empty."""
    study = uid(study, "Study Instance UID")
    series = None if series is None else uid(series, "Series Instance UID")
    await ctx.wait_for(study, series)
    if series is None:
        return await ctx.run(ctx.archive.index.read, lambda r: _study_instances(r, study))
    return await ctx.run(ctx.archive.index.read, lambda r: _series_instances(r, study, series))


# -- instances as application/dicom ------------------------------------------------------------------
def _requested_syntax(value: str) -> str:
    if value == STORED:
        return "stored"  # the stored frames as they are: no decoding, no encoding
    return uid(value, "transfer-syntax")


def _part10(ctx: WebContext, sop: str, syntax: str) -> tuple[str, bytes]:
    record = ctx.archive.record(sop)
    target, dataset = ctx.archive.read_dataset(sop, syntax)
    return target, dicom.part10(dataset, target, record.sop_class_uid, sop)


async def retrieve_instances(request: Request, ctx: WebContext, sops: Sequence[str], *, one: bool = False) -> Response:
    """multipart/related; type="application/dicom", one Part-10 instance per part, built one at a time;
    for an instance resource (`one`) asked as bare application/dicom, that instance alone (PS3.18 10.4.4).

    The first instance is built before the response starts, so that a syntax the archive cannot
    produce is a 406 rather than a broken stream.
    """
    choice = choose(parse_accept(request.headers.get("accept")), [DICOM], multipart_only=not one, what="instances")
    syntax = _requested_syntax(choice.transfer_syntax)
    first = await ctx.run(_part10, ctx, sops[0], syntax)
    if one and not choice.multipart:
        return Response(first[1], media_type=f"{DICOM}; transfer-syntax={first[0]}")
    boundary = new_boundary()
    base = base_url(request)

    async def body() -> AsyncIterator[bytes]:
        for i, sop in enumerate(sops):
            target, data = first if i == 0 else await ctx.run(_part10, ctx, sop, syntax)
            headers = {"Content-Type": f"{DICOM}; transfer-syntax={target}", "Content-Length": str(len(data))}
            yield part_head(boundary, headers, i == 0)
            yield data
        yield closing(boundary)
        LOGGER.debug("sent %d instances to %s", len(sops), base)

    header_syntax = None if choice.transfer_syntax == STORED else syntax
    return StreamingResponse(body(), media_type=content_type(boundary, DICOM, header_syntax))


# -- metadata ----------------------------------------------------------------------------------------
def pixel_tag(record: InstanceRecord) -> int:
    return dicom.pixel_element_tag(record.pixel) if record.pixel is not None else 0


def _pixel_vr(record: InstanceRecord) -> str:
    if record.transfer_syntax_uid == IMPLICIT_VR_LE or len(record.pixel_element_header) < 6:
        return ""
    return record.pixel_element_header[4:6].decode("ascii", errors="replace")


def instance_json(base: str, record: InstanceRecord, prefix: bytes, suffix: bytes) -> dict[str, Any]:
    """DICOM JSON of one instance, bulk data (pixel data included) as BulkDataURI under `base`."""
    root = (
        f"{base}/studies/{record.study_instance_uid}/series/{record.series_instance_uid}"
        f"/instances/{record.sop_instance_uid}/bulkdata/"
    )
    return dicom.dataset_to_json(
        prefix,
        suffix,
        record.transfer_syntax_uid,
        lambda path: root + path,
        pixel_tag=pixel_tag(record),
        pixel_vr=_pixel_vr(record),
    )


def _dump(items: list[dict[str, Any]] | dict[str, Any]) -> bytes:
    return json.dumps(items, separators=(",", ":")).encode()


# BulkDataURIs are cached with this in place of the service root, which depends on the request.
_BASE_TOKEN = "urn:pacs-engine:base"
_BASE_NEEDLE = f'"{_BASE_TOKEN}/studies/'.encode()


def _metadata_body(ctx: WebContext, base: str, entries: list[tuple[InstanceRecord, bytes, bytes]]) -> bytes:
    """The JSON array of the instances' metadata; instances already converted come from the cache."""
    fragments = []
    for record, prefix, suffix in entries:
        key = (record.sop_instance_uid, record.digest, record.generation)
        fragment = ctx.instance_json_cache.get(key)
        if fragment is None:
            fragment = _dump(instance_json(_BASE_TOKEN, record, prefix, suffix))
            ctx.instance_json_cache.put(key, fragment)
        fragments.append(fragment)
    body = b"[" + b",".join(fragments) + b"]"
    return body.replace(_BASE_NEEDLE, ('"' + json.dumps(base)[1:-1] + "/studies/").encode())


def _study_metadata(reader: IndexReader, study: str) -> list[tuple[InstanceRecord, bytes, bytes]]:
    return [item for series in reader.series_uids(study) for item in reader.series_metadata(series)]


async def metadata(request: Request, ctx: WebContext, study: str, series: str | None) -> Response:
    """Study or series metadata: one index read, JSON built once per version (ETag) and kept gzipped."""
    _accept_json(request)
    study = uid(study, "Study Instance UID")
    index = ctx.archive.index
    await ctx.wait_for(study, series, stored=False)  # headers are in pending records already
    if series is None:
        srec = await ctx.run(index.study_record, study)
        etag = make_etag("study", study, srec.updated_at, srec.instance_count, srec.received_bytes)
        read: Callable[[IndexReader], list[tuple[InstanceRecord, bytes, bytes]]] = lambda r: _study_metadata(r, study)
    else:
        series = uid(series, "Series Instance UID")
        rec = await ctx.run(index.series_record, series)
        if rec.study_instance_uid != study:
            raise HttpError(404, f"series {series} is not in study {study}")
        etag = make_etag("series", series, rec.updated_at, rec.instance_count, rec.received_bytes)
        read = lambda r: r.series_metadata(series)
    base = base_url(request)
    etag = make_etag(etag, base)  # BulkDataURIs name the host the client used
    if not_modified(request, etag):
        return Response(status_code=304, headers={"ETag": etag, "Vary": "Accept-Encoding"})
    item = ctx.metadata_cache.get(etag)
    if item is None:
        item = encode_json(etag, await ctx.run(lambda: _metadata_body(ctx, base, index.read(read))))
        ctx.metadata_cache.put(etag, item)
    return json_response(request, item, DICOM_JSON)


def _accept_json(request: Request) -> None:
    choose(parse_accept(request.headers.get("accept")), [DICOM_JSON, "application/json"], what="metadata")


async def instance_metadata(request: Request, ctx: WebContext, study: str, series: str, sop: str) -> Response:
    _accept_json(request)
    record = await instance_record(ctx, study, series, sop)
    prefix, suffix = await ctx.run(ctx.archive.index.get_header, record.sop_instance_uid)
    etag = make_etag("instance", record.sop_instance_uid, record.digest, record.generation, base_url(request))
    if not_modified(request, etag):
        return Response(status_code=304, headers={"ETag": etag, "Vary": "Accept-Encoding"})
    body = await ctx.run(lambda: _dump([instance_json(base_url(request), record, prefix, suffix)]))
    return json_response(request, encode_json(etag, body), DICOM_JSON)


# -- bulk data ---------------------------------------------------------------------------------------
def _bulk_value(prefix: bytes, suffix: bytes, syntax: str, path: str) -> bytes:
    """The value of a binary element at `path` ("TAG" or "SEQ.ITEM.TAG..."), little endian."""
    node: Any = dicom.dataset_to_json(prefix, suffix, syntax)
    steps = path.split(".")
    try:
        for i, step in enumerate(steps):
            if i % 2 == 0:
                node = node[step.upper()] if i == len(steps) - 1 else node[step.upper()]["Value"]
            else:
                node = node[int(step)]
    except (KeyError, IndexError, ValueError, TypeError):
        raise HttpError(404, f"no element at bulk data path {path}") from None
    if not isinstance(node, dict) or "InlineBinary" not in node:
        raise HttpError(404, f"the element at {path} holds no binary value")
    return base64.b64decode(node["InlineBinary"])


def _native_pixels(ctx: WebContext, record: InstanceRecord) -> bytes:
    assert record.pixel is not None
    if record.layout == "raw":  # 1-bit / 4:2:2 data: the value as received is its native form
        if not dicom.syntax_info(record.transfer_syntax_uid).little_endian:
            raise HttpError(406, f"{record.sop_instance_uid}: packed big endian pixel data is served with the instance")
        return ctx.archive.read_packed_pixels(record.sop_instance_uid)
    frames = [ctx.archive.read_frame(record.sop_instance_uid, i) for i in range(record.pixel.frames)]
    return b"".join(np.ascontiguousarray(f.astype(f.dtype.newbyteorder("<"))).tobytes() for f in frames)


async def bulkdata(request: Request, ctx: WebContext, study: str, series: str, sop: str, path: str) -> Response:
    """A bulk data value: pixel data as native little-endian frames, other elements as stored."""
    record = await instance_record(ctx, study, series, sop, pixels=True)
    choice = choose(parse_accept(request.headers.get("accept")), [OCTET_STREAM], what="bulk data")
    if record.pixel is not None and path.upper() == f"{pixel_tag(record):08X}":
        data = await ctx.run(_native_pixels, ctx, record)
    else:
        prefix, suffix = await ctx.run(ctx.archive.index.get_header, record.sop_instance_uid)
        data = await ctx.run(_bulk_value, prefix, suffix, record.transfer_syntax_uid, path)
    if not choice.multipart:
        return Response(data, media_type=OCTET_STREAM)
    boundary = new_boundary()
    head = part_head(boundary, {"Content-Type": f"{OCTET_STREAM}; transfer-syntax={EXPLICIT_VR_LE}"}, True)
    return Response(head + data + closing(boundary), media_type=content_type(boundary, OCTET_STREAM))
