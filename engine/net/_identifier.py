"""Query/retrieve identifiers: the keys of a C-FIND / C-MOVE / C-GET request, and C-FIND response identifiers.

pynetdicom hands the request identifier over as a pydicom Dataset and sends responses given as one, so
this edge module reads and builds those Datasets; matching itself happens in engine.index.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence

from engine.index import Match, check_level

# Q/R information models: SOP class UID -> (model, service).
PATIENT_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
PATIENT_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.1.2"
PATIENT_ROOT_GET = "1.2.840.10008.5.1.4.1.2.1.3"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"
MODELS: Mapping[str, str] = {
    PATIENT_ROOT_FIND: "PATIENT",
    PATIENT_ROOT_MOVE: "PATIENT",
    PATIENT_ROOT_GET: "PATIENT",
    STUDY_ROOT_FIND: "STUDY",
    STUDY_ROOT_MOVE: "STUDY",
    STUDY_ROOT_GET: "STUDY",
}
FIND_CLASSES = (PATIENT_ROOT_FIND, STUDY_ROOT_FIND)
MOVE_CLASSES = (PATIENT_ROOT_MOVE, STUDY_ROOT_MOVE)
GET_CLASSES = (PATIENT_ROOT_GET, STUDY_ROOT_GET)

# The unique key of each level (PS3.4 C.6.1.1 / C.6.2.1); a response carries those of its level and above.
UNIQUE_KEYS: Mapping[str, str] = {
    "PATIENT": "PatientID",
    "STUDY": "StudyInstanceUID",
    "SERIES": "SeriesInstanceUID",
    "IMAGE": "SOPInstanceUID",
}
_LEVEL_ORDER = ("PATIENT", "STUDY", "SERIES", "IMAGE")
_NOT_KEYS = frozenset({"QueryRetrieveLevel", "SpecificCharacterSet"})
_INTEGER_VRS = frozenset({"US", "SS", "UL", "SL", "UV", "SV"})
_FLOAT_VRS = frozenset({"FL", "FD"})
UTF8 = "ISO_IR 192"


@dataclass(frozen=True, slots=True)
class RequestedKey:
    """One element of a request identifier: its tag, keyword ("" for private/unknown) and VR."""

    tag: int
    keyword: str
    vr: str


@dataclass(frozen=True, slots=True)
class QueryRequest:
    """What a request identifier asks: level, matching keys (keyword -> value), and the keys to return."""

    model: str
    level: str
    criteria: dict[str, str]
    requested: tuple[RequestedKey, ...]
    charset: str  # the request's Specific Character Set ("" when absent)


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, MultiValue)):
        return "\\".join(_text(v) for v in value)
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return str(value)


def unique_keys(level: str, model: str) -> tuple[str, ...]:
    """Unique keys a response at `level` carries: its own and those of the levels above in `model`."""
    first = 0 if model == "PATIENT" else 1
    return tuple(UNIQUE_KEYS[name] for name in _LEVEL_ORDER[first : _LEVEL_ORDER.index(level) + 1])


def read_request(identifier: Dataset, sop_class: str) -> QueryRequest:
    """The level and keys of a request identifier. Raises InvalidQueryError for a missing or wrong level."""
    model = MODELS[sop_class]
    level = check_level(_text(identifier.get("QueryRetrieveLevel", "")), model)
    criteria: dict[str, str] = {}
    requested: list[RequestedKey] = []
    for elem in identifier:
        keyword = elem.keyword or ""
        if keyword in _NOT_KEYS:
            continue
        requested.append(RequestedKey(int(elem.tag), keyword, str(elem.VR)))
        if keyword and elem.VR != "SQ":
            criteria[keyword] = _text(elem.value)
    charset = _text(identifier.get("SpecificCharacterSet", ""))
    return QueryRequest(model, level, criteria, tuple(requested), charset)


def _converted(value: str | int | None, vr: str) -> object:
    """A match value in the form pydicom wants for `vr`; None for an empty value."""
    if value is None or value == "":
        return None
    if vr in _INTEGER_VRS:
        try:
            return int(value)
        except ValueError:
            return None
    if vr in _FLOAT_VRS:
        try:
            return float(value)
        except ValueError:
            return None
    return str(value)


def response_identifier(request: QueryRequest, match: Match, retrieve_ae: str) -> Dataset:
    """The C-FIND response identifier: exactly the requested keys plus the required ones (PS3.4 C.4.1.1.3.2).

    Required: Query/Retrieve Level, Retrieve AE Title, the unique keys of the level and above, and
    Specific Character Set when a value needs more than ASCII (answered in UTF-8, ISO_IR 192).
    """
    ds = Dataset()
    needs_utf8 = False
    for key in request.requested:
        if key.vr == "SQ":
            ds.add_new(key.tag, "SQ", DicomSequence([]))
            continue
        value = _converted(match.get(key.keyword) if key.keyword else None, key.vr)
        if isinstance(value, str) and not value.isascii():
            needs_utf8 = True
        ds.add_new(key.tag, key.vr, value)
    for keyword in unique_keys(request.level, request.model):
        if keyword not in ds:
            setattr(ds, keyword, str(match.get(keyword, "")))
    ds.QueryRetrieveLevel = request.level
    ds.RetrieveAETitle = retrieve_ae
    if needs_utf8:
        ds.SpecificCharacterSet = UTF8
    elif request.charset:
        ds.SpecificCharacterSet = request.charset.split("\\")
    if "InstanceAvailability" in ds:
        ds.InstanceAvailability = "ONLINE"
    return ds


def retrieve_criteria(request: QueryRequest) -> dict[str, str]:
    """The unique keys of a C-MOVE / C-GET identifier (PS3.4 C.4.2.2.1: only those select what to send)."""
    return {k: request.criteria[k] for k in unique_keys(request.level, request.model) if request.criteria.get(k)}


def missing_unique_key(request: QueryRequest) -> str:
    """The unique key of the level a retrieve must name, if it is absent or empty; "" otherwise."""
    keyword = UNIQUE_KEYS[request.level]
    return "" if request.criteria.get(keyword, "").strip() else keyword

