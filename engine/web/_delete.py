"""DELETE of a study, series or instance resource: removes it from the archive when the configuration allows."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from engine.archive import DeleteLevel, DeletionDisabledError
from engine.web._context import WebContext, uid
from engine.web._errors import HttpError

# What a resource answers besides DELETE: the Allow header of a 405 when deletion is off.
_ALLOWED = {"study": "GET, POST", "series": "GET", "instance": "GET"}


async def delete(
    request: Request, ctx: WebContext, level: DeleteLevel, study: str, series: str | None = None, sop: str | None = None
) -> Response:
    """Delete the resource addressed by the path; 200 with a JSON summary of what was removed.

    404 when it is unknown or not inside the study / series the path names, 400 for a malformed UID,
    405 when [storage] allow_delete is off.
    """
    if not ctx.archive.settings.storage.allow_delete:
        raise _disabled(level)
    study = uid(study, "Study Instance UID")
    series = uid(series, "Series Instance UID") if series is not None else None
    sop = uid(sop, "SOP Instance UID") if sop is not None else None
    target = {"study": study, "series": series, "instance": sop}[level]
    assert target is not None  # the route names the UID of its own level
    try:
        result = await ctx.run(
            ctx.archive.delete,
            level,
            target,
            study_uid=study if level != "study" else None,
            series_uid=series if level == "instance" else None,
        )
    except DeletionDisabledError as exc:
        raise _disabled(level) from exc
    body = {
        "level": result.level,
        "uid": result.uid,
        "instances": result.instances,
        "series": result.series,
        "studies": result.studies,
        "stored_bytes": result.stored_bytes,
        "reclaimed_bytes": result.reclaimed_bytes,
    }
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


def _disabled(level: DeleteLevel) -> HttpError:
    return HttpError(
        405,
        "deletion is disabled on this archive: set allow_delete = true in its [storage] settings "
        "(engine.toml) or PACS_ENGINE_STORAGE__ALLOW_DELETE=1",
        headers={"Allow": _ALLOWED[level]},
    )
