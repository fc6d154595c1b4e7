"""Validation of UIDs before they become keys, file names or URL parts."""

from __future__ import annotations

import re

from engine.errors import InvalidUIDError

_UID_RE = re.compile(r"[0-9]+(\.[0-9]+)*")
MAX_UID_LENGTH = 64


def validate_uid(value: str, what: str) -> str:
    """Return `value` if it is a well-formed UID, else raise InvalidUIDError naming `what`.

    Well-formed: digits and dots only, no empty component, at most 64 characters (PS3.5 9.1). Leading
    zeros in a component are tolerated (they are common in the field and harmless as a key).
    """
    if not value:
        raise InvalidUIDError(f"{what} is empty")
    if len(value) > MAX_UID_LENGTH:
        raise InvalidUIDError(
            f"{what} is {len(value)} characters long, more than {MAX_UID_LENGTH}: {value[:80]!r}"
        )
    if _UID_RE.fullmatch(value) is None:
        raise InvalidUIDError(f"{what} {value[:80]!r} is not a UID (digits separated by single dots)")
    return value


def single_uid(value: str | None) -> str | None:
    """A query value when it names exactly one UID (not a list, not a wildcard), else None."""
    if not value or any(mark in value for mark in ("\\", ",", "*", "?")):
        return None
    return value
