"""Query/retrieve SCP: C-FIND answered by the index matcher, C-GET and C-MOVE sending stored bytes as they are.

pynetdicom runs the Q/R service state machine (sub-operation counts, the final response, C-CANCEL on a
C-MOVE's association); the handlers here say what matches and hand it instances to send. An instance
travels as a marker Dataset; the association's send_c_store (wrapped here) answers it from the retrieve's
`StorePipeline`, which has written the C-STOREs straight to the socket in the best transfer syntax the peer
accepted: the stored one (no decoding), else the original, else explicit or implicit VR little endian.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag
from pydicom.uid import UID
from pynetdicom import evt
from pynetdicom.dimse_primitives import C_FIND, C_GET, C_MOVE

from engine.dicom import single_uid
from engine.errors import EngineError
from engine.index import Index, InvalidQueryError, find, instances_by_unique_keys, unsupported_keys
from engine.net._identifier import (
    QueryRequest,
    missing_unique_key,
    read_request,
    response_identifier,
    retrieve_criteria,
)
from engine.net._lease import wait_for_backlog
from engine.net._pipeline import (
    PENDING_INTERVAL,
    GetProgress,
    PendingFilter,
    StorePipeline,
    SubOperation,
)
from engine.net._send import (
    TRANSPORT_HANDLERS,
    StoreResult,
    choose_context,
    outgoing_contexts,
    preferred_syntaxes,
    set_nodelay,
)
from engine.net._status import status_dataset
from engine.types import DEFLATED_EXPLICIT_VR_LE, EXPLICIT_VR_BE, LOSSLESS_ENCAPSULATED_SYNTAXES, InstanceRecord

if TYPE_CHECKING:
    from pynetdicom.association import Association
    from pynetdicom.events import Event

LOGGER = logging.getLogger(__name__)

PENDING = 0xFF00
FIND_BACKLOG = 32  # C-FIND responses queued ahead of the socket at most (see wait_for_backlog)
PENDING_KEYS_UNSUPPORTED = 0xFF01  # Pending: optional keys were not supported for matching (PS3.4 C.4.1.1.4)
CANCELLED = 0xFE00
IDENTIFIER_MISMATCH = 0xA900  # Failure: Identifier does not match SOP Class
UNABLE_TO_PROCESS = 0xC000  # Failure: Unable to process
UNABLE_TO_PERFORM_SUB_OPERATIONS = 0xA702  # Refused: Out of Resources - Unable to perform sub-operations

# What a peer that took none of an instance's preferred syntaxes may still get: the other native syntaxes
# (a decode, as for explicit VR), then the lossless compressed ones (a decode and an encode). An old
# workstation that accepts only big endian or deflated data sets is sent them rather than nothing.
TRANSCODED = (DEFLATED_EXPLICIT_VR_LE, EXPLICIT_VR_BE, *sorted(LOSSLESS_ENCAPSULATED_SYNTAXES))

Counter = Callable[["Event", str, int], None]  # (event, what, how many): the association's tally


class QueryRetrieveTarget(Protocol):
    """What the Q/R services need from the archive."""

    @property
    def index(self) -> Index: ...

    def wait_for_ingests(
        self, timeout: float | None = None, *, study: str | None = None, series: str | None = None,
        stored: bool = True,
    ) -> None: ...

    def record(self, sop_uid: str) -> InstanceRecord: ...

    def read_dataset(self, sop_uid: str, syntax: str = "original") -> tuple[str, bytes | bytearray]: ...


class _Retrieve:
    """One C-GET's or C-MOVE's instances and, from the first sub-operation on, the pipeline sending them."""

    def __init__(self, archive: QueryRetrieveTarget, records: list[InstanceRecord],
                 get: GetProgress | None = None) -> None:
        self._archive = archive
        self.records = records
        self._get = get
        self._pipeline: StorePipeline | None = None
        self._lock = threading.Lock()

    @property
    def cancelled(self) -> bool:
        """The peer cancelled a C-GET on the association the sub-operations use (the pipeline read it)."""
        return self._pipeline is not None and self._pipeline.cancelled

    @property
    def broken(self) -> str | None:
        """Why the association the sub-operations go on failed (a C-MOVE destination gone), if it did."""
        return None if self._pipeline is None else self._pipeline.broken

    def result(self, assoc: Association, index: int, msg_id: int, originator: tuple[str, int] | None
               ) -> StoreResult:
        with self._lock:
            if self._pipeline is None:
                self._pipeline = StorePipeline(assoc, self._plan(assoc), self._read, first_message_id=msg_id,
                                               originator=originator, progress=self._get).start()
        return self._pipeline.result(index)

    def answered(self, index: int) -> bool:
        """Whether the index-th sub-operation was sent and answered (the pipeline runs ahead of pynetdicom)."""
        with self._lock:
            return self._pipeline is not None and self._pipeline.answered(index)

    def close(self) -> None:
        """Stop sending (a cancel, the end) and hand the association back to pynetdicom."""
        with self._lock:
            if self._pipeline is not None:
                self._pipeline.close()

    def _plan(self, assoc: Association) -> list[SubOperation]:
        """Each instance with the accepted context of the best syntax for it: stored, original, uncompressed,
        else any other syntax the archive can write (transcoded: slower, but the instance gets there)."""
        plan = []
        # A series is one SOP class in one or two stored forms: choose once per (class, syntaxes), since
        # pynetdicom builds its list of accepted contexts anew at every call.
        chosen: dict[tuple[str, tuple[str, ...]], tuple[int | None, str]] = {}
        for record in self.records:
            syntaxes = preferred_syntaxes(record)
            key = (record.sop_class_uid, syntaxes)
            if key not in chosen:
                context = choose_context(assoc, record.sop_class_uid, syntaxes)
                if context is None:  # e.g. a C-GET context accepted in the profile's syntax, another one stored
                    context = choose_context(assoc, record.sop_class_uid, TRANSCODED)
                if context is None:
                    LOGGER.warning("no accepted presentation context for %s in %s", record.sop_class_uid,
                                   ", ".join(syntaxes))
                chosen[key] = (None, "") if context is None else (context.context_id, str(context.transfer_syntax[0]))
            context_id, syntax = chosen[key]
            plan.append(SubOperation(record.sop_class_uid, record.sop_instance_uid, context_id, syntax))
        return plan

    def _read(self, operation: SubOperation) -> bytes | bytearray:
        return self._archive.read_dataset(operation.sop_uid, operation.syntax)[1]


@dataclass(frozen=True, slots=True)
class _Outgoing:
    """Which instance of which retrieve a marker Dataset stands for."""

    job: _Retrieve
    index: int

    @property
    def record(self) -> InstanceRecord:
        """The instance's index record (the audit reads its study from it)."""
        return self.job.records[self.index]


_SOP_CLASS_UID, _SOP_INSTANCE_UID = 0x00080016, 0x00080018


def _uid_element(tag: int, uid: str) -> RawDataElement:
    value = uid.encode("ascii")
    value += b"\0" * (len(value) % 2)  # UI pads to even length with NUL
    return RawDataElement(BaseTag(tag), "UI", len(value), value, 0, False, True)


def _marker(job: _Retrieve, index: int) -> Dataset:
    """The Dataset pynetdicom carries from a handler to send_c_store: the instance, not its content.

    Its UIDs go in as raw elements, decoded only if pynetdicom reads them (to list a failed instance).
    Set as attributes they cost 44 us per sub-operation on pynetdicom's thread, which shares the GIL
    with the thread that sends.
    """
    record = job.records[index]
    ds = Dataset()
    ds[_SOP_INSTANCE_UID] = _uid_element(_SOP_INSTANCE_UID, record.sop_instance_uid)
    ds[_SOP_CLASS_UID] = _uid_element(_SOP_CLASS_UID, record.sop_class_uid)
    ds._pacs_outgoing = _Outgoing(job, index)
    return ds


def _new_status(status: int | None) -> Dataset:
    ds = Dataset()
    if status is not None:  # an empty Dataset is pynetdicom's "no response": counted as failed
        ds.Status = status
    return ds


_SUCCESS_STATUS = _new_status(0x0000)  # shared: pynetdicom only reads it


def _status(result: StoreResult) -> Dataset:
    """The status Dataset pynetdicom reads a sub-operation's outcome from; success (nearly every one)
    is one shared Dataset, where one per sub-operation cost 27 us."""
    return _SUCCESS_STATUS if result.status == 0x0000 else _new_status(result.status)


class QueryRetrieveService:
    """The C-FIND, C-GET and C-MOVE handlers of one listener."""

    def __init__(self, archive: QueryRetrieveTarget, ae_title: str, remote_aes: Mapping[str, str], max_pdu: int,
                 count: Counter, stored_syntax: str | None = None) -> None:
        self._archive = archive
        self._stored_syntax = stored_syntax
        self._ae_title = ae_title
        self._remote = dict(remote_aes)
        self._max_pdu = max_pdu
        self._count = count

    def handlers(self) -> list[tuple[Any, Callable[..., Any]]]:
        return [(evt.EVT_C_FIND, self.on_find), (evt.EVT_C_GET, self.on_get), (evt.EVT_C_MOVE, self.on_move)]

    def on_requested(self, event: Event) -> None:
        """EVT_REQUESTED: accept a C-GET requestor's storage contexts in the archive's stored syntax if offered.

        pynetdicom accepts, per context, the first syntax of the acceptor's list the requestor proposed,
        and that list puts uncompressed first (what an archive wants to receive). For the contexts a C-GET
        requestor offers to receive on (SCP role, PS3.7 D.3.3.4) the archive sends instead: its stored
        syntax first means no decoding (DCMTK getscu +xt: JPEG-LS, proposed first, was decoded to explicit
        VR little endian). Only this association's copy of the contexts changes.
        """
        stored = self._stored_syntax
        receivers = {uid for uid, item in event.assoc.requestor.role_selection.items() if item.scp_role}
        if stored is None or not receivers:
            return
        first = UID(stored)
        for cx in event.assoc.acceptor.supported_contexts:
            # In place: the property gives the context's own list of the UIDs pynetdicom made and checked.
            # Assigning a new list checks each one again: 20-27 ms an association for the 120 storage
            # contexts getscu offers to receive on.
            syntaxes = cx.transfer_syntax
            if cx.abstract_syntax in receivers and first in syntaxes:
                syntaxes.insert(0, syntaxes.pop(syntaxes.index(first)))

    # -- C-FIND -------------------------------------------------------------------------------------
    def on_find(self, event: Event) -> Iterator[tuple[int | Dataset, Dataset | None]]:
        request_primitive = cast(C_FIND, event.request)
        self._count(event, "C-FIND", 1)
        try:
            request = read_request(event.identifier, str(request_primitive.AffectedSOPClassUID))
        except (InvalidQueryError, KeyError, ValueError) as exc:
            LOGGER.warning("C-FIND refused: %s", exc)
            yield status_dataset(IDENTIFIER_MISMATCH, str(exc)), None
            return
        self._wait_for(request.criteria, stored=False)  # a peer that just stored expects to find it
        fields = [key.keyword for key in request.requested if key.keyword]
        matches = 0
        try:
            ignored = unsupported_keys(request.criteria)
            pending = PENDING_KEYS_UNSUPPORTED if ignored else PENDING
            if ignored:
                LOGGER.info("C-FIND: %s not supported for matching, matched as universal", ", ".join(ignored))
            for match in find(self._archive.index, request.level, request.criteria, model=request.model,
                              fields=fields):
                if event.is_cancelled:
                    LOGGER.info("C-FIND cancelled by the peer after %d matches", matches)
                    self._count(event, "C-FIND cancelled", 1)
                    yield CANCELLED, None
                    return
                matches += 1
                yield pending, response_identifier(request, match, self._ae_title)
                wait_for_backlog(event.assoc, FIND_BACKLOG)  # so the DUL reads a C-CANCEL soon
        except InvalidQueryError as exc:
            yield status_dataset(IDENTIFIER_MISMATCH, str(exc)), None
            return
        except EngineError as exc:
            LOGGER.error("C-FIND failed: %s", exc)
            yield status_dataset(UNABLE_TO_PROCESS, str(exc)), None
            return
        finally:
            self._count(event, "C-FIND matches", matches)
        LOGGER.debug("C-FIND %s level: %d matches", request.level, matches)

    def _wait_for(self, criteria: Mapping[str, str], *, stored: bool = True) -> None:
        """Wait for instances acknowledged and not stored yet (with `stored` False: not visible yet), only
        those of the study / series asked for if one is."""
        self._archive.wait_for_ingests(study=single_uid(criteria.get("StudyInstanceUID")),
                                       series=single_uid(criteria.get("SeriesInstanceUID")), stored=stored)

    # -- what a retrieve sends ----------------------------------------------------------------------
    def _records(self, request: QueryRequest) -> list[InstanceRecord]:
        """Instance records a C-GET / C-MOVE identifier selects, in series order."""
        self._wait_for(request.criteria)
        criteria = retrieve_criteria(request)
        sops = instances_by_unique_keys(self._archive.index, criteria)
        if sops is None:  # an instance-level retrieve: a few instances, through the matcher
            sops = [str(m["SOPInstanceUID"]) for m in find(self._archive.index, "IMAGE", criteria, model=request.model)]
        return self._archive.index.get_instances(sops)

    def _selection(self, event: Event, sop_class: str) -> tuple[list[InstanceRecord], Dataset | None]:
        """(records, None) or ([], failure status) for a retrieve identifier."""
        try:
            request = read_request(event.identifier, sop_class)
            missing = missing_unique_key(request)
            if missing:
                raise InvalidQueryError(f"a {request.level} level retrieve needs {missing}")
            return self._records(request), None
        except (InvalidQueryError, KeyError, ValueError) as exc:
            LOGGER.warning("retrieve refused: %s", exc)
            return [], status_dataset(IDENTIFIER_MISMATCH, str(exc))
        except EngineError as exc:
            LOGGER.error("retrieve failed: %s", exc)
            return [], status_dataset(UNABLE_TO_PROCESS, str(exc))

    def _sub_operations(self, event: Event, job: _Retrieve, what: str) -> Iterator[tuple[int, Dataset]]:
        try:
            for index in range(len(job.records)):
                if event.is_cancelled or job.cancelled:
                    job.close()  # before the cancel response: nothing is sent after it
                    # The pipeline runs ahead of pynetdicom: what it had sent when the cancel came is
                    # counted as what it is (the peer holds it), the rest stays remaining (PS3.4 C.4.2.3.1).
                    while index < len(job.records) and job.answered(index):
                        yield PENDING, _marker(job, index)
                        index += 1
                    LOGGER.info("%s cancelled by the peer after %d of %d instances", what, index, len(job.records))
                    self._count(event, f"{what} cancelled", 1)
                    yield CANCELLED, Dataset()
                    return
                if job.broken is not None:
                    # Nothing more can be sent: the rest would each fail with a line of pynetdicom's (261 for
                    # a destination killed mid-series). What was answered counts; the final response says
                    # A702 with the rest remaining (PS3.4 C.4.2.1.5, Table C.4-2).
                    while index < len(job.records) and job.answered(index):
                        yield PENDING, _marker(job, index)
                        index += 1
                    LOGGER.warning("%s sub-operations stopped after %d of %d instances: %s", what, index,
                                   len(job.records), job.broken)
                    yield UNABLE_TO_PERFORM_SUB_OPERATIONS, Dataset()
                    return
                yield PENDING, _marker(job, index)
        finally:
            job.close()  # before pynetdicom sends the final response on the association the pipeline held

    # -- C-GET --------------------------------------------------------------------------------------
    def on_get(self, event: Event) -> Iterator[Any]:
        self._count(event, "C-GET", 1)
        request = cast(C_GET, event.request)
        wrap_send_c_store(event.assoc, self._count_store(event, "C-GET"))
        records, failure = self._selection(event, str(request.AffectedSOPClassUID))
        if failure is not None:
            yield 1
            yield failure, None
            return
        yield len(records)
        progress = GetProgress(event.context.context_id, str(request.AffectedSOPClassUID),
                               cast(int, request.MessageID))
        yield from self._sub_operations(event, _Retrieve(self._archive, records, progress), "C-GET")

    # -- C-MOVE -------------------------------------------------------------------------------------
    def on_move(self, event: Event) -> Iterator[Any]:
        self._count(event, "C-MOVE", 1)
        destination = (event.move_destination or "").strip()
        address = self._remote.get(destination)
        if address is None:
            LOGGER.warning("C-MOVE refused: destination %r is not in [remote_aes]", destination)
            yield None, None  # pynetdicom answers 0xA801 Move Destination unknown
            return
        host, _, port = address.rpartition(":")
        records, failure = self._selection(event, str(cast(C_MOVE, event.request).AffectedSOPClassUID))
        contexts = outgoing_contexts((r.sop_class_uid, preferred_syntaxes(r)) for r in records)
        counter = self._count_store(event, "C-MOVE")
        # PS3.7 9.1.1.1: the sub-operations name the AE that asked for the move (pynetdicom names this one)
        originator = event.assoc.requestor.ae_title
        handlers = [
            (evt.EVT_CONN_OPEN, set_nodelay),
            *TRANSPORT_HANDLERS,
            (evt.EVT_ESTABLISHED, lambda e: wrap_send_c_store(e.assoc, counter, originator_ae=originator)),
        ]
        if not contexts:  # no match or a failure: the destination association is never made
            contexts = outgoing_contexts([("1.2.840.10008.5.1.4.1.1.7", ())])
        yield host, int(port), {"contexts": contexts, "max_pdu": self._max_pdu, "evt_handlers": handlers}
        if failure is not None:
            yield 1
            yield failure, None
            return
        yield len(records)
        with PendingFilter(event.assoc, C_MOVE, PENDING_INTERVAL):
            yield from self._sub_operations(event, _Retrieve(self._archive, records), "C-MOVE")

    def _count_store(self, event: Event, what: str) -> Callable[[StoreResult], None]:
        def count(result: StoreResult) -> None:
            self._count(event, f"{what} {result.category}", 1)

        return count

def wrap_send_c_store(assoc: Association, on_result: Callable[[StoreResult], None], *,
                      originator_ae: str | None = None) -> None:
    """Make `assoc.send_c_store` answer marker Datasets from their retrieve's pipeline; others go to pynetdicom.

    `originator_ae` replaces the Move Originator AE Title pynetdicom passes (its own AE's). Only this
    association object changes (an instance attribute), nothing global. Idempotent.
    """
    if getattr(assoc, "_pacs_wrapped", False):
        return
    original = assoc.send_c_store

    @functools.wraps(original)
    def send_c_store(dataset: Any, msg_id: int = 1, priority: int = 2, originator_aet: str | None = None,
                     originator_id: int | None = None) -> Dataset:
        outgoing = getattr(dataset, "_pacs_outgoing", None)
        if not isinstance(outgoing, _Outgoing):
            return original(dataset, msg_id=msg_id, priority=priority, originator_aet=originator_aet,
                            originator_id=originator_id)
        originator_aet = originator_ae or originator_aet
        originator = (originator_aet, originator_id) if originator_aet and originator_id is not None else None
        result = outgoing.job.result(assoc, outgoing.index, msg_id, originator)
        on_result(result)
        return _status(result)

    assoc.send_c_store = send_c_store  # type: ignore[method-assign]
    assoc._pacs_wrapped = True  # type: ignore[attr-defined]
