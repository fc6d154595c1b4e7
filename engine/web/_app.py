"""The DICOMweb ASGI application: routes of QIDO-RS, WADO-RS and STOW-RS, CORS, and error mapping."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from engine.archive import Archive
from engine.audit import AuditLog
from engine.config import AuthSettings
from engine.errors import EngineError
from engine.web import _delete, _frames, _qido, _rendered, _stow, _wado
from engine.web._auth import AccessMiddleware, Authenticator
from engine.web._context import WebContext
from engine.web._errors import error_response
from engine.web._viewer import viewer_routes

EXPOSED_HEADERS = ("Content-Range", "Content-Type", "Content-Length", "Content-Location", "ETag", "Warning",
                   "Accept-Ranges", "X-Level-Prefixes", "WWW-Authenticate")  # fmt: skip
_STUDY = "/studies/{study}"
_SERIES = _STUDY + "/series/{series}"
_INSTANCE = _SERIES + "/instances/{sop}"
_SCOPE_KEYWORDS = {"study": "StudyInstanceUID", "series": "SeriesInstanceUID"}

Handler = Callable[[Request], Awaitable[Response]]


def _path(request: Request, *names: str) -> list[str]:
    return [str(request.path_params[name]) for name in names]


class _Handlers:
    """One method per resource; each unpacks the path and calls the module that answers it."""

    def __init__(self, ctx: WebContext) -> None:
        self.ctx = ctx

    async def studies(self, request: Request) -> Response:
        if request.method == "POST":
            return await _stow.store(request, self.ctx, None)
        return await _qido.search(request, self.ctx, "STUDY", {})

    async def study(self, request: Request) -> Response:
        [study] = _path(request, "study")
        if request.method == "POST":
            return await _stow.store(request, self.ctx, study)
        if request.method == "DELETE":
            return await _delete.delete(request, self.ctx, "study", study)
        return await _wado.retrieve_instances(request, self.ctx, await _wado.sops_of(self.ctx, study))

    async def series(self, request: Request) -> Response:
        if request.method == "DELETE":
            return await _delete.delete(request, self.ctx, "series", *_path(request, "study", "series"))
        sops = await _wado.sops_of(self.ctx, *_path(request, "study", "series"))
        return await _wado.retrieve_instances(request, self.ctx, sops)

    async def instance(self, request: Request) -> Response:
        if request.method == "DELETE":
            return await _delete.delete(request, self.ctx, "instance", *_path(request, "study", "series", "sop"))
        record = await _wado.instance_record(self.ctx, *_path(request, "study", "series", "sop"))
        return await _wado.retrieve_instances(request, self.ctx, [record.sop_instance_uid], one=True)

    def search(self, level: str, *scope: str) -> Handler:
        async def handler(request: Request) -> Response:
            uids = dict(zip((_SCOPE_KEYWORDS[name] for name in scope), _path(request, *scope), strict=True))
            return await _qido.search(request, self.ctx, level, uids)

        return handler

    async def study_metadata(self, request: Request) -> Response:
        [study] = _path(request, "study")
        return await _wado.metadata(request, self.ctx, study, None)

    async def series_metadata(self, request: Request) -> Response:
        study, series = _path(request, "study", "series")
        return await _wado.metadata(request, self.ctx, study, series)

    async def instance_metadata(self, request: Request) -> Response:
        return await _wado.instance_metadata(request, self.ctx, *_path(request, "study", "series", "sop"))

    async def frames(self, request: Request) -> Response:
        return await _frames.frames(request, self.ctx, *_path(request, "study", "series", "sop", "frames"))

    async def series_frames(self, request: Request) -> Response:
        return await _frames.series_frames(request, self.ctx, *_path(request, "study", "series"))

    async def bulkdata(self, request: Request) -> Response:
        return await _wado.bulkdata(request, self.ctx, *_path(request, "study", "series", "sop", "path"))

    def rendered(self, *, thumbnail: bool) -> Handler:
        async def handler(request: Request) -> Response:
            study, series, sop = _path(request, "study", "series", "sop")
            frames = request.path_params.get("frames")
            return await _rendered.rendered(request, self.ctx, study, series, sop, frames, thumbnail=thumbnail)

        return handler

    async def series_thumbnail(self, request: Request) -> Response:
        study, series = _path(request, "study", "series")
        return await _rendered.series_thumbnail(request, self.ctx, study, series)

    async def study_thumbnail(self, request: Request) -> Response:
        [study] = _path(request, "study")
        return await _rendered.series_thumbnail(request, self.ctx, study, None)

    def routes(self) -> list[Route]:
        return [
            Route("/studies", self.studies, methods=["GET", "POST"]),
            Route("/series", self.search("SERIES")),
            Route("/instances", self.search("IMAGE")),
            Route(_STUDY, self.study, methods=["GET", "POST", "DELETE"]),
            Route(_STUDY + "/metadata", self.study_metadata),
            Route(_STUDY + "/thumbnail", self.study_thumbnail),
            Route(_STUDY + "/series", self.search("SERIES", "study")),
            Route(_STUDY + "/instances", self.search("IMAGE", "study")),
            Route(_SERIES, self.series, methods=["GET", "DELETE"]),
            Route(_SERIES + "/metadata", self.series_metadata),
            Route(_SERIES + "/thumbnail", self.series_thumbnail),
            Route(_SERIES + "/frames", self.series_frames),
            Route(_SERIES + "/instances", self.search("IMAGE", "study", "series")),
            Route(_INSTANCE, self.instance, methods=["GET", "DELETE"]),
            Route(_INSTANCE + "/metadata", self.instance_metadata),
            Route(_INSTANCE + "/rendered", self.rendered(thumbnail=False)),
            Route(_INSTANCE + "/thumbnail", self.rendered(thumbnail=True)),
            Route(_INSTANCE + "/frames/{frames}", self.frames),
            Route(_INSTANCE + "/frames/{frames}/rendered", self.rendered(thumbnail=False)),
            Route(_INSTANCE + "/frames/{frames}/thumbnail", self.rendered(thumbnail=True)),
            Route(_INSTANCE + "/bulkdata/{path:path}", self.bulkdata),
        ]


def create_app(archive: Archive, extra_routes: Sequence[BaseRoute] = (), *, auth: AuthSettings | None = None,
               audit: AuditLog | None = None) -> Starlette:
    """The DICOMweb service of `archive` at the root path, with the viewer page at `/`; `extra_routes` come first.

    Every response carries CORS headers for any origin; preflight OPTIONS requests are answered.
    Errors become statuses through the one table of engine.web._errors. With tokens or users in `auth`,
    requests need credentials (engine.web._auth); every request is written to `audit`.
    """

    async def on_error(request: Request, exc: Exception) -> Response:
        return error_response(request, exc)

    cors = Middleware(
        CORSMiddleware,
        allow_origins=["*"],
        allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
        allow_headers=["*"],
        expose_headers=list(EXPOSED_HEADERS),
        max_age=600,
    )
    authenticator = Authenticator(auth) if auth is not None and auth.enabled else None
    # Inside CORS: preflights are answered before credentials are asked for, and 401s carry CORS headers.
    access = Middleware(AccessMiddleware, authenticator=authenticator, audit=audit or AuditLog(None))
    ctx = WebContext(archive)
    app = Starlette(
        routes=[*extra_routes, *viewer_routes(), *_Handlers(ctx).routes()],
        middleware=[cors, access],
        exception_handlers={EngineError: on_error},
    )
    app.state.web = ctx
    return app
