"""Media types: parsing Accept and Content-Type headers, and choosing what to send (PS3.18 8.7)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field

from engine.types import EXPLICIT_VR_LE
from engine.web._errors import HttpError

DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
OCTET_STREAM = "application/octet-stream"
MULTIPART = "multipart/related"
JPHC = "image/jphc"
JHC = "image/jhc"  # the HTJ2K media type's other name (PS3.18 Table 8.7.3-5 lists both)
JLS = "image/jls"
JP2 = "image/jp2"
JPEG = "image/jpeg"
PNG = "image/png"
ANY = "*/*"
STORED = "*"  # transfer-syntax=*: as stored, no transcoding


@dataclass(frozen=True, slots=True)
class MediaRange:
    """One element of an Accept header: `multipart/related; type="image/jphc"; transfer-syntax=*`."""

    media_type: str  # lower case, e.g. "multipart/related"
    params: dict[str, str] = field(default_factory=dict)  # names lower case, values unquoted
    q: float = 1.0

    @property
    def multipart(self) -> bool:
        return self.media_type == MULTIPART

    @property
    def part_type(self) -> str:
        """The media type of the content: the `type` parameter of multipart, else the type itself."""
        if self.multipart:
            return self.params.get("type", ANY).lower()
        return self.media_type

    @property
    def transfer_syntax(self) -> str | None:
        return self.params.get("transfer-syntax")

    def matches(self, media_type: str) -> bool:
        """Whether this range's content type admits `media_type` (wildcards allowed)."""
        mine = self.part_type
        if mine in (ANY, "*"):
            return True
        major, _, minor = mine.partition("/")
        return mine == media_type or (minor == "*" and media_type.startswith(major + "/"))


def _split(text: str, sep: str) -> list[str]:
    """Split on `sep` outside double quotes."""
    out: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == sep and not quoted:
            out.append("".join(current))
            current = []
        else:
            current.append(ch)
    out.append("".join(current))
    return out


def parse_media_type(text: str) -> MediaRange:
    """One media type with parameters; raises HttpError 400 when it has no type/subtype."""
    head, *rest = _split(text, ";")
    media_type = head.strip().lower()
    if "/" not in media_type:
        raise HttpError(400, f"{text.strip()!r} is not a media type (type/subtype)")
    params: dict[str, str] = {}
    q = 1.0
    for item in rest:
        name, _, value = item.partition("=")
        name = name.strip().lower()
        value = value.strip().strip('"')
        if not name:
            continue
        if name == "q":
            try:
                q = float(value)
            except ValueError:
                raise HttpError(400, f"quality value {value!r} in {text.strip()!r} is not a number") from None
        else:
            params[name] = value
    return MediaRange(media_type, params, q)


def parse_accept(header: str | None) -> list[MediaRange]:
    """The ranges of an Accept header, best first (stable for equal q); `*/*` when absent or empty."""
    if not header or not header.strip():
        return [MediaRange(ANY)]
    return list(_parsed_accept(header))


@functools.lru_cache(maxsize=256)
def _parsed_accept(header: str) -> tuple[MediaRange, ...]:
    # A viewer sends the same few Accept headers with every request: each is parsed once (15 us).
    ranges = [parse_media_type(part) for part in _split(header, ",") if part.strip()]
    return tuple(sorted((r for r in ranges if r.q > 0), key=lambda r: -r.q))


@dataclass(frozen=True, slots=True)
class Choice:
    """What to send: the content media type, the transfer syntax ("*" = as stored) and whether multipart."""

    media_type: str
    transfer_syntax: str
    multipart: bool


def choose(
    ranges: Sequence[MediaRange],
    offers: Sequence[str],
    *,
    default_syntax: str = EXPLICIT_VR_LE,
    multipart_only: bool = False,
    what: str = "this resource",
) -> Choice:
    """The first acceptable range matched to the first offered media type it admits.

    `offers` are content media types in order of preference. A range without transfer-syntax gets
    `default_syntax`. Raises HttpError 406 naming what can be sent when nothing matches.
    """
    for r in ranges:
        if multipart_only and not r.multipart and r.media_type not in (ANY, "multipart/*", *offers):
            continue
        for offer in offers:
            if r.matches(offer):
                syntax = r.transfer_syntax or default_syntax
                return Choice(offer, syntax, r.multipart or multipart_only or r.media_type in (ANY, "multipart/*"))
    names = ", ".join(offers)
    accepted = ", ".join(f"{r.media_type}{_params(r)}" for r in ranges)
    raise HttpError(406, f"{what} is available as {names}; the request accepts only {accepted}")


def _params(r: MediaRange) -> str:
    return "".join(f"; {k}={v}" for k, v in r.params.items())
