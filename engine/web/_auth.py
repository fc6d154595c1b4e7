"""Who may call DICOMweb, and the audit line of every request: bearer tokens and Basic users from [auth].

Roles: `read` may GET and HEAD; `write` may also POST (STOW-RS) and DELETE. Missing or wrong credentials
get 401 with a WWW-Authenticate challenge per configured scheme, a read-only caller that writes gets 403.
CORS preflights (answered by the CORS middleware outside this one) and the viewer's own files (`/`,
`/viewer/...`) need no credentials: the page asks for them and sends them with its requests. Without any
token or user configured, every request is let through as "anonymous" and still audited.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import re
import secrets
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from anyio import to_thread

from engine.audit import AuditLog
from engine.config import AuthSettings, Credential
from engine.security import hash_password, verify_password

LOGGER = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# The viewer's page, script and style, and the icon browsers ask for with every page (a 404 either way).
_PUBLIC = re.compile(r"^/(viewer/[A-Za-z0-9._-]+|favicon\.ico)?$")
_STUDY_IN_PATH = re.compile(r"/studies/([0-9][0-9.]{0,63})(?=/|$)")
_STUDY_IN_BODY = re.compile(rb"/studies/([0-9][0-9.]{0,63})(?=[/\"])")
_VERIFIED_CACHE = 1024  # Basic logins remembered, so scrypt runs once per user and password, not per request
_BODY_AUDIT_LIMIT = 4 << 20  # STOW-RS responses read for their study UIDs up to this size


@dataclass(frozen=True, slots=True)
class Identity:
    """An authenticated caller: the configured name and its role."""

    name: str
    role: str


ANONYMOUS = Identity("anonymous", "write")


class Authenticator:
    """Checks an Authorization header against the configured tokens and users; thread-safe."""

    def __init__(self, settings: AuthSettings) -> None:
        self.realm = settings.realm
        self._tokens = [(_digest(c.secret), Identity(c.name, c.role)) for c in settings.tokens]
        self._users: dict[str, Credential] = {c.name: c for c in settings.users}
        # Checked for unknown user names, so a wrong name costs what a wrong password costs.
        self._decoy = hash_password(secrets.token_urlsafe(16))
        self._cache_key = secrets.token_bytes(32)
        self._verified: OrderedDict[bytes, Identity] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def challenges(self) -> list[str]:
        """WWW-Authenticate values, one per scheme in use (RFC 6750 for Bearer, RFC 7617 for Basic)."""
        out = []
        if self._tokens:
            out.append(f'Bearer realm="{self.realm}"')
        if self._users:
            out.append(f'Basic realm="{self.realm}", charset="UTF-8"')
        return out

    def bearer(self, token: str) -> Identity | None:
        """The identity of a token; every configured token is compared, in constant time, whatever matches."""
        presented = _digest(token)
        found = None
        for digest, identity in self._tokens:
            if hmac.compare_digest(presented, digest):
                found = identity
        return found

    def cached_basic(self, user: str, password: str) -> tuple[bytes, Identity | None]:
        """(cache key, identity) when this user and password verified before; (key, None) otherwise."""
        key = hmac.digest(self._cache_key, f"{user}\0{password}".encode(), "sha256")
        with self._lock:
            identity = self._verified.get(key)
            if identity is not None:
                self._verified.move_to_end(key)
        return key, identity

    def verify_basic(self, key: bytes, user: str, password: str) -> Identity | None:
        """Check the password against the user's scrypt hash (about 50 ms: call it off the event loop)."""
        credential = self._users.get(user)
        matches = verify_password(password, credential.secret if credential is not None else self._decoy)
        if credential is None or not matches:
            return None
        identity = Identity(credential.name, credential.role)
        with self._lock:
            self._verified[key] = identity
            while len(self._verified) > _VERIFIED_CACHE:
                self._verified.popitem(last=False)
        return identity

    async def identify(self, header: str | None) -> tuple[Identity | None, str]:
        """(identity, "") for valid credentials; (None, why) otherwise."""
        if not header:
            return None, "no credentials"
        scheme, _, value = header.strip().partition(" ")
        scheme, value = scheme.lower(), value.strip()
        if scheme == "bearer" and self._tokens:
            identity = self.bearer(value)
            return identity, "" if identity is not None else "unknown bearer token"
        if scheme == "basic" and self._users:
            try:
                user, sep, password = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return None, "malformed Basic credentials"
            if not sep:
                return None, "malformed Basic credentials"
            key, identity = self.cached_basic(user, password)
            if identity is None:
                identity = await to_thread.run_sync(self.verify_basic, key, user, password)
            return identity, "" if identity is not None else f"wrong user name or password (user {user!r})"
        return None, f"unsupported authorization scheme {scheme!r}"


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8")).digest()


def _operation(method: str, path: str) -> str:
    if method == "POST":
        return "STOW-RS"
    if method == "DELETE":
        return "DELETE"
    if path.rstrip("/").rsplit("/", 1)[-1] in ("studies", "series", "instances"):
        return "QIDO-RS"
    return "WADO-RS"


def _request_studies(scope: Scope) -> set[str]:
    studies = set(_STUDY_IN_PATH.findall(scope.get("path", "")))
    query = scope.get("query_string", b"").decode("latin-1")
    for key, value in parse_qsl(query):
        if key in ("StudyInstanceUID", "0020000D"):
            studies.update(v for v in value.split(",") if re.fullmatch(r"[0-9][0-9.]{0,63}", v))
    return studies


def _stow_counts(body: bytes) -> dict[str, int]:
    try:
        result = json.loads(body)
    except ValueError:
        return {}
    if not isinstance(result, dict):
        return {}
    return {name: len(result.get(tag, {}).get("Value", []) or [])
            for name, tag in (("stored", "00081199"), ("failed", "00081198"))}


class AccessMiddleware:
    """ASGI middleware: authenticate and authorise each request (when configured), then audit it."""

    def __init__(self, app: App, authenticator: Authenticator | None, audit: AuditLog) -> None:
        self.app = app
        self.auth = authenticator
        self.audit = audit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope.get("path", "")
        if method == "OPTIONS" or (method in ("GET", "HEAD") and _PUBLIC.match(path)):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        where = f"{client[0]}:{client[1]}" if client else "unknown"
        what = _operation(method, path)
        identity = ANONYMOUS
        if self.auth is not None:
            header = _header(scope, b"authorization")
            found, why = await self.auth.identify(header)
            if found is None:
                LOGGER.warning("DICOMweb %s %s from %s refused: %s", method, path, where, why)
                self._record(what, "anonymous", where, "refused", 401, scope, reason=why)
                await _refuse(send, 401, f"authentication required: {why}", self.auth.challenges)
                return
            identity = found
            if method not in READ_METHODS and identity.role != "write":
                why = f"{identity.name} has role {identity.role}, which may not {method}"
                LOGGER.warning("DICOMweb %s %s from %s refused: %s", method, path, where, why)
                self._record(what, identity.name, where, "refused", 403, scope, reason=why)
                await _refuse(send, 403, why, [])
                return
        scope.setdefault("state", {})["user"] = identity.name
        await self._run_audited(scope, receive, send, what, identity.name, where)

    async def _run_audited(self, scope: Scope, receive: Receive, send: Send, what: str, who: str,
                           where: str) -> None:
        status = 500
        body = bytearray()
        keep_body = what == "STOW-RS"

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif keep_body and message["type"] == "http.response.body" and len(body) < _BODY_AUDIT_LIMIT:
                body.extend(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            studies = _request_studies(scope)
            details: dict[str, int] = {}
            if keep_body:
                studies.update(s.decode("ascii") for s in _STUDY_IN_BODY.findall(bytes(body)))
                details = _stow_counts(bytes(body))
            outcome = "success" if status < 400 else "failure"
            if what == "STOW-RS" and status == 202:
                outcome = "warning"  # some parts stored, some refused (PS3.18 10.5.3)
            self._record(what, who, where, outcome, status, scope, studies=studies, **details)

    def _record(self, what: str, who: str, where: str, outcome: str, status: int, scope: Scope,
                studies: set[str] | None = None, **details: str | int) -> None:
        query = scope.get("query_string", b"").decode("latin-1")
        path = scope.get("path", "") + (f"?{query}" if query else "")
        self.audit.record(what, who=who, where=where, outcome=outcome, status=status,
                          studies=studies if studies is not None else _request_studies(scope),
                          method=scope["method"], path=path, **details)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


async def _refuse(send: Send, status: int, message: str, challenges: list[str]) -> None:
    body = json.dumps({"status": status, "error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"cache-control", b"no-store")]
    headers.extend((b"www-authenticate", c.encode("latin-1")) for c in challenges)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
