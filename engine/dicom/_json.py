"""The DICOM JSON model (PS3.18 F.2) of a stored header, for DICOMweb metadata.

pydicom converts each element (value conversion, then its JSON model) in about 40 us, so a 300-slice CT
series' metadata took 0.6-1.1 s to build the first time a viewer asked for it. The elements most headers
consist of (explicit VR little endian, ASCII text, dates, UIDs, numbers) are converted here straight from
their bytes, with pydicom's rules; every other element (sequences, binary and bulk data, person names
with component groups, other character sets, anything unusual) still goes through pydicom.
`tests/dicom/test_dicom_json.py` holds the two paths equal over every corpus file.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from typing import Any

from pydicom import config as pydicom_config
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset

from engine.errors import InvalidDicomError

from ._build import DECODE_ERRORS, decode_all, read_header, swap_binary_values
from ._syntax import syntax_info

_PIXEL_VR = {0x7FE00010: "OW", 0x7FE00008: "OF", 0x7FE00009: "OD"}

# Character sets whose decoding of ASCII bytes (without ESC, which starts ISO 2022 code extensions) is ASCII.
_ASCII_CHARSETS = frozenset({"", "ISO_IR 6", "ISO_IR 100", "ISO_IR 192", "ISO 2022 IR 6", "ISO 2022 IR 100"})
# pydicom's readings, by VR: a value split at backslashes after its trailing spaces and NULs are removed
# (convert_string, convert_UI: values.multi_string); split first, then each value right-stripped
# (convert_text); one value, right-stripped (convert_single_string).
_SPLIT_THEN_KEEP = frozenset({"AE", "AS", "CS", "UI", "DA", "DT", "TM", "IS", "DS", "PN"})
_SPLIT_THEN_STRIP = frozenset({"SH", "LO", "UC"})
_SINGLE = frozenset({"LT", "ST", "UT"})
_DATES = frozenset({"DA", "DT", "TM"})  # strings unless pydicom's datetime_conversion is on
_BINARY_NUMBERS = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d", "UV": "Q", "SV": "q"}
_INTEGER = re.compile(r" *[+-]?[0-9]+ *")
_DECIMAL = re.compile(r" *[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)? *")


def _element_paths(dataset: Dataset, prefix: str, paths: dict[int, str]) -> None:
    # pydicom's bulk data hook sees only the element; we give the URI builder its full path instead.
    for element in dataset:
        path = f"{prefix}{int(element.tag):08X}"
        paths[id(element)] = path
        if element.VR == "SQ":
            for index, item in enumerate(element.value):
                _element_paths(item, f"{path}.{index}.", paths)


def _direct(raw: RawDataElement) -> dict[str, Any] | None:
    """The JSON model of a raw explicit VR little endian element, or None when pydicom must convert it."""
    vr, value = raw.VR, raw.value
    if vr is None or value is None:
        return None
    number = _BINARY_NUMBERS.get(vr)
    if number is not None:
        size = struct.calcsize(number)
        if len(value) % size:
            return None
        if not value:
            return {"vr": vr}
        return {"vr": vr, "Value": list(struct.unpack(f"<{len(value) // size}{number}", value))}
    if b"\x1b" in value or not value.isascii() or (vr in _DATES and pydicom_config.datetime_conversion):
        return None
    text = value.decode("ascii")
    if vr in _SINGLE:
        values = [text.rstrip("\0 ")]
    elif vr in _SPLIT_THEN_KEEP:
        values = text.rstrip(" \0").split("\\")
    elif vr in _SPLIT_THEN_STRIP:
        values = [part.rstrip("\0 ") for part in text.split("\\")]
    else:
        return None
    if values == [""]:
        return {"vr": vr}
    if "" in values:
        return None  # empty values among others: pydicom's rules differ by VR
    if vr == "IS":
        if not all(_INTEGER.fullmatch(v) for v in values):
            return None
        return {"vr": vr, "Value": [int(v) for v in values]}
    if vr == "DS":
        if not all(_DECIMAL.fullmatch(v) for v in values):
            return None
        return {"vr": vr, "Value": [float(v) for v in values]}
    if vr == "PN":
        if any("=" in v for v in values):
            return None  # ideographic and phonetic groups
        return {"vr": vr, "Value": [{"Alphabetic": v} for v in values]}
    return {"vr": vr, "Value": values}


def _converted(element: DataElement, key: str, bulk_data_uri: Callable[[str], str] | None,
               bulk_data_threshold: int) -> dict[str, Any]:
    """pydicom's JSON model of one element, bulk data URIs naming nested elements by their path."""
    handler = None
    if bulk_data_uri is not None:
        paths = {id(element): key}
        if element.VR == "SQ":
            for index, item in enumerate(element.value):
                _element_paths(item, f"{key}.{index}.", paths)
        builder = bulk_data_uri

        def handler(inner: Any) -> str:
            return builder(paths.get(id(inner), f"{int(inner.tag):08X}"))

    model: dict[str, Any] = element.to_json_dict(handler, bulk_data_threshold)
    return model


def dataset_to_json(
    header_prefix: bytes,
    header_suffix: bytes,
    transfer_syntax_uid: str,
    bulk_data_uri: Callable[[str], str] | None = None,
    *,
    pixel_tag: int = 0,
    pixel_vr: str = "",
    bulk_data_threshold: int = 1024,
    direct: bool = True,
) -> dict[str, Any]:
    """The header as a DICOM JSON object (keys "GGGGEEEE", values {"vr", "Value" | ...}).

    With `bulk_data_uri`, binary values longer than `bulk_data_threshold` base64 characters become
    {"BulkDataURI": bulk_data_uri(path)}, where path is the element's tag as 8 hex digits, prefixed
    by "SEQTAG.ITEM." for each enclosing sequence ("00540016.0.00181072"); the pixel element
    (`pixel_tag`, e.g. 0x7FE00010) is then included as bulk data too. Without it, binary values are
    InlineBinary and the pixel element is left out. Binary values are given in little endian.
    `direct=False` sends every element through pydicom (the reference the direct path is tested against).
    Raises InvalidDicomError if the header cannot be decoded.
    """
    info = syntax_info(transfer_syntax_uid)
    direct = direct and info.little_endian and not info.implicit_vr
    before, after = read_header(header_prefix, header_suffix, transfer_syntax_uid, decode=False)
    result: dict[str, Any] = {}
    try:
        charset = before.get("SpecificCharacterSet") or ""
        if direct and (charset if isinstance(charset, str) else "\\".join(charset)) not in _ASCII_CHARSETS:
            direct = False
        for dataset in (before, after):
            if not direct:
                decode_all(dataset)
                if not info.little_endian:
                    swap_binary_values(dataset)
            for tag in list(dataset.keys()):
                key = f"{int(tag):08X}"
                raw = dataset.get_item(tag)
                model = _direct(raw) if direct and isinstance(raw, RawDataElement) else None
                result[key] = model if model is not None else _converted(
                    dataset[tag], key, bulk_data_uri, bulk_data_threshold)
    except DECODE_ERRORS as exc:
        raise InvalidDicomError(f"header cannot be decoded: {exc}") from None
    for key in [k for k in result if k.endswith("0000") and not k.startswith("0000")]:
        del result[key]  # group lengths are retired and meaningless once re-encoded
    if bulk_data_uri is not None and pixel_tag:
        key = f"{pixel_tag:08X}"
        vr = pixel_vr if pixel_vr in ("OB", "OW", "OF", "OD") else _PIXEL_VR.get(pixel_tag, "OW")
        result[key] = {"vr": vr, "BulkDataURI": bulk_data_uri(key)}
    return dict(sorted(result.items()))
