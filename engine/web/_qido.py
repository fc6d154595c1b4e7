"""QIDO-RS: search studies, series and instances through the engine's one matcher (engine.index.find).

Query keys are DICOM keywords or tags ("PatientName=SMITH*", "00100010=SMITH*"); `includefield`
(repeatable, comma separated, or "all"), `limit` and `offset` are honoured. `fuzzymatching=true` is
not supported: the search runs with literal matching and the response says so in a `Warning: 299`
header, as PS3.18 8.3.4.1 asks. Nested (sequence) keys are refused with 400.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping, Sequence
from itertools import islice
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from engine.dicom import QUERY_ELEMENTS, single_uid
from engine.index import Match, belongs_below, find, is_narrow
from engine.web._context import Encoded, WebContext, accepts_gzip, base_url, encode_json, json_response, make_etag, uid
from engine.web._errors import HttpError
from engine.web._media import DICOM_JSON, choose, parse_accept

# Attributes the index computes (PS3.4 C.6.1.1): keyword -> (tag, VR).
COMPUTED: Mapping[str, tuple[int, str]] = {
    "ModalitiesInStudy": (0x00080061, "CS"),
    "NumberOfStudyRelatedSeries": (0x00201206, "IS"),
    "NumberOfStudyRelatedInstances": (0x00201208, "IS"),
    "NumberOfSeriesRelatedInstances": (0x00201209, "IS"),
    "StudyDescription": (0x00081030, "LO"),
}
ELEMENTS: Mapping[str, tuple[int, str]] = {**QUERY_ELEMENTS, **COMPUTED}
_KEYWORD_OF_TAG = {f"{tag:08X}": keyword for keyword, (tag, _) in ELEMENTS.items()}
RETRIEVE_URL = "00081190"

# What each level returns without includefield (PS3.18 Table 10.6.3-3 .. -5, as far as the index holds).
DEFAULT_FIELDS: Mapping[str, tuple[str, ...]] = {
    "STUDY": (
        "StudyDate", "StudyTime", "AccessionNumber", "ModalitiesInStudy", "ReferringPhysicianName",
        "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyID",
        "StudyDescription", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances",
    ),
    "SERIES": (
        "StudyInstanceUID", "Modality", "SeriesDescription", "SeriesNumber", "SeriesInstanceUID",
        "NumberOfSeriesRelatedInstances", "SeriesDate", "SeriesTime", "BodyPartExamined",
    ),
    "IMAGE": (
        "StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID", "SOPInstanceUID", "InstanceNumber", "Rows",
        "Columns", "BitsAllocated", "NumberOfFrames",
    ),
}  # fmt: skip
_CONTROL = frozenset({"limit", "offset", "fuzzymatching", "includefield"})
MAX_LIMIT = 10_000  # one response; clients page with offset beyond it
INLINE_MATCHES = 32  # matches a narrow search reads on the event loop before it moves to a worker thread


def _keyword(name: str) -> str:
    """A query key as a keyword; raises HttpError 400 for unknown attributes and sequence paths."""
    if "." in name:
        raise HttpError(400, f"query key {name!r}: nested (sequence) attributes are not searchable here")
    keyword = _KEYWORD_OF_TAG.get(name.upper(), name)
    if keyword not in ELEMENTS:
        raise HttpError(400, f"{name!r} is not an attribute this archive can search or return")
    return keyword


def _count(request: Request, name: str, default: int | None) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit():
        raise HttpError(400, f"{name}={raw!r} is not a non-negative whole number")
    return int(raw)


def _fields(request: Request, level: str) -> tuple[list[str], bool]:
    asked = [f.strip() for value in request.query_params.getlist("includefield") for f in value.split(",")]
    if any(f.lower() == "all" for f in asked):  # every attribute of the level and above (not one instance's)
        return [k for k in ELEMENTS if not belongs_below(k, level)], True
    return list(dict.fromkeys([*DEFAULT_FIELDS[level], *(_keyword(f) for f in asked if f)])), False


def _element(vr: str, value: str | int) -> dict[str, Any]:
    if value == "" or value is None:
        return {"vr": vr}
    if isinstance(value, int):
        return {"vr": vr, "Value": [value]}
    if vr == "PN":
        return {"vr": vr, "Value": [_name_groups(name) for name in value.split("\\")]}
    values: list[Any] = value.split("\\")
    if vr in _INTEGER_VRS:
        try:
            return {"vr": vr, "Value": [int(v) for v in values]}
        except ValueError:
            return {"vr": vr, "Value": values}
    if vr in _DECIMAL_VRS:
        try:
            return {"vr": vr, "Value": [float(v) for v in values]}
        except ValueError:
            return {"vr": vr, "Value": values}
    return {"vr": vr, "Value": values}


def _name_groups(name: str) -> dict[str, str]:
    """A PN value as the JSON model's object (PS3.18 F.2.2): its alphabetic, ideographic and phonetic
    groups ("Yamada^Tarou=山田^太郎=やまだ^たろう"), empty ones left out."""
    groups = zip(("Alphabetic", "Ideographic", "Phonetic"), name.split("="), strict=False)
    return {kind: text for kind, text in groups if text}


_INTEGER_VRS = frozenset({"IS", "US", "UL", "SS", "SL"})
_DECIMAL_VRS = frozenset({"DS", "FL", "FD"})


@functools.lru_cache(maxsize=256)
def _columns(fields: tuple[str, ...]) -> tuple[tuple[str, str, str], ...]:
    """(keyword, tag key, VR) of each field, in tag order: results are built already sorted. The same
    few field lists come with nearly every search, so each is sorted once."""
    return tuple(sorted(((k, f"{ELEMENTS[k][0]:08X}", ELEMENTS[k][1]) for k in fields), key=lambda c: c[1]))


def _result(
    base: str, level: str, match: Mapping[str, str | int], columns: Sequence[tuple[str, str, str]], every: bool
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    url = f"{base}/studies/{match.get('StudyInstanceUID', '')}"
    if level in ("SERIES", "IMAGE"):
        url += f"/series/{match.get('SeriesInstanceUID', '')}"
    if level == "IMAGE":
        url += f"/instances/{match.get('SOPInstanceUID', '')}"
    retrieve_url = {"vr": "UR", "Value": [url]}
    for keyword, key, vr in columns:
        if key > RETRIEVE_URL and retrieve_url:
            out[RETRIEVE_URL], retrieve_url = retrieve_url, {}
        if not every or keyword in match:
            out[key] = _element(vr, match.get(keyword, ""))
    if retrieve_url:
        out[RETRIEVE_URL] = retrieve_url
    return out


async def search(request: Request, ctx: WebContext, level: str, scope: Mapping[str, str]) -> Response:
    """Answer a QIDO-RS search at `level` ("STUDY", "SERIES", "IMAGE") within `scope` (UIDs from the path)."""
    choose(parse_accept(request.headers.get("accept")), [DICOM_JSON, "application/json"], what="search results")
    criteria: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if name in _CONTROL:
            continue
        if name.lower() in _CONTROL:  # it was skipped here and never applied: a LIMIT=2 returned everything
            raise HttpError(400, f"query parameter {name!r}: its name is {name.lower()!r} (PS3.18 8.3.4)")
        criteria[_keyword(name)] = value
    for keyword, value in scope.items():
        criteria[keyword] = uid(value, keyword)
    limit = min(_count(request, "limit", MAX_LIMIT) or 0, MAX_LIMIT)
    offset = _count(request, "offset", 0) or 0
    fields, every = _fields(request, level)
    fields = list(dict.fromkeys([*fields, *criteria]))
    fuzzy = request.query_params.get("fuzzymatching", "false").lower()
    if fuzzy not in ("true", "false"):
        raise HttpError(400, f"fuzzymatching={fuzzy!r} is not true or false")
    base = base_url(request)
    await ctx.wait_for(single_uid(criteria.get("StudyInstanceUID")), single_uid(criteria.get("SeriesInstanceUID")),
                       stored=False)  # pending records answer queries

    columns = _columns(tuple(fields))
    compress = accepts_gzip(request)

    def encode(matches: Iterable[Match]) -> Encoded:
        body = json.dumps([_result(base, level, m, columns, every) for m in matches], separators=(",", ":")).encode()
        return encode_json(make_etag(body), body, compress=compress)

    matches = find(ctx.archive.index, level, criteria, limit=limit, offset=offset, fields=fields)
    # A patient's studies or a study's series: a few index reads, answered here in less time than the
    # hop to a worker thread costs (0.3 ms of a 0.8 ms round trip, measured). Past a handful of matches
    # the rest goes to a worker like any other search.
    narrow = is_narrow(level, criteria)
    first = list(islice(matches, INLINE_MATCHES)) if narrow else []
    if narrow and len(first) < INLINE_MATCHES:
        encoded = encode(first)
    else:
        encoded = await ctx.run(lambda: encode([*first, *matches]))
    response = json_response(request, encoded, DICOM_JSON)
    if fuzzy == "true":
        response.headers["Warning"] = (
            '299 pacs-engine "The fuzzymatching parameter is not supported. Only literal matching has been performed."'
        )
    return response

