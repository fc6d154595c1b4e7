"""pynetdicom's UID checks, remembered.

Every UID pynetdicom reads from an A-ASSOCIATE PDU or sets on a presentation context or DIMSE primitive
goes through `pynetdicom.utils.set_uid`, which makes a pydicom UID and checks it with regular expressions
three times. An association request names the same few hundred UIDs again and again: getscu's (120
storage SOP classes, each as an abstract syntax and in a role selection, with its transfer syntaxes)
took 16-23 ms of interpreter time to decode, 7-8 ms with the answers remembered.

An answer depends only on the arguments, and a UID is immutable, so a remembered one is the answer the
check would give. A value that fails is not remembered: it is refused (and logged by pynetdicom) each
time. A non-conformant value that pynetdicom lets through is logged once while it is remembered. The
memory is bounded, so a peer sending endless new UIDs only pushes older ones out.
"""

from __future__ import annotations

import functools
from types import ModuleType

import pynetdicom.dimse_primitives
import pynetdicom.pdu_items
import pynetdicom.pdu_primitives
import pynetdicom.presentation
import pynetdicom.utils
from pydicom.uid import UID

REMEMBERED = 4096  # UIDs: every storage SOP class and transfer syntax several times over
_MODULES: tuple[ModuleType, ...] = (
    pynetdicom.pdu_items,
    pynetdicom.pdu_primitives,
    pynetdicom.presentation,
    pynetdicom.dimse_primitives,
)
_checked = pynetdicom.utils.set_uid  # pynetdicom's own, never replaced in its home module


@functools.lru_cache(maxsize=REMEMBERED)
def _remembered(value: str | bytes, name: str, allow_empty: bool, allow_none: bool, validate: bool) -> UID | None:
    return _checked(value, name, allow_empty, allow_none, validate)


def set_uid(value: None | str | bytes | UID, name: str, allow_empty: bool = True, allow_none: bool = True,
            validate: bool = True) -> UID | None:
    """pynetdicom.utils.set_uid, answered from memory for a str, UID or bytes value seen before."""
    if type(value) in (str, UID, bytes):
        return _remembered(value, name, allow_empty, allow_none, validate)
    return _checked(value, name, allow_empty, allow_none, validate)


def remember_uid_checks() -> None:
    """Make pynetdicom's modules that check UIDs use set_uid above; idempotent."""
    for module in _MODULES:
        if getattr(module, "set_uid", None) is _checked:
            module.set_uid = set_uid  # type: ignore[attr-defined]
