"""Outgoing C-STORE of encoded data sets: the contexts to propose, the syntax to pick, the result to report.

pynetdicom's `send_c_store` takes a pydicom Dataset (decoded, then encoded again) or a file path; an
archive holds bytes. `_pipeline` sends the encoded data sets as they are, in the contexts chosen here.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pynetdicom import evt
from pynetdicom.presentation import PresentationContext, build_context

from engine.archive import stored_syntax
from engine.types import EXPLICIT_VR_LE, IMPLICIT_VR_LE, InstanceRecord

if TYPE_CHECKING:
    from pynetdicom.association import Association
    from pynetdicom.events import Event

LOGGER = logging.getLogger(__name__)

MAX_CONTEXTS = 128  # PS3.8: presentation context IDs are the odd numbers 1..255
UNCOMPRESSED = (EXPLICIT_VR_LE, IMPLICIT_VR_LE)


def preferred_syntaxes(record: InstanceRecord) -> tuple[str, ...]:
    """Transfer syntaxes to send an instance in, best first: stored (zero decode), original, uncompressed."""
    return tuple(dict.fromkeys((stored_syntax(record), record.transfer_syntax_uid, *UNCOMPRESSED)))


def outgoing_contexts(pairs: Iterable[tuple[str, Sequence[str]]]) -> list[PresentationContext]:
    """Presentation contexts to propose for (SOP class, preferred syntaxes) pairs, within 128 contexts.

    Every class gets one uncompressed context first (so every class can be sent); then one context per
    other syntax, each alone so the peer can accept it without choosing among them.
    """
    classes: dict[str, list[str]] = {}
    for sop_class, syntaxes in pairs:
        wanted = classes.setdefault(sop_class, [])
        wanted.extend(s for s in syntaxes if s not in wanted and s not in UNCOMPRESSED)
    contexts = [build_context(sop_class, list(UNCOMPRESSED)) for sop_class in classes]
    for sop_class, syntaxes in classes.items():
        for syntax in syntaxes:
            if len(contexts) >= MAX_CONTEXTS:
                LOGGER.warning("more than %d presentation contexts needed; some instances go uncompressed",
                               MAX_CONTEXTS)
                return contexts[:MAX_CONTEXTS]
            contexts.append(build_context(sop_class, [syntax]))
    return contexts[:MAX_CONTEXTS]


def choose_context(assoc: Association, sop_class: str, syntaxes: Sequence[str]) -> PresentationContext | None:
    """The accepted context this side may send `sop_class` on, in the first of `syntaxes` the peer accepted."""
    usable = [cx for cx in assoc.accepted_contexts if cx.abstract_syntax == sop_class and cx.as_scu]
    for syntax in syntaxes:
        for cx in usable:
            if cx.transfer_syntax[0] == syntax:
                return cx
    return None


@dataclass(frozen=True, slots=True)
class StoreResult:
    """The peer's answer to one C-STORE: its status (None when it never answered) and Error Comment."""

    status: int | None
    comment: str = ""

    @property
    def category(self) -> str:
        """'success', 'warning' or 'failure' as PS3.4 B.2.3 groups C-STORE statuses."""
        if self.status is None:
            return "failure"
        if self.status == 0x0000:
            return "success"
        if self.status in (0x0001, 0x0107, 0x0116) or self.status >> 12 == 0xB:
            return "warning"
        return "failure"


def _transport(event: Event) -> socket.socket | None:
    """The TCP (or TLS) socket under an association that has connected, None before that."""
    sock = event.assoc.dul.socket
    return None if sock is None else sock.socket


def set_nodelay(event: Event) -> None:
    """EVT_CONN_OPEN handler: small DIMSE responses must not wait for the peer's delayed ACK (Nagle)."""
    sock = _transport(event)
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def keep_transport(event: Event) -> None:
    """EVT_CONN_OPEN handler: remember the association's socket, for close_transport."""
    sock = _transport(event)
    if sock is not None:
        event.assoc._pacs_transport = sock  # type: ignore[attr-defined]


def close_transport(event: Event) -> None:
    """EVT_CONN_CLOSE handler: close the socket for sure.

    pynetdicom 3.0.4 calls shutdown() before close() and skips close() when shutdown() fails, as it does
    on a connection the peer reset or never completed; the socket then stays open until it is collected.
    """
    sock = getattr(event.assoc, "_pacs_transport", None)
    if sock is not None:
        sock.close()


TRANSPORT_HANDLERS = [(evt.EVT_CONN_OPEN, keep_transport), (evt.EVT_CONN_CLOSE, close_transport)]
