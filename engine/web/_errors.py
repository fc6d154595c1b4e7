"""The one table from engine errors to HTTP statuses (and STOW-RS failure reasons), and error responses."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from engine.errors import (
    ClosedError,
    CodecUnavailableError,
    ConfigError,
    CorruptDataError,
    DuplicateInstanceError,
    EngineError,
    InvalidDicomError,
    InvalidUIDError,
    NotFoundError,
    NotStoredYetError,
    PixelDataError,
    StorageFullError,
    UnsupportedTransferSyntaxError,
    VerificationError,
)

LOGGER = logging.getLogger(__name__)


class HttpError(EngineError):
    """A request the web edge refuses itself (bad parameter, media type, range): carries its status."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


@dataclass(frozen=True, slots=True)
class HttpStatus:
    """What an engine error becomes over HTTP: the status code, and the STOW-RS FailureReason (PS3.4 B.2.3)."""

    status: int
    failure_reason: int


# Order matters: the first class the error is an instance of wins, so subclasses come before bases.
# FailureReason codes are the Storage Service Class statuses STOW-RS reuses (PS3.18 10.5.3): A7xx out of
# resources, A9xx data set does not match SOP class, Cxxx cannot understand, 0111 duplicate SOP instance.
HTTP_STATUS_TABLE: tuple[tuple[type[EngineError], HttpStatus], ...] = (
    (NotFoundError, HttpStatus(404, 0xC000)),
    (StorageFullError, HttpStatus(507, 0xA700)),
    (ClosedError, HttpStatus(503, 0xA701)),
    (NotStoredYetError, HttpStatus(503, 0xA701)),
    (DuplicateInstanceError, HttpStatus(409, 0x0111)),
    (InvalidUIDError, HttpStatus(400, 0xA901)),
    (PixelDataError, HttpStatus(400, 0xA902)),
    (InvalidDicomError, HttpStatus(400, 0xC000)),
    (UnsupportedTransferSyntaxError, HttpStatus(406, 0xC101)),
    (CodecUnavailableError, HttpStatus(406, 0xC102)),
    (VerificationError, HttpStatus(500, 0xC103)),
    (CorruptDataError, HttpStatus(500, 0xC104)),
    (ConfigError, HttpStatus(500, 0xC100)),
    (EngineError, HttpStatus(500, 0xC100)),
)
INTERNAL = HttpStatus(500, 0x0110)  # not an EngineError: a bug of ours ("Processing failure")
# A 503 passes: an instance acknowledged and still being stored (or tried again after its store failed),
# an archive closing. Retry-After (RFC 9110 10.2.3) tells a viewer when to ask again.
RETRY_AFTER_SECONDS = 1


def http_status(error: BaseException) -> HttpStatus:
    """The HTTP status and STOW-RS failure reason of an error."""
    if isinstance(error, HttpError):
        return HttpStatus(error.status, 0xC000)
    for kind, status in HTTP_STATUS_TABLE:
        if isinstance(error, kind):
            return status
    return INTERNAL


def error_response(request: Request, error: Exception) -> Response:
    """A JSON error body {"status", "error"} with the status the table gives."""
    status = http_status(error)
    headers = error.headers if isinstance(error, HttpError) else {}
    if status.status == 503:
        headers = {**headers, "Retry-After": str(RETRY_AFTER_SECONDS)}
        LOGGER.warning("%s %s -> %d: %s", request.method, request.url.path, status.status, error)
    elif status.status >= 500:
        LOGGER.error("%s %s failed: %s", request.method, request.url.path, error, exc_info=error)
    else:
        LOGGER.info("%s %s -> %d: %s", request.method, request.url.path, status.status, error)
    return JSONResponse({"status": status.status, "error": str(error)}, status_code=status.status, headers=headers)
