"""The one table from engine errors to C-STORE response statuses, and the status data set it becomes."""

from __future__ import annotations

from dataclasses import dataclass

# pynetdicom carries a status with an Error Comment only as a pydicom Dataset: this is the one place the
# net layer touches pydicom, and only to build that response.
from pydicom.dataset import Dataset

from engine.errors import (
    ClosedError,
    CodecUnavailableError,
    CorruptDataError,
    DuplicateInstanceError,
    EngineError,
    IdentityMismatchError,
    InvalidDicomError,
    InvalidUIDError,
    NotStoredYetError,
    PixelDataError,
    StorageFullError,
    UnsupportedTransferSyntaxError,
    VerificationError,
)

SUCCESS = 0x0000
# Not an EngineError: a bug in our code. Cxxx is "cannot understand", the catch-all failure range.
INTERNAL_ERROR = 0xC1FF
ERROR_COMMENT_MAX = 64  # (0000,0902) Error Comment is LO: at most 64 characters


@dataclass(frozen=True, slots=True)
class StoreStatus:
    """A C-STORE failure status: its code and what PS3.4 / PS3.7 call it."""

    code: int
    meaning: str


# PS3.4 B.2.3 (Table B.2-1) gives the Storage Service Class its own failure ranges: A7xx "Refused: Out of
# Resources" (transient, the SCU may retry later), A9xx "Error: Data Set does not match SOP Class" (the
# data set breaks the IOD), Cxxx "Error: Cannot understand". PS3.7 Annex C adds general statuses such as
# 0111 "Duplicate SOP Instance", which archives (dcm4che, among others) answer to a conflicting re-send.
# The low byte within a range is ours: it tells an admin which check refused the instance.
# Order matters: the first class the error is an instance of wins, so subclasses come before bases.
STORE_STATUS_TABLE: tuple[tuple[type[EngineError], StoreStatus], ...] = (
    (StorageFullError, StoreStatus(0xA700, "Refused: Out of Resources (storage full)")),
    (ClosedError, StoreStatus(0xA701, "Refused: Out of Resources (archive shutting down)")),
    (NotStoredYetError, StoreStatus(0xA702, "Refused: Out of Resources (instance still being stored)")),
    (DuplicateInstanceError, StoreStatus(0x0111, "Duplicate SOP Instance (different content)")),
    (IdentityMismatchError, StoreStatus(0xA900, "Error: Data Set does not match SOP Class")),
    (InvalidUIDError, StoreStatus(0xA901, "Error: Data Set does not match SOP Class (UID)")),
    (PixelDataError, StoreStatus(0xA902, "Error: Data Set does not match SOP Class (pixel data)")),
    (InvalidDicomError, StoreStatus(0xC000, "Error: Cannot understand (malformed data set)")),
    (UnsupportedTransferSyntaxError, StoreStatus(0xC101, "Error: Cannot understand (transfer syntax)")),
    (CodecUnavailableError, StoreStatus(0xC102, "Error: Cannot understand (no codec for pixel data)")),
    (VerificationError, StoreStatus(0xC103, "Error: Cannot understand (lossless check failed)")),
    (CorruptDataError, StoreStatus(0xC104, "Error: Cannot understand (stored data corrupt)")),
    (EngineError, StoreStatus(0xC100, "Error: Cannot understand")),
)


def store_status(error: BaseException) -> StoreStatus:
    """The C-STORE failure status for an error; INTERNAL_ERROR for anything outside the engine's tree."""
    for kind, status in STORE_STATUS_TABLE:
        if isinstance(error, kind):
            return status
    return StoreStatus(INTERNAL_ERROR, "Error: Cannot understand (internal error)")


def error_comment(reason: str) -> str:
    """`reason` made a valid Error Comment: one line of printable ASCII, no backslash, <= 64 characters."""
    text = " ".join(reason.split())
    text = "".join(c if " " <= c <= "~" and c != "\\" else "?" for c in text)
    if len(text) > ERROR_COMMENT_MAX:
        text = text[: ERROR_COMMENT_MAX - 3].rstrip() + "..."
    return text


def status_dataset(code: int, reason: str) -> Dataset:
    """The response status data set pynetdicom sends: Status plus an Error Comment with the reason."""
    ds = Dataset()
    ds.Status = code
    comment = error_comment(reason)
    if comment:
        ds.ErrorComment = comment
    return ds
