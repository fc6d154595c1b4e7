"""STOW-RS: multipart/related application/dicom bodies, each part ingested as it arrives (as C-STORE is).

Response statuses (PS3.18 10.5.3): 200 when every instance was stored, 202 when some were stored and
others failed or carry warnings, 409 when none was stored (507 when all were refused for lack of space,
503 while the archive shuts down); 400 for a malformed multipart body, 415
for a body that is not multipart/related of application/dicom. The body is the PS3.18 response data
set in DICOM JSON: ReferencedSOPSequence (stored), FailedSOPSequence (with FailureReason from the one
error table in engine.web._errors) and RetrieveURL.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from engine import dicom
from engine.errors import EngineError
from engine.web._context import WebContext, base_url, uid
from engine.web._errors import HttpError, http_status
from engine.web._media import DICOM, DICOM_JSON, MULTIPART, choose, parse_accept, parse_media_type
from engine.web._multipart import iter_parts

LOGGER = logging.getLogger(__name__)

STUDY_MISMATCH = 0xA900  # "Data Set does not match SOP Class": the instance belongs to another study


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one part."""

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    failure_reason: int = 0  # 0 stored
    message: str = ""
    http_status: int = 0  # what the error table maps the failure to (0 stored)


def _store(ctx: WebContext, data: bytes, study: str | None) -> Outcome:
    """Ingest one Part-10 part through the same path as C-STORE; never raises for a bad instance."""
    try:
        parsed = dicom.parse_part10(data)
    except EngineError as exc:
        return Outcome("", "", "", "", http_status(exc).failure_reason, str(exc), http_status(exc).status)
    ids = (parsed.sop_class_uid, parsed.sop_instance_uid, parsed.study_instance_uid, parsed.series_instance_uid)
    if study is not None and parsed.study_instance_uid != study:
        message = f"instance {parsed.sop_instance_uid} belongs to study {parsed.study_instance_uid}, not {study}"
        return Outcome(*ids, STUDY_MISMATCH, message)
    try:
        ctx.archive.accept(data)
    except EngineError as exc:
        return Outcome(*ids, http_status(exc).failure_reason, str(exc), http_status(exc).status)
    return Outcome(*ids)


def _check_content_type(request: Request) -> str:
    """The boundary of a multipart/related; type="application/dicom" body; 415 or 400 otherwise."""
    header = request.headers.get("content-type", "")
    try:
        media = parse_media_type(header) if header else None
    except HttpError:
        media = None
    if media is None or media.media_type != MULTIPART:
        raise HttpError(
            415, f'STOW-RS takes multipart/related; type="application/dicom", not {header or "no Content-Type"}'
        )
    part_type = media.params.get("type", DICOM).lower()
    if part_type != DICOM:
        raise HttpError(415, f"STOW-RS here takes parts of type application/dicom, not {part_type}")
    boundary = media.params.get("boundary", "")
    if not boundary:
        raise HttpError(400, "malformed multipart: the Content-Type has no boundary parameter")
    return boundary


def _response_json(base: str, outcomes: list[Outcome], study: str | None) -> dict[str, Any]:
    stored = [o for o in outcomes if not o.failure_reason]
    failed = [o for o in outcomes if o.failure_reason]
    result: dict[str, Any] = {}
    studies = {o.study_instance_uid for o in stored}
    if study is not None or len(studies) == 1:
        result["00081190"] = {"vr": "UR", "Value": [f"{base}/studies/{study or studies.pop()}"]}
    if failed:
        result["00081198"] = {"vr": "SQ", "Value": [_item(o, None) for o in failed]}
    if stored:
        result["00081199"] = {"vr": "SQ", "Value": [_item(o, base) for o in stored]}
    return result


def _item(o: Outcome, base: str | None) -> dict[str, Any]:
    item: dict[str, Any] = {}
    if o.sop_class_uid:
        item["00081150"] = {"vr": "UI", "Value": [o.sop_class_uid]}
    if o.sop_instance_uid:
        item["00081155"] = {"vr": "UI", "Value": [o.sop_instance_uid]}
    if base is None:
        item["00081197"] = {"vr": "US", "Value": [o.failure_reason]}
    else:
        url = f"{base}/studies/{o.study_instance_uid}/series/{o.series_instance_uid}/instances/{o.sop_instance_uid}"
        item["00081190"] = {"vr": "UR", "Value": [url]}
    return item


def _nothing_stored(outcomes: list[Outcome]) -> int:
    """409, or 507 / 503 when every part was refused for want of space (or by a closing archive), so a
    client can tell "try again later" from "this data is wrong".
    """
    statuses = {o.http_status for o in outcomes}
    return statuses.pop() if len(statuses) == 1 and min(statuses) in (503, 507) else 409


async def store(request: Request, ctx: WebContext, study: str | None) -> Response:
    """Store every part of the body; parts are ingested one by one while the body is still arriving."""
    if study is not None:
        study = uid(study, "Study Instance UID")
    # Before the body is read: a client that takes only XML responses is told so before anything is stored.
    choose(parse_accept(request.headers.get("accept")), [DICOM_JSON, "application/json"], what="STOW-RS responses")
    boundary = _check_content_type(request)
    outcomes: list[Outcome] = []
    try:
        async for part in iter_parts(request.stream(), boundary):
            declared = part.headers.get("content-type", DICOM).split(";")[0].strip().lower()
            if declared != DICOM:
                outcomes.append(Outcome("", "", "", "", 0xC000, f"a part of type {declared} is not application/dicom"))
                continue
            outcome = await ctx.run(_store, ctx, part.body, study)
            if outcome.failure_reason:
                LOGGER.warning("STOW-RS refused %s: %s", outcome.sop_instance_uid or "a part", outcome.message)
            outcomes.append(outcome)
    except ClientDisconnect:
        stored = sum(1 for o in outcomes if not o.failure_reason)
        LOGGER.warning("STOW-RS client went away after %d parts (%d stored, and they stay)", len(outcomes), stored)
        return Response(status_code=400)  # no one reads it; said so that the server logs no traceback
    except HttpError as exc:
        # Parts are stored as they arrive: a body that breaks off after some were stored is not "nothing
        # stored" (PS3.18 10.5.3's 400); the rest is one failure, and the response says what was stored.
        if not any(not o.failure_reason for o in outcomes):
            raise
        LOGGER.warning("STOW-RS body broke off after %d parts: %s", len(outcomes), exc)
        outcomes.append(Outcome("", "", "", "", 0xC000, f"the rest of the body: {exc}"))
    if not outcomes:
        raise HttpError(400, "malformed multipart: the body has no parts")
    stored = sum(1 for o in outcomes if not o.failure_reason)
    status = 200 if stored == len(outcomes) else 202 if stored else _nothing_stored(outcomes)
    body = json.dumps(_response_json(base_url(request), outcomes, study)).encode()
    return Response(body, status_code=status, media_type=DICOM_JSON)
