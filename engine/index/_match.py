"""Attribute matching of PS3.4 C.2.2.2: one query key value turned into a condition that tests stored values.

Decisions the standard leaves to us (stated in the conformance statement):
- Single Value and Wild Card Matching are case-sensitive (C.2.2.2.1, C.2.2.2.4), except for PN, where the
  standard makes them implementation dependent: we match PN case-insensitively and ignore trailing empty
  name components ("SMITH^JOHN^^" is "SMITH^JOHN"), the normalisation the PatientName index key uses.
  A wild card compares letter by letter, so "?" stays one character where upper case would change a
  name's length ("Stra?e" matches "Straße", whose full upper case is "STRASSE").
- A backslash-separated list is UID List Matching for UI (C.2.2.2.2) and, for every other VR, Multiple
  Value Matching: a value matches when it matches any element (each element single, wild card or range).
- A multi-valued stored value (e.g. ModalitiesInStudy "CT\\MR") matches when any of its values matches;
  PN values are never split (a backslash in a name is a second name, matched as one text).
- Range Matching (C.2.2.2.5) for DA, TM and DT; a bound given to a coarser precision covers the whole unit
  ("-1200" includes 12:59:59.999999); a stored empty value never matches a non-universal key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from engine.errors import InvalidDicomError

MatchKind = Literal["single", "wildcard", "range"]

# Value Representations of the keys the engine answers; unlisted keywords match as case-sensitive text.
KEY_VRS: Mapping[str, str] = {
    "PatientName": "PN",
    "ReferringPhysicianName": "PN",
    "PerformingPhysicianName": "PN",
    "StudyDate": "DA",
    "SeriesDate": "DA",
    "AcquisitionDate": "DA",
    "ContentDate": "DA",
    "PatientBirthDate": "DA",
    "PerformedProcedureStepStartDate": "DA",
    "StudyTime": "TM",
    "SeriesTime": "TM",
    "ContentTime": "TM",
    "PatientBirthTime": "TM",
    "AcquisitionDateTime": "DT",
    "StudyInstanceUID": "UI",
    "SeriesInstanceUID": "UI",
    "SOPInstanceUID": "UI",
    "SOPClassUID": "UI",
    "FrameOfReferenceUID": "UI",
    "SOPClassesInStudy": "UI",
    "SeriesNumber": "IS",
    "InstanceNumber": "IS",
    "AcquisitionNumber": "IS",
    "NumberOfFrames": "IS",
    "NumberOfPatientRelatedStudies": "IS",
    "NumberOfPatientRelatedSeries": "IS",
    "NumberOfPatientRelatedInstances": "IS",
    "NumberOfStudyRelatedSeries": "IS",
    "NumberOfStudyRelatedInstances": "IS",
    "NumberOfSeriesRelatedInstances": "IS",
    "Rows": "US",
    "Columns": "US",
    "BitsAllocated": "US",
}
_NO_WILDCARD_VRS = frozenset({"DA", "TM", "DT", "UI", "IS", "DS", "US", "UL", "SS", "SL", "FL", "FD", "AT"})
_RANGE_VRS = frozenset({"DA", "TM", "DT"})
_PN_TRAILER = re.compile(r"[\s^]+$")
# Date, time and datetime layouts: digits before the fraction, digits of the fraction.
_TEMPORAL_WIDTH = {"DA": (8, 0), "TM": (6, 6), "DT": (14, 6)}
_DT_OFFSET = re.compile(r"[+-]\d{4}$")
# A DT value that ends in a UTC offset (PS3.5 6.2: &ZZXX, -1200 to +1400) is one value, not a range:
# "20240105101500-0500" is 10:15 at UTC-5, where "2023-2024" (no valid offset) is a range of years.
_DT_WITH_OFFSET = re.compile(r"\d{4,14}(?:\.\d{1,6})?[+-](?:0\d|1[0-4])[0-5]\d")


class InvalidQueryError(InvalidDicomError):
    """A query key value or level the matcher cannot use (bad range, unknown level, wrong model)."""


def key_vr(keyword: str) -> str:
    """The VR the matcher treats `keyword` as ("LO": case-sensitive text, for keywords it does not list)."""
    return KEY_VRS.get(keyword, "LO")


def normalise_pn(value: str) -> str:
    """PN compared case-insensitively, trailing empty components and spaces dropped (as the index key)."""
    return _PN_TRAILER.sub("", value.upper().strip())


def _pn_letters(value: str) -> str:
    """normalise_pn keeping one character per character (what a PN wild card is matched against).

    str.upper turns a few letters into two ("ß" into "SS"); those stay as they are here.
    """
    text = value.strip()
    upper = text.upper()
    if len(upper) != len(text):
        upper = "".join(u if len(u := c.upper()) == 1 else c for c in text)
    return _PN_TRAILER.sub("", upper)


def _temporal(value: str, vr: str, pad: str) -> str:
    """A DA/TM/DT value as fixed-width digits, padded with `pad` to the full precision; "" if not one.

    Padding a lower bound with "0" and an upper bound with "9" makes a coarse bound cover its whole unit.
    """
    text = value.strip().replace(":", "")  # ACR-NEMA style 08:30:00 times
    if vr == "DA":
        text = text.replace(".", "")  # ACR-NEMA style 2005.01.31 dates
    if vr == "DT":
        text = _DT_OFFSET.sub("", text)
    whole, _, fraction = text.partition(".")
    width, fraction_width = _TEMPORAL_WIDTH[vr]
    if not whole.isdigit() or (fraction and not fraction.isdigit()) or len(whole) > width:
        return ""
    return whole.ljust(width, pad) + fraction[:fraction_width].ljust(fraction_width, pad)


@dataclass(frozen=True, slots=True)
class _Alternative:
    """One element of a key value: a single value, a wild card pattern or a range."""

    kind: MatchKind
    value: str = ""  # single: the normalised value; wildcard: the normalised pattern text
    pattern: re.Pattern[str] | None = None  # wildcard
    low: str = ""  # range: canonical bounds, "" for an open end
    high: str = ""


@dataclass(frozen=True, slots=True)
class Condition:
    """A parsed, non-universal query key: `matches(stored)` applies PS3.4 C.2.2.2 to one stored value."""

    keyword: str
    vr: str
    raw: str
    alternatives: tuple[_Alternative, ...]

    def matches(self, stored: str | int | None) -> bool:
        """Whether a stored value (None or "" when absent) matches this key."""
        if stored is None:
            return False
        text = str(stored)
        if self.vr == "PN":
            value = normalise_pn(text)
            return bool(value) and self._one(value, _pn_letters(text))
        if self.vr == "UI":
            candidates = [text.strip("\x00 ")]
        else:
            candidates = [v.strip() for v in text.split("\\")]
        return any(self._one(c, c) for c in candidates if c)

    def _one(self, value: str, letters: str) -> bool:
        """Whether `value` matches an alternative; a wild card is matched against `letters` (see _pn_letters)."""
        for alt in self.alternatives:
            if alt.kind == "single" and self._single(alt.value, value):
                return True
            if alt.kind == "wildcard" and alt.pattern is not None and alt.pattern.fullmatch(letters):
                return True
            if alt.kind == "range" and self._in_range(alt, value):
                return True
        return False

    def _single(self, wanted: str, value: str) -> bool:
        if self.vr == "DA":  # `wanted` is canonical already; a stored ACR-NEMA 2024.03.15 is 20240315
            return wanted == _temporal(value, "DA", "0")
        if self.vr in ("TM", "DT"):  # "0800" and "080000" name the same time: compare at full precision
            return _temporal(wanted, self.vr, "0") == _temporal(value, self.vr, "0") != ""
        return wanted == value

    def _in_range(self, alt: _Alternative, value: str) -> bool:
        canonical = _temporal(value, self.vr, "0")
        if not canonical:
            return False
        return (not alt.low or alt.low <= canonical) and (not alt.high or canonical <= alt.high)

    # --- what the index can use ----------------------------------------------------------------------

    @property
    def singles(self) -> tuple[str, ...] | None:
        """The values when every alternative is a single value (exact index lookups), else None."""
        if all(a.kind == "single" for a in self.alternatives):
            return tuple(a.value for a in self.alternatives)
        return None

    @property
    def literal_prefixes(self) -> tuple[str, ...] | None:
        """Per alternative, the text every match starts with (index prefix scans); None if one has none.

        A range alternative has no prefix, and neither has a wild card that opens with a wild card.
        """
        out: list[str] = []
        for alt in self.alternatives:
            if alt.kind == "single":
                out.append(alt.value)
            elif alt.kind == "wildcard":
                prefix = re.split(r"[*?]", alt.value, maxsplit=1)[0]
                if not prefix:
                    return None
                out.append(prefix)
            else:
                return None
        return tuple(out)

    @property
    def ranges(self) -> tuple[tuple[str, str], ...] | None:
        """(low, high) index bounds of a DA key whose alternatives are ranges or single dates, else None."""
        if self.vr != "DA":
            return None
        out: list[tuple[str, str]] = []
        for alt in self.alternatives:
            if alt.kind == "range":
                out.append((alt.low, alt.high))
            elif alt.kind == "single":
                out.append((alt.value, alt.value))
            else:
                return None
        return tuple(out)


def _wildcard_regex(text: str) -> str:
    return "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in text)


def _alternative(keyword: str, vr: str, element: str) -> _Alternative | None:
    """One list element parsed; None when it is universal ("*" or empty)."""
    text = element.strip() if vr != "PN" else normalise_pn(element)
    if text in ("", "*") or (vr not in _NO_WILDCARD_VRS and set(text) == {"*"}):
        return None
    if vr in _RANGE_VRS and "-" in text and not (vr == "DT" and _DT_WITH_OFFSET.fullmatch(text)):
        low_text, _, high_text = text.partition("-")  # a range's bounds carry no negative UTC offset
        low = _temporal(low_text, vr, "0") if low_text.strip() else ""
        high = _temporal(high_text, vr, "9") if high_text.strip() else ""
        if (low_text.strip() and not low) or (high_text.strip() and not high) or (not low and not high):
            raise InvalidQueryError(f"{keyword}: {element!r} is not a {vr} range (expected e.g. 20240101-20240131)")
        return _Alternative("range", low=low, high=high)
    if vr not in _NO_WILDCARD_VRS and ("*" in text or "?" in text):
        letters = _pn_letters(element) if vr == "PN" else text
        return _Alternative("wildcard", value=text, pattern=re.compile(_wildcard_regex(letters), re.DOTALL))
    if vr in ("DA", "TM", "DT") and not _temporal(text, vr, "0"):
        raise InvalidQueryError(f"{keyword}: {element!r} is not a valid {vr} value")
    if vr == "DA":
        text = _temporal(text, vr, "0")
    return _Alternative("single", value=text)


def parse_condition(keyword: str, value: str) -> Condition | None:
    """The condition a query key value sets, or None for Universal Matching (empty value, "*").

    Raises InvalidQueryError for a date/time key that is neither a value nor a range.
    """
    vr = key_vr(keyword)
    text = value.rstrip("\x00 ") if vr != "PN" else value
    alternatives: list[_Alternative] = []
    for element in text.split("\\"):
        alt = _alternative(keyword, vr, element)
        if alt is None:
            return None  # one universal element makes the whole list universal
        alternatives.append(alt)
    return Condition(keyword, vr, text, tuple(alternatives))
