"""DIMSE networking: the C-ECHO / C-STORE listener in front of the archive, and its status table."""

from __future__ import annotations

from engine.net._contexts import ACCEPTED_TRANSFER_SYNTAXES, storage_sop_classes
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
    "StoreStatus",
    "StoreTarget",
    "error_comment",
    "storage_sop_classes",
    "store_status",
]
