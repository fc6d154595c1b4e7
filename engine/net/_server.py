"""The DIMSE listener: a pynetdicom SCP for C-ECHO and C-STORE that hands received bytes to the archive."""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, Self, cast

from pynetdicom import AE, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event
from pynetdicom.transport import ThreadedAssociationServer

from engine.audit import AuditLog
from engine.codecs import syntax_for_codec
from engine.config import DicomSettings
from engine.errors import EngineError, IdentityMismatchError, InvalidDicomError
from engine.net import _receive as receive
from engine.net._access import STORE, ServiceAccess
from engine.net._contexts import SharedContexts, storage_sop_classes, supported_contexts
from engine.net._event_logs import match_event_logging
from engine.net._qr import QueryRetrieveService, QueryRetrieveTarget
from engine.net._send import TRANSPORT_HANDLERS, set_nodelay
from engine.net._status import SUCCESS, status_dataset, store_status
from engine.net._tls import start_tls_server
from engine.net._uid_checks import remember_uid_checks

if TYPE_CHECKING:
    from pynetdicom.association import Association

    from engine.archive import IngestResult

LOGGER = logging.getLogger(__name__)


class StoreTarget(Protocol):
    """What the listener needs from the archive."""

    def accept(self, data: bytes | memoryview, transfer_syntax_uid: str | None = None, *,
               named: tuple[str, str] | None = None) -> IngestResult: ...


@dataclass(slots=True)
class _Tally:
    """What one association did, for its log line at release."""

    calling_ae: str
    address: str
    started: float = field(default_factory=time.monotonic)
    stored: int = 0
    duplicate: int = 0
    replaced: int = 0
    refused: int = 0
    outcome: str = "closed"
    services: Counter[str] = field(default_factory=Counter)  # Q/R requests, matches, sub-operations


def _printable(text: str) -> str:
    """Peer-supplied text fit for one log line: control characters shown escaped, never obeyed."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def _peer(event: Event) -> tuple[str, str]:
    return _peer_of(event.assoc)


def _peer_of(assoc: Association) -> tuple[str, str]:
    requestor = assoc.requestor
    return _printable(str(requestor.ae_title).strip()), f"{requestor.address}:{requestor.port}"


class DicomServer:
    """A C-ECHO / C-STORE SCP in front of an archive, and its C-FIND / C-GET / C-MOVE SCP when the archive
    can be queried (see engine.net._qr).

    Every storage SOP class (see `storage_sop_classes`) in uncompressed and the common compressed
    transfer syntaxes; one thread per association. A C-STORE is answered with success only after the
    archive has made the instance durable; refusals carry a status from STORE_STATUS_TABLE and the
    reason in Error Comment.

    `ssl_context` (engine.security.server_ssl_context) makes it a TLS listener; `audit` receives one line per
    C-STORE, C-FIND, C-GET and C-MOVE and per refused association or request (see engine.net._access).
    """

    def __init__(self, archive: StoreTarget, settings: DicomSettings, *, max_associations: int = 32,
                 ssl_context: ssl.SSLContext | None = None, audit: AuditLog | None = None) -> None:
        self._archive = archive
        self._settings = settings
        self._max_associations = max_associations
        self._ssl_context = ssl_context
        self._access = ServiceAccess(settings, audit or AuditLog(None), _peer, self._services)
        self._server: ThreadedAssociationServer | None = None
        self._tallies: dict[int, _Tally] = {}
        self._lock = threading.Lock()
        self._storage_classes = frozenset(storage_sop_classes())
        remember_uid_checks()  # every association request repeats the same UIDs
        match_event_logging()

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port). Raises RuntimeError when not started."""
        if self._server is None:
            raise RuntimeError("the DICOM server is not started")
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> tuple[str, int]:
        """Listen on settings.host:settings.port (0 = ephemeral) in background threads; return (host, port).

        Raises OSError when the address cannot be bound.
        """
        if self._server is not None:
            return self.address
        ae = AE(ae_title=self._settings.ae_title)
        ae.maximum_pdu_size = self._settings.max_pdu
        ae.maximum_associations = self._max_associations
        ae.require_calling_aet = list(self._settings.allowed_calling_aes)
        ae.require_called_aet = self._settings.check_called_ae
        # Both are checked at association time, so they cover every service.
        query_retrieve = _is_query_retrieve_target(self._archive)
        handlers: list[Any] = [
            (evt.EVT_CONN_OPEN, self._on_conn_open),
            (evt.EVT_REQUESTED, self._access.on_requested),
            (evt.EVT_ESTABLISHED, self._on_established),
            (evt.EVT_REJECTED, self._on_rejected),
            (evt.EVT_RELEASED, self._on_ended, ["released"]),
            (evt.EVT_ABORTED, self._on_ended, ["aborted"]),
            (evt.EVT_CONN_CLOSE, self._on_conn_close),
            *TRANSPORT_HANDLERS,
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_C_ECHO, self._on_echo),
        ]
        if query_retrieve:
            qr = QueryRetrieveService(
                cast(QueryRetrieveTarget, self._archive),
                self._settings.ae_title,
                self._settings.remote_aes,
                self._settings.max_pdu,
                self._count_service,
                _stored_syntax(self._archive),
            )
            handlers.extend(self._access.guard(qr.handlers()))
            handlers.append((evt.EVT_REQUESTED, qr.on_requested))
        address = (self._settings.host, self._settings.port)
        server: ThreadedAssociationServer | None
        if self._ssl_context is not None:
            server = start_tls_server(ae, address, self._ssl_context, handlers,
                                      supported_contexts(query_retrieve), self._on_tls_failure)
        else:
            server = ae.start_server(address, block=False, evt_handlers=handlers,
                                     contexts=supported_contexts(query_retrieve))
        assert server is not None  # block=False always returns the server
        server.contexts = SharedContexts(server.contexts)  # copied per association: see SharedContexts
        self._server = server
        host, port = self.address
        LOGGER.info(
            "DICOM listener %s on %s:%d (%smax PDU %d, %s%s)",
            self._settings.ae_title,
            host,
            port,
            "TLS, " if self._ssl_context is not None else "",
            self._settings.max_pdu,
            "calling AEs " + ", ".join(self._settings.allowed_calling_aes)
            if self._settings.allowed_calling_aes
            else "any calling AE",
            ", called AE checked" if self._settings.check_called_ae else "",
        )
        return host, port

    def stop(self, grace: float = 5.0) -> None:
        """Stop accepting, let open associations finish for up to `grace` seconds, then abort them.

        Returns when every association thread has ended, so no C-STORE is still inside the archive.
        """
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        for assoc in server.active_associations:
            dul: Any = assoc.dul
            if assoc.requestor.primitive is None:  # connected, no A-ASSOCIATE-RQ yet: nothing to finish
                # An abort is no event of that state (Sta2: pynetdicom's reactor dies of it), and the
                # association would wait for the request until its ACSE timeout: 30 s of every stop,
                # measured. The timeout's own events end it now: the ARTIM timer's expiry (PS3.8 9.2, Evt18,
                # queued behind the connection's own Evt5) closes the connection, and nothing handed to the
                # association ends its wait for the request.
                LOGGER.info("closing a connection at shutdown that has not asked for an association")
                dul.event_queue.put("Evt18")
                dul.to_user_queue.put(None)
        deadline = time.monotonic() + grace
        for assoc in server.active_associations:
            assoc.join(max(0.0, deadline - time.monotonic()))
        for assoc in server.active_associations:
            LOGGER.warning("aborting association with %s at shutdown", str(assoc.requestor.ae_title).strip())
            assoc.abort()
            assoc.join()
        LOGGER.info("DICOM listener stopped")

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- event handlers (run in pynetdicom's threads) -------------------------------------------------
    def _on_conn_open(self, event: Event) -> None:
        # The SCU waits for each small C-STORE response; with Nagle on, a response can wait for the
        # peer's delayed ACK (DCMTK storescp without TCP_NODELAY=1 was measured at 21 inst/s, 468 with).
        set_nodelay(event)
        receive.claim(event.assoc)

    def _on_established(self, event: Event) -> None:
        calling_ae, address = _peer(event)
        with self._lock:
            self._tallies[id(event.assoc)] = _Tally(calling_ae, address)
        assoc = event.assoc
        try:
            receive.start(assoc, self._storage_classes, lambda *request: self._direct_store(assoc, *request))
        except Exception:  # e.g. no thread to be had: pynetdicom reads this association itself
            receive.unclaim(assoc)
            LOGGER.exception("C-STOREs from %s go through pynetdicom", calling_ae)

    def _on_rejected(self, event: Event) -> None:
        calling_ae, address = _peer(event)
        allowed = self._settings.allowed_calling_aes
        primitive = event.assoc.requestor.primitive
        called = str(getattr(primitive, "called_ae_title", "") or "").strip()
        if self._settings.check_called_ae and called != self._settings.ae_title.strip():
            # pynetdicom checks the called title after the calling one, so this is the reason it sent
            reason = f"called AE title {_printable(called)!r} is not this node's ([dicom] check_called_ae)"
        elif allowed and calling_ae not in allowed:
            reason = "calling AE title is not in [dicom] allowed_calling_aes"
        else:
            reason = f"too many associations (limit {self._max_associations})"
        LOGGER.warning("association from %s at %s rejected: %s", calling_ae, address, reason)
        self._access.audit.record("association", who=calling_ae, where=address, outcome="refused", reason=reason)

    def _on_tls_failure(self, address: str, reason: str) -> None:
        self._access.audit.record("association", who="unknown", where=address, outcome="refused",
                                  reason=f"TLS handshake failed: {reason}")

    def _on_ended(self, event: Event, outcome: str) -> None:
        with self._lock:
            tally = self._tallies.get(id(event.assoc))
        if tally is not None:
            tally.outcome = outcome

    def _on_conn_close(self, event: Event) -> None:
        with self._lock:
            tally = self._tallies.pop(id(event.assoc), None)
        if tally is None:  # never established: rejected or dropped during negotiation
            return
        LOGGER.info(
            "association from %s at %s %s after %.3f s: %d stored, %d already present, %d replaced, "
            "%d refused%s",
            tally.calling_ae,
            tally.address,
            tally.outcome,
            time.monotonic() - tally.started,
            tally.stored,
            tally.duplicate,
            tally.replaced,
            tally.refused,
            "".join(f", {what} {n}" for what, n in sorted(tally.services.items())),
        )

    def _services(self, event: Event) -> Counter[str] | None:
        with self._lock:
            tally = self._tallies.get(id(event.assoc))
        return tally.services if tally is not None else None

    def _count_service(self, event: Event, what: str, n: int) -> None:
        with self._lock:
            tally = self._tallies.get(id(event.assoc))
            if tally is not None:
                tally.services[what] += n

    def _on_echo(self, event: Event) -> int:
        """EVT_C_ECHO: success, counted for the association's log line as every other service is."""
        self._count_service(event, "C-ECHO", 1)
        return SUCCESS

    def _on_store(self, event: Event) -> Any:
        """EVT_C_STORE: a C-STORE pynetdicom read (the association did something else first; see _receive)."""
        request = cast(C_STORE, event.request)
        data = None if request.DataSet is None else request.DataSet.getvalue()
        return self._store(event.assoc, str(event.context.abstract_syntax), str(request.AffectedSOPClassUID or ""),
                           str(request.AffectedSOPInstanceUID or ""), data, str(event.context.transfer_syntax))

    def _direct_store(self, assoc: Association, context_class: str, sop_class: str, sop_uid: str,
                      data: bytes | None, syntax: str) -> tuple[int, str]:
        """A C-STORE engine.net._receive read off the socket: (status, error comment) for its response."""
        answer = self._store(assoc, context_class, sop_class, sop_uid, data, syntax)
        if isinstance(answer, int):
            return answer, ""
        return int(answer.Status), str(answer.get("ErrorComment", "") or "")

    def _store(self, assoc: Association, context_class: str, request_sop_class: str, request_sop_uid: str,
               data: bytes | None, syntax: str) -> Any:
        """Store one received data set; the status (an int, or a Dataset with Status and ErrorComment).

        `context_class` is the abstract syntax of the presentation context it came on; the request's
        SOP Class and Instance UIDs (its Affected ones) must be the data set's, and the class the context's.
        """
        sop_uid = _printable(request_sop_uid)
        calling_ae, address = _peer_of(assoc)
        with self._lock:
            tally = self._tallies.get(id(assoc))
        if not self._access.allows(STORE, calling_ae):
            if tally is not None:
                tally.refused += 1
            return self._access.refusal(STORE, calling_ae, address, "C-STORE")
        try:
            if data is None:
                raise InvalidDicomError("the C-STORE request carries no data set")
            if request_sop_class != context_class:
                raise IdentityMismatchError(f"SOP Class UID is not the context's: request "
                                            f"{request_sop_class or '(none)'}, context {context_class}")
            # The encoded data set exactly as the peer sent it: never decoded and re-encoded here.
            # Returns once the instance is durable (journalled or stored): then success may be sent.
            result = self._archive.accept(data, syntax, named=(request_sop_class, request_sop_uid))
        except Exception as exc:  # the edge answers every failure with a status, bugs included
            status = store_status(exc)
            reason = str(exc) if isinstance(exc, EngineError) else f"internal error: {type(exc).__name__}"
            if isinstance(exc, EngineError):
                LOGGER.warning(
                    "C-STORE refused: calling AE %s, address %s, SOP instance %s, status 0x%04X: %s",
                    calling_ae, address, sop_uid, status.code, exc,
                )
            else:
                LOGGER.exception(
                    "C-STORE failed: calling AE %s, address %s, SOP instance %s, status 0x%04X",
                    calling_ae, address, sop_uid, status.code,
                )
            if tally is not None:
                tally.refused += 1
            self._access.audit.record("C-STORE", who=calling_ae, where=address, outcome="failure",
                                      status=status.code, sop=sop_uid, reason=reason)
            return status_dataset(status.code, reason)
        if tally is not None:
            _count(tally, result.status)
        self._access.audit.record("C-STORE", who=calling_ae, where=address, outcome="success", status=SUCCESS,
                                  studies=[result.study_instance_uid], sop=result.sop_instance_uid,
                                  result=result.status)
        return SUCCESS


def _is_query_retrieve_target(archive: object) -> bool:
    """Whether the archive behind the listener can answer C-FIND / C-GET / C-MOVE (a store-only target cannot)."""
    return all(hasattr(archive, name) for name in ("index", "record", "read_dataset", "wait_for_ingests"))


def _stored_syntax(archive: object) -> str | None:
    """The transfer syntax the archive's pixel profile stores frames in (None for a target without one)."""
    settings = getattr(archive, "settings", None)
    profile = getattr(getattr(settings, "storage", None), "profile", None)
    return None if profile is None else syntax_for_codec(str(profile))


def _count(tally: _Tally, status: str) -> None:
    if status == "duplicate":
        tally.duplicate += 1
    elif status == "replaced":
        tally.replaced += 1
    else:
        tally.stored += 1
