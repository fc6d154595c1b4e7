"""DIMSE networking: the listener in front of the archive (C-ECHO, C-STORE, C-FIND, C-GET, C-MOVE), its
status table, and the SCU side (echo, send, find, get, move against other nodes)."""

from __future__ import annotations

from engine.net._contexts import ACCEPTED_TRANSFER_SYNTAXES, storage_sop_classes
from engine.net._qr import QueryRetrieveService, QueryRetrieveTarget
from engine.net._scu import (
    Outgoing,
    Peer,
    ScuError,
    ScuOptions,
    TransferSummary,
    scu_echo,
    scu_find,
    scu_get,
    scu_move,
    scu_send,
)
from engine.net._send import StoreResult, preferred_syntaxes
from engine.net._server import DicomServer, StoreTarget
from engine.net._status import (
    STORE_STATUS_TABLE,
    StoreStatus,
    error_comment,
    store_status,
)

__all__ = [
    "ACCEPTED_TRANSFER_SYNTAXES",
    "STORE_STATUS_TABLE",
    "DicomServer",
    "Outgoing",
    "Peer",
    "QueryRetrieveService",
    "QueryRetrieveTarget",
    "ScuError",
    "ScuOptions",
    "StoreResult",
    "StoreStatus",
    "StoreTarget",
    "TransferSummary",
    "error_comment",
    "preferred_syntaxes",
    "scu_echo",
    "scu_find",
    "scu_get",
    "scu_move",
    "scu_send",
    "storage_sop_classes",
    "store_status",
]
