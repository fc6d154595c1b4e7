"""The EngineError -> C-STORE status table and the Error Comment it sends."""

from __future__ import annotations

import inspect

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pynetdicom.status import STORAGE_SERVICE_CLASS_STATUS, code_to_category

from engine import errors
from engine.errors import (
    ClosedError,
    CodecUnavailableError,
    CorruptDataError,
    DuplicateInstanceError,
    EngineError,
    InvalidDicomError,
    InvalidUIDError,
    PixelDataError,
    StorageFullError,
    UnsupportedTransferSyntaxError,
    VerificationError,
)
from engine.net import STORE_STATUS_TABLE, error_comment, store_status
from engine.net._status import INTERNAL_ERROR, status_dataset

EXPECTED = [
    (StorageFullError, 0xA700),  # PS3.4 B.2.3 Refused: Out of Resources
    (ClosedError, 0xA701),
    (DuplicateInstanceError, 0x0111),  # PS3.7 C Duplicate SOP Instance
    (InvalidUIDError, 0xA901),  # Error: Data Set does not match SOP Class
    (PixelDataError, 0xA902),
    (InvalidDicomError, 0xC000),  # Error: Cannot understand
    (UnsupportedTransferSyntaxError, 0xC101),
    (CodecUnavailableError, 0xC102),
    (VerificationError, 0xC103),
    (CorruptDataError, 0xC104),
]


@pytest.mark.parametrize(("error", "code"), EXPECTED, ids=[e.__name__ for e, _ in EXPECTED])
def test_each_ingest_error_has_its_status(error: type[EngineError], code: int) -> None:
    assert store_status(error("why")).code == code


def test_every_engine_error_gets_a_failure_status_pynetdicom_and_the_standard_know() -> None:
    kinds = [c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, EngineError)]
    assert len(kinds) >= 12
    for kind in kinds:
        code = store_status(kind("why")).code
        assert code in STORAGE_SERVICE_CLASS_STATUS, f"{kind.__name__}: 0x{code:04X}"
        assert code_to_category(code) == "Failure", f"{kind.__name__}: 0x{code:04X}"


def test_no_table_row_is_shadowed_by_an_earlier_base_class() -> None:
    for k, (kind, status) in enumerate(STORE_STATUS_TABLE):
        earlier = [base for base, _ in STORE_STATUS_TABLE[:k] if issubclass(kind, base)]
        assert not earlier, f"{kind.__name__} ({status.code:#06x}) is unreachable behind {earlier}"


def test_codes_are_distinct_so_an_admin_can_tell_the_checks_apart() -> None:
    codes = [status.code for _, status in STORE_STATUS_TABLE]
    assert len(codes) == len(set(codes))


def test_an_error_outside_the_engine_is_an_internal_failure() -> None:
    assert store_status(ZeroDivisionError("bug")).code == INTERNAL_ERROR
    assert code_to_category(INTERNAL_ERROR) == "Failure"


@given(st.text())
def test_error_comment_is_always_a_valid_lo_value(reason: str) -> None:
    comment = error_comment(reason)
    assert len(comment) <= 64
    assert comment.isascii() and comment.isprintable()
    assert "\\" not in comment


def test_error_comment_keeps_a_short_reason_and_cuts_a_long_one_visibly() -> None:
    assert error_comment("pixel data\nis short") == "pixel data is short"
    long = error_comment("native Pixel Data is 524288 bytes, 1 frame(s) of 513 x 512 need 525312")
    assert len(long) == 64 and long.endswith("...")


def test_status_dataset_carries_status_and_comment() -> None:
    ds = status_dataset(0xA902, "pixel data is short")
    assert ds.Status == 0xA902
    assert ds.ErrorComment == "pixel data is short"
    assert "ErrorComment" not in status_dataset(0xC000, "   ")
