"""Byte encodings of every LMDB key the index writes, and the validation that keeps them unambiguous."""

from __future__ import annotations

import re
import struct

from engine.errors import InvalidUIDError

SEP = b"\x00"  # separates the parts of a composite key; never occurs in a validated UID or indexed value
# DICOM caps UIDs at 64 characters; we accept up to 128 so a sloppy sender's UID still fits twice in an LMDB
# key (511 bytes), and leave the DICOM rule to the archive's validation.
MAX_UID_BYTES = 128
MAX_VALUE_BYTES = 256  # indexed query values are cut here; longer values only widen a lookup's candidates

_ORDER = struct.Struct(">BQ")
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1
_SEQ = struct.Struct(">Q")
_PN_TRAILER = re.compile(r"[\s^]+$")

# Secondary keys: DICOM keyword -> one-byte code that opens every key of that kind in the qkeys sub-db.
STUDY_LEVEL_KEYS = {"PatientID": b"I", "PatientName": b"N", "StudyDate": b"D", "AccessionNumber": b"A"}
SERIES_LEVEL_KEYS = {"Modality": b"M"}
VALUE_KEYS = {**STUDY_LEVEL_KEYS, **SERIES_LEVEL_KEYS}


def uid_key(uid: str) -> bytes:
    """The key bytes of a UID; raises InvalidUIDError if it could make keys ambiguous or too long."""
    if not uid:
        raise InvalidUIDError("empty UID cannot be indexed")
    try:
        raw = uid.encode("ascii")
    except UnicodeEncodeError:
        raise InvalidUIDError(f"UID {uid!r} contains non-ASCII characters") from None
    if len(raw) > MAX_UID_BYTES:
        raise InvalidUIDError(f"UID {uid[:70]!r}... is {len(raw)} bytes long, more than {MAX_UID_BYTES}")
    if SEP in raw:
        raise InvalidUIDError(f"UID {uid!r} contains a NUL byte")
    return raw


def child_key(parent: bytes, child: bytes) -> bytes:
    """Key of `child` in the ordered child list of `parent` (study -> series, patient -> studies)."""
    return parent + SEP + child


def children_prefix(parent: bytes) -> bytes:
    """Prefix every child key of `parent` starts with: a range scan lists them."""
    return parent + SEP


def clamp_int64(value: int) -> int:
    """InstanceNumber is an IS of at most 12 characters; anything wider is clamped, the SOP UID breaks ties."""
    return max(_INT64_MIN, min(_INT64_MAX, value))


def instance_order_key(series: bytes, instance_number: int | None, sop: bytes) -> bytes:
    """Key of an instance in its series' list: ordered by InstanceNumber (absent ones last), then SOP UID."""
    if instance_number is None:
        order = _ORDER.pack(1, 0)
    else:
        # Offset so negative numbers sort before positive ones in big-endian byte order.
        order = _ORDER.pack(0, clamp_int64(instance_number) - _INT64_MIN)
    return series + SEP + order + sop


def instance_from_order_key(key: bytes, prefix_len: int) -> str:
    """The SOP Instance UID at the end of an instance_order_key whose series prefix is prefix_len bytes."""
    return key[prefix_len + _ORDER.size :].decode("ascii")


def normalise_value(keyword: str, value: str) -> str:
    """The form a query value is indexed under: PatientName upper-cased for case-insensitive matching."""
    value = value.replace("\x00", "")
    if keyword == "PatientName":
        # Trailing empty name components ("SMITH^JOHN^^^") mean the same name as without them.
        return _PN_TRAILER.sub("", value.upper().strip())
    return value.strip()


def value_bytes(keyword: str, value: str) -> bytes:
    """Normalised value bytes, cut at MAX_VALUE_BYTES."""
    return normalise_value(keyword, value).encode("utf-8")[:MAX_VALUE_BYTES]


def value_code(keyword: str) -> bytes:
    """The one-byte code of a secondary key; raises KeyError for a keyword that is not indexed by value."""
    try:
        return VALUE_KEYS[keyword]
    except KeyError:
        raise KeyError(f"{keyword} is not indexed by value; indexed: {', '.join(VALUE_KEYS)}") from None


def value_key(keyword: str, value: str, uid: bytes) -> bytes:
    """Secondary key: code, normalised value, separator, UID of the study or series holding the value."""
    return value_code(keyword) + value_bytes(keyword, value) + SEP + uid


def seq_key(sequence: int) -> bytes:
    """Change-log key: big-endian so the log is in sequence order."""
    return _SEQ.pack(sequence)


def seq_from_key(key: bytes) -> int:
    """Inverse of seq_key."""
    return int(_SEQ.unpack(key)[0])


def patient_key(patient_id: str) -> bytes:
    """Patient key; a leading byte keeps the empty Patient ID (type 2, often empty) a valid LMDB key."""
    return b"P" + value_bytes("PatientID", patient_id)
