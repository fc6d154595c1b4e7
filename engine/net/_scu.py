"""The SCU side for operators and migrations: echo, send, find, get and move against another DICOM node.

Associations use large PDUs and TCP_NODELAY; instances travel as encoded bytes (never decoded here), and
C-GET proposes, per SOP class, the archive's stored syntaxes alone in their own contexts so a peer that
holds them can send them as they are.
"""

from __future__ import annotations

import logging
import re
import ssl
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pynetdicom import AE, build_role, evt
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext, build_context

from engine.errors import EngineError
from engine.net._contexts import VERIFICATION_SOP_CLASS
from engine.net._event_logs import match_event_logging
from engine.net._get_scu import get_responses
from engine.net._identifier import (
    PATIENT_ROOT_FIND,
    PATIENT_ROOT_GET,
    PATIENT_ROOT_MOVE,
    STUDY_ROOT_FIND,
    STUDY_ROOT_GET,
    STUDY_ROOT_MOVE,
)
from engine.net._pipeline import StorePipeline, SubOperation
from engine.net._send import (
    MAX_CONTEXTS,
    TRANSPORT_HANDLERS,
    StoreResult,
    choose_context,
    outgoing_contexts,
    set_nodelay,
)
from engine.net._uid_checks import remember_uid_checks
from engine.net._wire import WireError
from engine.types import (
    EXPLICIT_VR_LE,
    HTJ2K,
    HTJ2K_LOSSLESS,
    HTJ2K_LOSSLESS_RPCL,
    IMPLICIT_VR_LE,
    JPEG2000,
    JPEG2000_LOSSLESS,
    JPEG_BASELINE,
    JPEG_EXTENDED,
    JPEG_LOSSLESS_SV1,
    JPEGLS_LOSSLESS,
    JPEGLS_NEAR_LOSSLESS,
    RLE_LOSSLESS,
)

LOGGER = logging.getLogger(__name__)

_PEER = re.compile(r"^(?P<ae>[^@]{1,16})@(?P<host>\[[^\]]+\]|[^:]+):(?P<port>\d{1,5})$")
FIND_MODELS = {"STUDY": STUDY_ROOT_FIND, "PATIENT": PATIENT_ROOT_FIND}
GET_MODELS = {"STUDY": STUDY_ROOT_GET, "PATIENT": PATIENT_ROOT_GET}
MOVE_MODELS = {"STUDY": STUDY_ROOT_MOVE, "PATIENT": PATIENT_ROOT_MOVE}
# Syntaxes a C-GET proposes per SOP class, each in its own context: uncompressed first (every peer can),
# then what peers and this archive store without loss, then the lossy ones a peer may hold as received.
GET_SYNTAXES: tuple[tuple[str, ...], ...] = (
    (EXPLICIT_VR_LE, IMPLICIT_VR_LE),
    (HTJ2K_LOSSLESS_RPCL,),
    (JPEGLS_LOSSLESS,),
    (JPEG2000_LOSSLESS,),
    (JPEG_LOSSLESS_SV1,),
    (RLE_LOSSLESS,),
    (HTJ2K_LOSSLESS,),
    (JPEG_BASELINE,),
    (JPEG_EXTENDED,),
    (JPEG2000,),
    (JPEGLS_NEAR_LOSSLESS,),
    (HTJ2K,),
)
# Storage classes a C-GET proposes when the peer does not say which classes the instances have.
COMMON_STORAGE_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.2",  # CT
    "1.2.840.10008.5.1.4.1.1.4",  # MR
    "1.2.840.10008.5.1.4.1.1.1",  # CR
    "1.2.840.10008.5.1.4.1.1.1.1",  # DX
    "1.2.840.10008.5.1.4.1.1.6.1",  # US
    "1.2.840.10008.5.1.4.1.1.7",  # SC
    "1.2.840.10008.5.1.4.1.1.128",  # PET
    "1.2.840.10008.5.1.4.1.1.88.22",  # Enhanced SR
)


class ScuError(EngineError):
    """The peer could not be reached, refused the association, or answered a request with a failure.

    `summary` is what a get or move that ended so had done by then (None before any response).
    """

    def __init__(self, message: str, summary: TransferSummary | None = None) -> None:
        super().__init__(message)
        self.summary = summary


@dataclass(frozen=True, slots=True)
class Peer:
    """A remote DICOM node: AE title, host and port."""

    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Peer:
        """'AE@host:port' (IPv6 hosts in brackets). Raises ScuError when it is not that."""
        match = _PEER.match(text.strip())
        if match is None or not 0 < int(match["port"]) <= 65535:
            raise ScuError(f"{text!r} is not AE@host:port (e.g. PACS@10.0.0.5:104)")
        return cls(match["ae"], match["host"].strip("[]"), int(match["port"]))

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ScuOptions:
    """How this side associates: its calling AE title, maximum PDU, timeouts, and TLS when `tls` is given."""

    calling_ae: str = "PACS_ENGINE"
    max_pdu: int = 262_144
    timeout: float = 30.0  # ACSE and connection timeout
    dimse_timeout: float | None = 600.0  # a peer computing a large query may take long
    tls: ssl.SSLContext | None = None  # engine.security.client_ssl_context: verifies the peer's certificate


@dataclass(slots=True)
class TransferSummary:
    """What a send / get / move did: sub-operation counts, bytes, and the SOP UIDs that failed."""

    completed: int = 0
    warning: int = 0
    failed: int = 0
    remaining: int = 0
    bytes: int = 0
    status: int | None = None  # final C-GET / C-MOVE status
    failed_uids: list[str] = field(default_factory=list)


def _associate(peer: Peer, options: ScuOptions, contexts: Sequence[PresentationContext],
               ext_neg: Sequence[Any] = (), handlers: Sequence[Any] = ()) -> Association:
    remember_uid_checks()
    match_event_logging()
    ae = AE(ae_title=options.calling_ae)
    ae.acse_timeout = options.timeout
    ae.connection_timeout = options.timeout
    ae.dimse_timeout = options.dimse_timeout
    ae.maximum_pdu_size = options.max_pdu
    with warnings.catch_warnings():
        # pynetdicom 3.0.4 drops the socket of a refused TCP connection without closing it (its shutdown
        # raises first); the interpreter closes it with a ResourceWarning, which says nothing to an operator.
        warnings.simplefilter("ignore", ResourceWarning)
        assoc = ae.associate(peer.host, peer.port, contexts=list(contexts), ae_title=peer.ae_title,
                             max_pdu=options.max_pdu, ext_neg=list(ext_neg) or None,
                             evt_handlers=[(evt.EVT_CONN_OPEN, set_nodelay), *TRANSPORT_HANDLERS, *handlers],
                             tls_args=(options.tls, peer.host) if options.tls is not None else None)
    if not assoc.is_established:
        raise ScuError(f"association with {peer} {_why_not(assoc, options, contexts)}")
    return assoc


def _why_not(assoc: Association, options: ScuOptions, contexts: Sequence[PresentationContext]) -> str:
    """Why an association was not established, as the peer said it (PS3.8 9.3.4) when it said anything."""
    answer = assoc.acceptor.primitive
    if assoc.is_rejected and answer is not None:
        return (f"rejected: {answer.result_str}, {answer.source_str}: {answer.reason_str} "
                "(is the AE title right, and are we allowed?)")
    if answer is not None and answer.result == 0x00:  # accepted, then aborted by pynetdicom: no context
        classes = ", ".join(sorted({str(cx.abstract_syntax.name) for cx in contexts if cx.abstract_syntax}))
        return f"accepted none of the presentation contexts proposed ({classes})"
    if options.tls is not None:
        return "aborted (does the peer speak TLS, and does its certificate verify?)"
    return "aborted or not answered (is the address right, and does the peer need TLS (--tls)?)"


def scu_echo(peer: Peer, options: ScuOptions = ScuOptions()) -> int:
    """One C-ECHO; returns the status (0 is success). Raises ScuError when no association is made."""
    assoc = _associate(peer, options, [build_context(VERIFICATION_SOP_CLASS, [EXPLICIT_VR_LE, IMPLICIT_VR_LE])])
    try:
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    if "Status" not in status:
        raise ScuError(f"{peer} did not answer the C-ECHO")
    return int(status.Status)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """An instance to send: SOP class and instance, its syntaxes best first, and how to read it in one."""

    sop_class: str
    sop_instance: str
    syntaxes: tuple[str, ...]
    read: Callable[[str], bytes | bytearray]  # syntax -> data set bytes in it (no file meta)


def scu_send(peer: Peer, items: Sequence[Outgoing], options: ScuOptions = ScuOptions(),
         progress: Callable[[StoreResult, int], None] | None = None) -> TransferSummary:
    """C-STORE every item on one association (more when 128 contexts do not suffice), bytes as they are.

    `progress(result, size)` is called after each instance. Raises ScuError when no association is made.
    """
    summary = TransferSummary()
    for batch in _context_batches(items):
        contexts = outgoing_contexts((i.sop_class, i.syntaxes) for i in batch)
        assoc = _associate(peer, options, contexts)
        plan = [_plan(assoc, item) for item in batch]
        pipeline = StorePipeline(assoc, plan, _reader(plan, batch), first_message_id=1)
        try:
            pipeline.start()
            for number, item in enumerate(batch, start=1):
                result = pipeline.result(number - 1)
                size = pipeline.sizes[number - 1]
                _tally(summary, result, item.sop_instance, size)
                if progress is not None:
                    progress(result, size)
                if pipeline.broken is not None or not assoc.is_established:
                    raise ScuError(f"{peer} ended the association after {number} of {len(batch)} instances"
                                   f"{': ' + pipeline.broken if pipeline.broken else ''}")
        finally:
            pipeline.close()
            if assoc.is_established:
                assoc.release()
    return summary


def _context_batches(items: Sequence[Outgoing]) -> Iterator[list[Outgoing]]:
    """Consecutive groups of items whose proposed contexts fit one association."""
    batch: list[Outgoing] = []
    for item in items:
        if batch and len(outgoing_contexts((i.sop_class, i.syntaxes) for i in [*batch, item])) >= MAX_CONTEXTS:
            yield batch
            batch = []
        batch.append(item)
    if batch:
        yield batch


def _plan(assoc: Association, item: Outgoing) -> SubOperation:
    """The item with the accepted context of the first of its syntaxes the peer took (None: no context)."""
    context = choose_context(assoc, item.sop_class, item.syntaxes)
    if context is None:
        LOGGER.warning("%s accepted no context for %s in %s", assoc.acceptor.ae_title, item.sop_class,
                       ", ".join(item.syntaxes))
        return SubOperation(item.sop_class, item.sop_instance, None, "")
    return SubOperation(item.sop_class, item.sop_instance, context.context_id, str(context.transfer_syntax[0]))


def _reader(plan: Sequence[SubOperation], batch: Sequence[Outgoing]) -> Callable[[SubOperation], bytes | bytearray]:
    """Read the item each planned operation stands for: by the operation itself, not its SOP Instance UID,
    which two files being sent may share (the second file's content went out twice)."""
    items = {id(operation): item for operation, item in zip(plan, batch, strict=True)}
    return lambda operation: items[id(operation)].read(operation.syntax)


def _tally(summary: TransferSummary, result: StoreResult, sop: str, size: int) -> None:
    if result.category == "success":
        summary.completed += 1
        summary.bytes += size
    elif result.category == "warning":
        summary.warning += 1
        summary.bytes += size
    else:
        summary.failed += 1
        summary.failed_uids.append(sop)
        LOGGER.warning("C-STORE of %s failed: status %s %s", sop,
                       "none" if result.status is None else f"0x{result.status:04X}", result.comment)


# --- find ---------------------------------------------------------------------------------------------


def identifier(level: str, keys: Mapping[str, str]) -> Dataset:
    """A request identifier: Query/Retrieve Level plus `keys` (keyword -> value, "" to ask for a value).

    Raises ScuError for a keyword that is not in the DICOM dictionary.
    """
    ds = Dataset()
    ds.QueryRetrieveLevel = level.upper()
    for keyword, value in keys.items():
        tag = tag_for_keyword(keyword)
        if tag is None:
            raise ScuError(f"{keyword!r} is not a DICOM keyword (e.g. PatientID, StudyDate, ModalitiesInStudy)")
        if any(ord(c) > 127 for c in value):
            ds.SpecificCharacterSet = "ISO_IR 192"
        vr = dictionary_VR(tag)
        try:
            ds.add_new(tag, vr, value if value != "" else None)
        except (ValueError, TypeError, OverflowError) as exc:  # a number key given text, a wild card or a range
            raise ScuError(f"{keyword}={value} does not fit its VR {vr} ({exc}); wild cards match text keys "
                           "only, ranges dates and times (PS3.4 C.2.2.2)") from None
    return ds


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple, MultiValue)):
        return "\\".join(_text(v) for v in value)
    return str(value)


def scu_find(peer: Peer, level: str, keys: Mapping[str, str], *, model: str = "STUDY",
         options: ScuOptions = ScuOptions()) -> Iterator[dict[str, str]]:
    """C-FIND: yields each match as keyword -> value text. Raises ScuError on failure statuses."""
    sop_class = FIND_MODELS[model.upper()]
    assoc = _associate(peer, options, [build_context(sop_class, [EXPLICIT_VR_LE, IMPLICIT_VR_LE])])
    try:
        for status, found in assoc.send_c_find(identifier(level, keys), sop_class):
            code = status.get("Status")
            if code is None:
                raise ScuError(f"{peer} did not answer the C-FIND (DIMSE timeout or association ended)")
            if code in (0xFF00, 0xFF01):
                if found is not None:
                    yield {e.keyword: _text(e.value) for e in found if e.keyword and e.VR != "SQ"}
            elif code != 0x0000:
                raise ScuError(f"{peer} answered C-FIND with status 0x{int(code):04X}: "
                               f"{status.get('ErrorComment', '')}")
    finally:
        if assoc.is_established:
            assoc.release()


# --- get and move -------------------------------------------------------------------------------------


def get_contexts(sop_classes: Iterable[str], model: str) -> tuple[list[PresentationContext], list[Any]]:
    """Contexts and SCP/SCU role items for a C-GET: the Get model plus, per class, each syntax group alone."""
    contexts = [build_context(GET_MODELS[model.upper()], [EXPLICIT_VR_LE, IMPLICIT_VR_LE])]
    classes = list(dict.fromkeys(sop_classes)) or list(COMMON_STORAGE_CLASSES)
    for syntaxes in GET_SYNTAXES:
        for uid in classes:
            if len(contexts) < MAX_CONTEXTS:
                contexts.append(build_context(uid, list(syntaxes)))
    return contexts, [build_role(uid, scp_role=True) for uid in classes]


Receiver = Callable[[bytes, str], None]  # (data set bytes, transfer syntax): raises EngineError to refuse


def scu_get(peer: Peer, level: str, keys: Mapping[str, str], receive: Receiver, *, model: str = "STUDY",
        sop_classes: Iterable[str] = (), options: ScuOptions = ScuOptions(),
        progress: Callable[[TransferSummary], None] | None = None) -> TransferSummary:
    """C-GET: the peer sends the matching instances on this association; each goes to `receive` as bytes.

    `sop_classes` (e.g. from a C-FIND at IMAGE level) chooses the storage contexts proposed; without them
    the common image classes are proposed. Raises ScuError when no association is made.
    """
    summary = TransferSummary()
    kept = 0  # instances `receive` took: what the peer's last pending response may not count yet

    def store(data: bytes, syntax: str) -> tuple[int, str]:
        nonlocal kept
        try:
            receive(data, syntax)
        except EngineError as exc:
            LOGGER.warning("refused an instance from %s: %s", peer, exc)
            return (0xA700 if "full" in str(exc) else 0xC000), str(exc)
        summary.bytes += len(data)
        kept += 1
        return 0x0000, ""

    def broke_off(message: str) -> ScuError:
        summary.completed = max(summary.completed, kept)
        return ScuError(message, summary)

    contexts, roles = get_contexts(sop_classes, model)
    assoc = _associate(peer, options, contexts, roles)
    responses = get_responses(assoc, identifier(level, keys), GET_MODELS[model.upper()], store,
                              options.dimse_timeout)
    broken = True
    try:
        _follow(peer, "C-GET", responses, summary, progress)
        broken = False
    except ScuError:  # a final failure status: the exchange itself ended properly
        broken = False
        raise
    except TimeoutError as exc:
        raise broke_off(f"{peer} did not answer the C-GET within {options.dimse_timeout} s") from exc
    except (WireError, OSError) as exc:
        raise broke_off(f"the C-GET from {peer} broke off: {exc}") from exc
    finally:
        responses.close()  # ends the socket lease: the association is pynetdicom's again
        if broken:
            assoc.abort()  # also when the peer is gone: its socket is closed then (TRANSPORT_HANDLERS)
        elif assoc.is_established:
            assoc.release()
    return summary


def scu_move(peer: Peer, level: str, keys: Mapping[str, str], destination: str, *, model: str = "STUDY",
         options: ScuOptions = ScuOptions(), progress: Callable[[TransferSummary], None] | None = None
         ) -> TransferSummary:
    """C-MOVE: ask the peer to send the matching instances to AE `destination`. Raises ScuError."""
    sop_class = MOVE_MODELS[model.upper()]
    summary = TransferSummary()
    assoc = _associate(peer, options, [build_context(sop_class, [EXPLICIT_VR_LE, IMPLICIT_VR_LE])])
    try:
        _follow(peer, "C-MOVE", assoc.send_c_move(identifier(level, keys), destination, sop_class), summary, progress)
    finally:
        if assoc.is_established:
            assoc.release()
    return summary


# PS3.4 Tables C.4-2 and C.4-3 (C-MOVE, C-GET), PS3.7 C.5: what a failure status means to an operator
_RETRIEVE_FAILURES = {
    0x0122: "SOP Class not supported", 0x0124: "not authorized", 0xA701: "out of resources: number of matches",
    0xA702: "out of resources: sub-operations", 0xA801: "move destination unknown or unreachable",
    0xA900: "identifier does not match SOP Class", 0xC000: "unable to process", 0xFE00: "cancelled",
}  # fmt: skip


def _follow(peer: Peer, what: str, responses: Iterable[tuple[Dataset, Dataset | None]], summary: TransferSummary,
            progress: Callable[[TransferSummary], None] | None) -> None:
    """Read C-GET / C-MOVE responses into `summary` until the final one."""
    for status, found in responses:
        code = status.get("Status")
        if code is None:
            raise ScuError(f"{peer} did not answer the {what} (DIMSE timeout or association ended)", summary)
        summary.status = int(code)
        summary.completed = int(status.get("NumberOfCompletedSuboperations", summary.completed) or 0)
        summary.failed = int(status.get("NumberOfFailedSuboperations", summary.failed) or 0)
        summary.warning = int(status.get("NumberOfWarningSuboperations", summary.warning) or 0)
        summary.remaining = int(status.get("NumberOfRemainingSuboperations", 0) or 0)
        if found is not None and "FailedSOPInstanceUIDList" in found:
            summary.failed_uids = [str(u) for u in _text(found.FailedSOPInstanceUIDList).split("\\") if u]
        if progress is not None:
            progress(summary)
        if code not in (0xFF00, 0xFF01):
            if summary.status not in (0x0000, 0xB000):
                meaning = str(status.get("ErrorComment", "") or "").strip() or _RETRIEVE_FAILURES.get(
                    summary.status & 0xFF00 if summary.status & 0xF000 == 0xC000 else summary.status, "")
                raise ScuError(f"{peer} answered {what} with status 0x{summary.status:04X}"
                               f"{' (' + meaning + ')' if meaning else ''}: {summary.completed} completed, "
                               f"{summary.failed} failed", summary)
            return
    raise ScuError(f"{peer} sent no final {what} response", summary)
