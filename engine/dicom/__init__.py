"""DICOM parsing and rebuilding: the only package of the engine that imports pydicom."""

from __future__ import annotations

from ._build import (
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    assemble_dataset,
    deflate,
    header_content,
    part10,
    reencode_dataset,
    reencoded_around_pixels,
)
from ._encapsulation import encapsulate, join_encapsulated, split_encapsulated
from ._json import dataset_to_json
from ._native import (
    frame_dtype,
    native_frames,
    native_pixel_value,
    native_tail,
    unpacked_frames,
    write_native_value,
)
from ._parse import ParsedInstance, parse_dataset, parse_part10
from ._pixel import MAX_FRAME_BYTES, native_length, pixel_element_tag
from ._syntax import SyntaxInfo, supported_syntaxes, syntax_info
from ._uid import single_uid, validate_uid
from ._values import QUERY_ELEMENTS

__all__ = [
    "IMPLEMENTATION_CLASS_UID",
    "IMPLEMENTATION_VERSION_NAME",
    "MAX_FRAME_BYTES",
    "QUERY_ELEMENTS",
    "ParsedInstance",
    "SyntaxInfo",
    "assemble_dataset",
    "dataset_to_json",
    "deflate",
    "encapsulate",
    "header_content",
    "frame_dtype",
    "join_encapsulated",
    "native_frames",
    "native_length",
    "pixel_element_tag",
    "native_pixel_value",
    "native_tail",
    "unpacked_frames",
    "parse_dataset",
    "parse_part10",
    "part10",
    "reencode_dataset",
    "reencoded_around_pixels",
    "split_encapsulated",
    "supported_syntaxes",
    "syntax_info",
    "single_uid",
    "validate_uid",
    "write_native_value",
]
