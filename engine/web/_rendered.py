"""WADO-RS rendered and thumbnail: a frame windowed to 8 bits as JPEG or PNG.

Query parameters: `window=center,width[,function]` (function linear, linear-exact or sigmoid; default: the
instance's first Window Center/Width, else the frame's full range), `quality=1..100` (JPEG),
`viewport=width,height` (the smallest resolution level that still covers it, scaled down to fit it
with its aspect ratio kept; never scaled up) and `level=k`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import Response

from engine import codecs, dicom
from engine.codecs import level_shape
from engine.types import InstanceRecord
from engine.web._context import WebContext
from engine.web._errors import HttpError
from engine.web._frames import parse_frame_list, parse_level
from engine.web._media import JPEG, PNG, choose, parse_accept
from engine.web._wado import instance_record, sops_of

THUMBNAIL_VIEWPORT = (128, 128)
_YBR_FULL = frozenset({"YBR_FULL", "YBR_FULL_422"})  # read_frame expands 4:2:2 to full YBR


def _first_number(element: dict[str, Any] | None) -> float | None:
    values = (element or {}).get("Value") or []
    try:
        return float(values[0]) if values else None
    except (TypeError, ValueError):
        return None


def _voi(ctx: WebContext, record: InstanceRecord) -> dict[str, Any]:
    """Window and modality LUT attributes of the instance, from its stored header."""
    prefix, suffix = ctx.archive.index.get_header(record.sop_instance_uid)
    header = dicom.dataset_to_json(prefix, suffix, record.transfer_syntax_uid)
    function = ((header.get("00281056") or {}).get("Value") or ["LINEAR"])[0]
    return {
        "center": _first_number(header.get("00281050")),
        "width": _first_number(header.get("00281051")),
        "intercept": _first_number(header.get("00281052")) or 0.0,
        "slope": _first_number(header.get("00281053")) or 1.0,
        "function": function if function in codecs.WINDOW_FUNCTIONS else "LINEAR",
    }


def _query_window(request: Request) -> tuple[float, float, str] | None:
    raw = request.query_params.get("window")
    if raw is None:
        return None
    parts = [p.strip() for p in raw.split(",")]
    try:
        center, width = float(parts[0]), float(parts[1])
    except (ValueError, IndexError):
        raise HttpError(400, f"window={raw!r} is not center,width[,function]") from None
    # PS3.18 writes the functions as linear, linear-exact and sigmoid; the attribute as LINEAR_EXACT
    function = parts[2].upper().replace("-", "_") if len(parts) > 2 else "LINEAR"
    if function not in codecs.WINDOW_FUNCTIONS:
        raise HttpError(400, f"window function {function!r} is not one of {', '.join(codecs.WINDOW_FUNCTIONS)}")
    return center, width, function


def _viewport(request: Request, default: tuple[int, int] | None) -> tuple[int, int] | None:
    """(width, height) the image must fit in: `viewport=vw,vh` (PS3.18 8.3.5.1; a source region after
    them is not supported and ignored), else `default`."""
    raw = request.query_params.get("viewport")
    if raw is None:
        return default
    try:
        width, height = (int(v) for v in raw.split(",")[:2])
    except ValueError:
        raise HttpError(400, f"viewport={raw!r} is not width,height") from None
    if width < 1 or height < 1:
        raise HttpError(400, f"viewport={raw!r}: width and height must be 1 or more")
    return width, height


def _viewport_level(request: Request, record: InstanceRecord, viewport: tuple[int, int] | None) -> int:
    """The smallest resolution level that still covers the viewport (`level=k` without one)."""
    if viewport is None:
        return parse_level(request)
    width, height = viewport
    assert record.pixel is not None
    level = 0
    while level + 1 < len(record.levels):
        rows, cols = level_shape(record.pixel.rows, record.pixel.columns, level + 1)
        if rows < height or cols < width:
            break
        level += 1
    return level


def _render(ctx: WebContext, request: Request, record: InstanceRecord, frame: int, level: int, media: str,
            viewport: tuple[int, int] | None = None) -> bytes:
    assert record.pixel is not None
    pixels = ctx.archive.read_frame(record.sop_instance_uid, frame, level)
    if pixels.ndim == 3 and pixels.dtype == np.uint8 and record.pixel.photometric in _YBR_FULL:
        pixels = codecs.ybr_full_to_rgb(pixels)  # frames keep their samples as stored
    voi = _voi(ctx, record)
    window = _query_window(request)
    if window is not None:
        voi["center"], voi["width"], voi["function"] = window
    try:
        image = codecs.window_to_uint8(pixels, invert=record.pixel.photometric == "MONOCHROME1", **voi)
    except ValueError as exc:
        raise HttpError(400, str(exc)) from exc
    if viewport is not None:
        image = codecs.fit_within(image, *viewport)
    if media == PNG:
        return codecs.encode_png(image)
    quality = request.query_params.get("quality", "90")
    if not quality.isdigit() or not 1 <= int(quality) <= 100:
        raise HttpError(400, f"quality={quality!r} is not 1..100")
    return codecs.encode_jpeg(np.ascontiguousarray(image), int(quality))


async def rendered(
    request: Request,
    ctx: WebContext,
    study: str,
    series: str,
    sop: str,
    frame_list: str | None,
    *,
    thumbnail: bool = False,
) -> Response:
    """The instance's frame (the first of `frame_list`, else 1) rendered; the thumbnail fits 128 x 128."""
    choice = choose(parse_accept(request.headers.get("accept")), [JPEG, PNG], what="rendered images")
    record = await instance_record(ctx, study, series, sop, pixels=True)
    if record.pixel is None:
        raise HttpError(404, f"instance {sop} has no pixel data to render")
    frame = parse_frame_list(frame_list)[0] if frame_list else (record.pixel.frames + 1) // 2 if thumbnail else 1
    if frame > record.pixel.frames:
        raise HttpError(404, f"instance {sop} has frames 1..{record.pixel.frames}; asked {frame}")
    viewport = _viewport(request, THUMBNAIL_VIEWPORT if thumbnail else None)
    level = _viewport_level(request, record, viewport)
    if level >= len(record.levels):
        raise HttpError(404, f"instance {sop} has levels 0..{len(record.levels) - 1}; asked {level}")
    data = await ctx.run(_render, ctx, request, record, frame - 1, level, choice.media_type, viewport)
    return Response(data, media_type=choice.media_type, headers={"Cache-Control": "max-age=3600"})


async def series_thumbnail(request: Request, ctx: WebContext, study: str, series: str | None) -> Response:
    """The thumbnail of the middle instance of a series (of the study's first series for a study)."""
    if series is None:
        sops = await sops_of(ctx, study)
        if not sops:
            raise HttpError(404, f"study {study} has no instances")
        record = await ctx.run(ctx.archive.record, sops[0])
        series = record.series_instance_uid
    sops = await sops_of(ctx, study, series)
    if not sops:
        raise HttpError(404, f"series {series} has no instances")
    return await rendered(request, ctx, study, series, sops[len(sops) // 2], None, thumbnail=True)
