"""Who may use which DIMSE service, and the audit trail of what they did.

Per-service calling-AE allow-lists ([dicom] allowed_store_aes, allowed_find_aes, allowed_retrieve_aes) on top
of the association-wide allowed_calling_aes. A refused C-STORE, C-FIND or C-GET is answered 0x0124
"Refused: Not authorized" (PS3.7 C.5.25; PS3.7 9.1.1.1.9 lists it for C-STORE) with the reason in Error
Comment. pynetdicom 3.0.4 cannot answer a C-MOVE with a failure before it has associated with the move
destination, so an AE that may not retrieve is offered no C-MOVE presentation context at all: it learns at
association time, and no third node is contacted on its behalf.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.events import Event

from engine.audit import AuditLog
from engine.config import DicomSettings
from engine.net._identifier import PATIENT_ROOT_MOVE, STUDY_ROOT_MOVE
from engine.net._status import status_dataset

LOGGER = logging.getLogger(__name__)

NOT_AUTHORIZED = 0x0124  # PS3.7 C.5.25 Refused: Not authorized
PENDING = (0xFF00, 0xFF01)
MOVE_DESTINATION_UNKNOWN = 0xA801  # PS3.4 Table C.4-2 Refused: Move Destination unknown
STORE, FIND, RETRIEVE = "store", "find", "retrieve"
MOVE_CLASSES = frozenset({STUDY_ROOT_MOVE, PATIENT_ROOT_MOVE})

Peer = Callable[[Event], tuple[str, str]]  # event -> (calling AE title, "ip:port")
Tally = Callable[[Event], "Counter[str] | None"]  # event -> the association's service counters


def _printable(text: str) -> str:
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def _code(status: object) -> int | None:
    if isinstance(status, int):
        return status
    value = getattr(status, "Status", None)
    return int(value) if value is not None else None


def _identifier_studies(event: Event) -> tuple[str, list[str]]:
    """(Query/Retrieve Level, Study Instance UIDs) of a request identifier; ("", []) when it cannot be read."""
    try:
        identifier: Dataset = event.identifier
        level = str(identifier.get("QueryRetrieveLevel", "") or "")
        value = identifier.get("StudyInstanceUID", None)
    except Exception:  # a malformed identifier is the handler's to refuse; the audit line just lacks it
        return "", []
    values = [] if value is None else [value] if isinstance(value, str) else list(value)
    return level, [_printable(str(v)) for v in values if v and "*" not in str(v) and "?" not in str(v)]


class ServiceAccess:
    """The per-service allow-lists of one listener, its audit trail, and the handler wrappers that apply them."""

    def __init__(self, settings: DicomSettings, audit: AuditLog, peer: Peer, tally: Tally) -> None:
        self._lists = {
            STORE: settings.allowed_store_aes,
            FIND: settings.allowed_find_aes,
            RETRIEVE: settings.allowed_retrieve_aes,
        }
        self._calling = settings.allowed_calling_aes
        self.audit = audit
        self._peer = peer
        self._tally = tally

    def allows(self, service: str, calling_ae: str) -> bool:
        allowed = self._lists[service]
        return not allowed or calling_ae in allowed

    def refusal(self, service: str, calling_ae: str, address: str, what: str) -> Dataset:
        """Log and audit a refused request; the 0x0124 status data set that answers it."""
        reason = f"calling AE {calling_ae} is not in [dicom] allowed_{service}_aes"
        LOGGER.warning("%s refused: %s at %s: %s", what, calling_ae, address, reason)
        self.audit.record(what, who=calling_ae, where=address, outcome="refused", status=NOT_AUTHORIZED,
                          reason=reason)
        return status_dataset(NOT_AUTHORIZED, f"{calling_ae} may not {service} here")

    # -- association time --------------------------------------------------------------------------
    def on_requested(self, event: Event) -> None:
        """EVT_REQUESTED: withdraw the C-MOVE contexts from an AE that may not retrieve."""
        # Before negotiation the calling AE title is only in the A-ASSOCIATE-RQ primitive.
        request = event.assoc.requestor.primitive
        calling_ae = _printable(str(getattr(request, "calling_ae_title", "") or "").strip())
        _, address = self._peer(event)
        if self.allows(RETRIEVE, calling_ae) or (self._calling and calling_ae not in self._calling):
            return  # allowed, or about to be rejected as a whole (and audited as such)
        acceptor = event.assoc.acceptor
        acceptor.supported_contexts = [c for c in acceptor.supported_contexts if c.abstract_syntax not in MOVE_CLASSES]
        proposed = {str(c.abstract_syntax) for c in event.assoc.requestor.requested_contexts}
        if proposed & MOVE_CLASSES:
            reason = f"calling AE {calling_ae} is not in [dicom] allowed_retrieve_aes"
            LOGGER.warning("C-MOVE contexts not accepted for %s at %s: %s", calling_ae, address, reason)
            self.audit.record("C-MOVE", who=calling_ae, where=address, outcome="refused", reason=reason)

    # -- Q/R handlers --------------------------------------------------------------------------------
    def guard(self, handlers: Iterable[tuple[Any, Callable[..., Any]]]) -> list[tuple[Any, Callable[..., Any]]]:
        """The C-FIND / C-GET / C-MOVE handlers wrapped: refused when the AE is not allowed, audited when run."""
        wrappers = {evt.EVT_C_FIND: self._find, evt.EVT_C_GET: self._get, evt.EVT_C_MOVE: self._move}
        return [(event, wrappers[event](handler) if event in wrappers else handler) for event, handler in handlers]

    def _find(self, handler: Callable[[Event], Iterator[Any]]) -> Callable[[Event], Iterator[Any]]:
        def on_find(event: Event) -> Iterator[Any]:
            calling_ae, address = self._peer(event)
            if not self.allows(FIND, calling_ae):
                yield self.refusal(FIND, calling_ae, address, "C-FIND"), None
                return
            level, studies = _identifier_studies(event)
            matches, final = 0, None
            try:
                for status, found in handler(event):
                    code = _code(status)
                    if code in PENDING:
                        matches += 1
                    else:
                        final = code
                    yield status, found
            finally:
                outcome = "success" if final in (None, 0) else "failure"
                self.audit.record("C-FIND", who=calling_ae, where=address, outcome=outcome, status=final or 0,
                                  studies=studies, level=level, matches=matches)

        return on_find

    def _get(self, handler: Callable[[Event], Iterator[Any]]) -> Callable[[Event], Iterator[Any]]:
        def on_get(event: Event) -> Iterator[Any]:
            calling_ae, address = self._peer(event)
            if not self.allows(RETRIEVE, calling_ae):
                yield 1
                yield self.refusal(RETRIEVE, calling_ae, address, "C-GET"), None
                return
            yield from self._audited_retrieve(event, handler(event), "C-GET", calling_ae, address)

        return on_get

    def _move(self, handler: Callable[[Event], Iterator[Any]]) -> Callable[[Event], Iterator[Any]]:
        def on_move(event: Event) -> Iterator[Any]:
            calling_ae, address = self._peer(event)
            if not self.allows(RETRIEVE, calling_ae):  # its contexts were withdrawn: only a defence in depth
                self.refusal(RETRIEVE, calling_ae, address, "C-MOVE")
                yield None, None
                return
            destination = _printable(str(event.move_destination or "").strip())
            yield from self._audited_retrieve(event, handler(event), "C-MOVE", calling_ae, address,
                                              destination=destination)

        return on_move

    def _audited_retrieve(self, event: Event, responses: Iterator[Any], what: str, calling_ae: str, address: str,
                          **details: str) -> Iterator[Any]:
        """Pass a C-GET / C-MOVE handler's yields through; then one audit line with the sub-operation counts."""
        level, studies = _identifier_studies(event)
        found = set(studies)
        tally = self._tally(event)
        before = Counter(tally) if tally is not None else Counter()
        final: int | None = None
        connecting = False  # pynetdicom is connecting to a C-MOVE's destination
        try:
            for number, item in enumerate(responses):
                if what == "C-MOVE" and number == 0:
                    if item == (None, None):  # not in [remote_aes]: pynetdicom answers A801
                        final = MOVE_DESTINATION_UNKNOWN
                elif what == "C-MOVE" and number == 1:
                    # With the number of sub-operations pynetdicom connects to the destination (none: it
                    # answers success without connecting).
                    connecting = isinstance(item, int) and item >= 1
                elif isinstance(item, tuple) and len(item) == 2:
                    code = _code(item[0])
                    if code is not None and code not in PENDING:
                        final = code
                    study = getattr(getattr(getattr(item[1], "_pacs_outgoing", None), "record", None),
                                    "study_instance_uid", None)
                    if isinstance(study, str):
                        found.add(study)
                yield item
                connecting = False  # asked for the next item: the destination association is made
        except GeneratorExit:
            if connecting:  # pynetdicom could not reach the destination, answered A801 and closed us
                final = MOVE_DESTINATION_UNKNOWN
                details = {**details, "reason": "the destination could not be reached"}
            raise
        finally:
            after = Counter(tally) if tally is not None else Counter()
            counts = {k: after[f"{what} {k}"] - before[f"{what} {k}"] for k in ("success", "warning", "failure")}
            if final is not None and final != 0:
                outcome = "failure"
            elif counts["failure"]:
                outcome = "warning" if counts["success"] + counts["warning"] else "failure"
            else:
                outcome = "success"
            self.audit.record(what, who=calling_ae, where=address, outcome=outcome, status=final, studies=found,
                              level=level, completed=counts["success"], warning=counts["warning"],
                              failed=counts["failure"], **details)
