"""What every endpoint shares: the archive, running blocking archive calls in threads, URLs, caches."""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

from anyio import to_thread
from starlette.requests import Request
from starlette.responses import Response

from engine.archive import Archive
from engine.dicom import validate_uid
from engine.errors import InvalidUIDError
from engine.lru import LruCache
from engine.web._errors import HttpError

_P = ParamSpec("_P")
_T = TypeVar("_T")

GZIP_MIN_BYTES = 1024  # below this gzip's header costs more than it saves
# Longest a request waits for instances acknowledged by C-STORE / STOW-RS: a read of a study or series
# for their transcodes (reads of one instance wait for it in full), a query or a metadata request only
# for their pending records (milliseconds). The soak test (8 storescu loops, 2 cores) keeps hundreds
# pending: queries that waited for all their transcodes took 30-60 s. A request naming one study or
# series waits only for what is pending there (WebContext.wait_for).
BROWSE_WAIT_SECONDS = 5.0
_GZIP_LEVEL = 5  # measured on 300-instance CT series metadata: 1020 kB -> 25 kB


@dataclass(frozen=True, slots=True)
class Encoded:
    """A JSON body kept ready to send: plain and gzipped, with its entity tag."""

    etag: str
    plain: bytes
    gzipped: bytes | None


def _encoded_size(_key: object, item: Encoded) -> int:
    return len(item.plain) + len(item.gzipped or b"")


class WebContext:
    """The archive behind the DICOMweb endpoints, and the helpers they share.

    Caches (bounded by bytes): whole metadata bodies by entity tag, and each instance's DICOM JSON by
    (SOP Instance UID, digest, generation), so a series that grew is rebuilt only for its new instances.
    """

    def __init__(self, archive: Archive, cache_mb: int = 128) -> None:
        self.archive = archive
        self.metadata_cache: LruCache[str, Encoded] = LruCache((cache_mb << 20) // 2, _encoded_size)
        self.instance_json_cache: LruCache[tuple[str, str, int], bytes] = LruCache(
            (cache_mb << 20) // 2, lambda _key, fragment: len(fragment))

    async def run(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """Run a blocking archive call in a worker thread: the event loop never waits on disk or codecs."""
        return await to_thread.run_sync(lambda: fn(*args, **kwargs))

    async def wait_for(self, study: str | None, series: str | None, *, stored: bool = True) -> None:
        """Let instances acknowledged in `study` / `series` (everywhere when None) be stored first, or with
        `stored` False only visible, for at most BROWSE_WAIT_SECONDS: a request never waits for other
        studies' backlog."""
        if self.archive.ingests_pending(study=study, series=series, stored=stored):  # usually no thread hop
            await self.run(self.archive.wait_for_ingests, BROWSE_WAIT_SECONDS, study=study, series=series,
                           stored=stored)


def uid(value: str, what: str) -> str:
    """A UID from a URL, validated before it is used as a key; raises HttpError 400."""
    try:
        return validate_uid(value, what)
    except InvalidUIDError as exc:
        raise HttpError(400, str(exc)) from exc


# Service roots by what they are made of: building one through Starlette's URL took 4% of a QIDO
# request's server time (py-spy). Bounded by entries, as the Host header is the client's to choose.
_BASE_URLS: LruCache[tuple[object, ...], str] = LruCache(256, lambda _key, _url: 1)


def base_url(request: Request) -> str:
    """The service root as the client sees it (scheme, host, mount path), without a trailing slash."""
    scope = request.scope
    host = next((value for name, value in scope["headers"] if name == b"host"), None)
    key = (scope.get("scheme"), host, scope.get("server"), scope.get("app_root_path", scope.get("root_path")))
    url = _BASE_URLS.get(key)
    if url is None:
        url = str(request.base_url).rstrip("/")
        _BASE_URLS.put(key, url)
    return url


def make_etag(*parts: object) -> str:
    digest = hashlib.blake2b("\0".join(map(str, parts)).encode(), digest_size=12).hexdigest()
    return f'"{digest}"'


def encode_json(etag: str, body: bytes, *, compress: bool = True, level: int = _GZIP_LEVEL) -> Encoded:
    """The body with its gzipped form when it is worth it (and `compress`: the client takes gzip)."""
    worth = compress and len(body) >= GZIP_MIN_BYTES
    return Encoded(etag, body, gzip_bytes(body, level) if worth else None)


def gzip_bytes(body: bytes, level: int = _GZIP_LEVEL) -> bytes:
    """A gzip member of `body` with a window no larger than the body.

    A match never reaches back past the body's start, so a bigger window gains nothing (the same sizes
    were measured on QIDO and metadata bodies), but zlib sets up the whole window and hash tables for
    every stream: for a 1.3 kB QIDO answer that was 3/4 of the time (gzip.compress 57-138 us, this
    16-32 us).
    """
    bits = max(9, min(15, (len(body) - 1).bit_length()))  # zlib's window sizes: 2**9 .. 2**15 bytes
    stream = zlib.compressobj(level, zlib.DEFLATED, 16 + bits, max(1, min(8, bits - 7)))  # 16+: gzip wrapper
    return stream.compress(body) + stream.flush()


def accepts_gzip(request: Request) -> bool:
    for item in request.headers.get("accept-encoding", "").split(","):
        name, _, params = item.strip().partition(";")
        if name.strip().lower() in ("gzip", "*") and params.replace(" ", "") not in ("q=0", "q=0.0"):
            return True
    return False


def not_modified(request: Request, etag: str) -> bool:
    """Whether If-None-Match names `etag` (or is `*`), so 304 may be answered."""
    header = request.headers.get("if-none-match")
    if not header:
        return False
    tags = {t.strip().removeprefix("W/") for t in header.split(",")}
    return "*" in tags or etag in tags


def json_response(request: Request, item: Encoded, media_type: str, *, cache: str = "no-cache") -> Response:
    """The body gzipped when the client takes it, with ETag and Vary; 304 when If-None-Match matches."""
    headers = {"ETag": item.etag, "Vary": "Accept-Encoding", "Cache-Control": cache}
    if not_modified(request, item.etag):
        return Response(status_code=304, headers=headers)
    if item.gzipped is not None and accepts_gzip(request):
        headers["Content-Encoding"] = "gzip"
        return Response(item.gzipped, media_type=media_type, headers=headers)
    return Response(item.plain, media_type=media_type, headers=headers)
