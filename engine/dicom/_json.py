"""The DICOM JSON model (PS3.18 F.2) of a stored header, for DICOMweb metadata."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydicom.dataset import Dataset

from ._build import read_header, swap_binary_values
from ._syntax import syntax_info

_PIXEL_VR = {0x7FE00010: "OW", 0x7FE00008: "OF", 0x7FE00009: "OD"}


def _element_paths(dataset: Dataset, prefix: str, paths: dict[int, str]) -> None:
    # pydicom's bulk data hook sees only the element; we give the URI builder its full path instead.
    for element in dataset:
        path = f"{prefix}{int(element.tag):08X}"
        paths[id(element)] = path
        if element.VR == "SQ":
            for index, item in enumerate(element.value):
                _element_paths(item, f"{path}.{index}.", paths)


def dataset_to_json(
    header_prefix: bytes,
    header_suffix: bytes,
    transfer_syntax_uid: str,
    bulk_data_uri: Callable[[str], str] | None = None,
    *,
    pixel_tag: int = 0,
    pixel_vr: str = "",
    bulk_data_threshold: int = 1024,
) -> dict[str, Any]:
    """The header as a DICOM JSON object (keys "GGGGEEEE", values {"vr", "Value" | ...}).

    With `bulk_data_uri`, binary values longer than `bulk_data_threshold` base64 characters become
    {"BulkDataURI": bulk_data_uri(path)}, where path is the element's tag as 8 hex digits, prefixed
    by "SEQTAG.ITEM." for each enclosing sequence ("00540016.0.00181072"); the pixel element
    (`pixel_tag`, e.g. 0x7FE00010) is then included as bulk data too. Without it, binary values are
    InlineBinary and the pixel element is left out. Binary values are given in little endian.
    Raises InvalidDicomError if the header cannot be decoded.
    """
    before, after = read_header(header_prefix, header_suffix, transfer_syntax_uid)
    merged = Dataset()
    for dataset in (before, after):
        for element in dataset:
            merged.add(element)
    if not syntax_info(transfer_syntax_uid).little_endian:
        swap_binary_values(merged)
    paths: dict[int, str] = {}
    _element_paths(merged, "", paths)
    handler = None
    if bulk_data_uri is not None:
        builder = bulk_data_uri

        def handler(element: Any) -> str:
            return builder(paths.get(id(element), f"{int(element.tag):08X}"))

    result: dict[str, Any] = merged.to_json_dict(
        bulk_data_threshold=bulk_data_threshold, bulk_data_element_handler=handler
    )
    for key in [k for k in result if k.endswith("0000") and not k.startswith("0000")]:
        del result[key]  # group lengths are retired and meaningless once re-encoded
    if bulk_data_uri is not None and pixel_tag:
        key = f"{pixel_tag:08X}"
        vr = pixel_vr if pixel_vr in ("OB", "OW", "OF", "OD") else _PIXEL_VR.get(pixel_tag, "OW")
        result[key] = {"vr": vr, "BulkDataURI": bulk_data_uri(key)}
    return dict(sorted(result.items()))
