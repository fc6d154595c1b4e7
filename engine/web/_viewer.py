"""The viewer page: plain HTML/JS files of engine/web/static served at `/` and under `/viewer/`."""

from __future__ import annotations

import logging
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

LOGGER = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
# The only files served: a fixed table, so no request path ever reaches the file system.
VIEWER_FILES = {
    "index.html": "text/html; charset=utf-8",
    "viewer.js": "text/javascript; charset=utf-8",
    "viewer.css": "text/css; charset=utf-8",
}


def _file_route(path: str, name: str) -> Route:
    # Read once: the files are part of the package and do not change while the server runs.
    body = (STATIC_DIR / name).read_bytes()
    media_type = VIEWER_FILES[name]

    async def handler(request: Request) -> Response:
        return Response(body, media_type=media_type, headers={"Cache-Control": "no-cache"})

    return Route(path, handler, methods=["GET"], name=f"viewer:{name}")


def viewer_routes() -> list[BaseRoute]:
    """Routes of the viewer page: `/` (index.html) and `/viewer/{file}` for its script and style."""
    routes: list[BaseRoute] = [_file_route("/", "index.html")]
    routes.extend(_file_route(f"/viewer/{name}", name) for name in VIEWER_FILES)
    return routes
