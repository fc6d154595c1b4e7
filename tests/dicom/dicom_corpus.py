"""The real files the dicom tests run over, and what engine.dicom must do with each bad one."""

from __future__ import annotations

import importlib.util
import zlib
from functools import cache
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data

from engine.dicom import ParsedInstance, parse_part10
from engine.errors import EngineError, InvalidDicomError, InvalidUIDError, PixelDataError

_NO_PART10 = (InvalidDicomError, "no 'DICM' marker")
_NO_STUDY = (InvalidUIDError, "StudyInstanceUID (0020,000D) is missing")
_NO_SOP_CLASS = (InvalidUIDError, "SOPClassUID (0008,0016) is missing")

# file name -> (error class, words of the message). Every other .dcm must parse.
REFUSED: dict[str, tuple[type[EngineError], str]] = {
    # Bare data sets without preamble / file meta: parse_part10 cannot know their syntax.
    "ExplVR_BigEndNoMeta.dcm": _NO_PART10,
    "ExplVR_LitEndNoMeta.dcm": _NO_PART10,
    "no_meta.dcm": _NO_PART10,
    "rtstruct.dcm": _NO_PART10,
    "OT-PAL-8-face.dcm": _NO_PART10,
    "meta_missing_tsyntax.dcm": (InvalidDicomError, "no Transfer Syntax UID (0002,0010)"),
    # Truncated files: a value runs past the end, or the pixel item sequence never ends.
    "MR_truncated.dcm": (InvalidDicomError, "truncated: Pixel Data value at offset 1166 needs 8192 bytes"),
    "rtplan_truncated.dcm": (InvalidDicomError, "truncated: value of (300A,00B0)"),
    "emri_small_jpeg_2k_lossless_too_short.dcm": (PixelDataError, "no Sequence Delimitation Item"),
    # Meta says JPEG Baseline, the data set is implicit VR: no transfer syntax describes these bytes.
    "SC_rgb_jpeg.dcm": (
        InvalidDicomError,
        "requires explicit VR but the data set is encoded with implicit VR",
    ),
    "badVR.dcm": (InvalidDicomError, "NumberOfFrames (0028,0008) is '1A', not an integer"),
    # Anonymised with hashes in place of UIDs: unsafe as keys.
    "bad_sequence.dcm": (InvalidUIDError, "is not a UID"),
    # Codec test files and fragments that are not complete SOP instances.
    "JPEGLSNearLossless_08.dcm": _NO_STUDY,
    "JPEGLSNearLossless_16.dcm": _NO_STUDY,
    "SC_rgb_jls_lossy_line.dcm": _NO_STUDY,
    "SC_rgb_jls_lossy_sample.dcm": _NO_STUDY,
    "UN_sequence.dcm": _NO_SOP_CLASS,
    "DICOMDIR-empty.dcm": _NO_SOP_CLASS,
    "empty_charset_LEI.dcm": _NO_SOP_CLASS,
    "nested_priv_SQ.dcm": _NO_SOP_CLASS,
    "no_meta_group_length.dcm": _NO_SOP_CLASS,
    "priv_SQ.dcm": _NO_SOP_CLASS,
}


def _data_dir() -> Path | None:
    spec = importlib.util.find_spec("data_store")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data"
    return path if path.is_dir() else None


@cache
def corpus() -> dict[str, Path]:
    """file name -> path of every .dcm of pydicom's test files (all folders) and pydicom-data."""
    roots = [Path(pydicom.data.__file__).parent / "test_files"]
    data_dir = _data_dir()
    if data_dir is not None:
        roots.append(data_dir)
    return {p.name: p for root in roots for p in sorted(root.rglob("*.dcm"))}


def names() -> list[str]:
    return sorted(corpus())


def good_names() -> list[str]:
    return [n for n in names() if n not in REFUSED]


@cache
def file_bytes(name: str) -> bytes:
    return corpus()[name].read_bytes()


@cache
def parsed(name: str) -> ParsedInstance:
    return parse_part10(file_bytes(name))


@cache
def pydicom_dataset(name: str) -> pydicom.Dataset:
    return pydicom.dcmread(corpus()[name])


def dataset_bytes(name: str) -> bytes:
    """The data set of a Part-10 file as stored (inflated for deflated syntaxes)."""
    data = file_bytes(name)
    meta = pydicom_dataset(name).file_meta
    start = 132 + 12 + int(meta.FileMetaInformationGroupLength)
    if meta.TransferSyntaxUID == "1.2.840.10008.1.2.1.99":
        return zlib.decompress(data[start:], -zlib.MAX_WBITS)
    return data[start:]


def normalised(array: np.ndarray, bits_stored: int, bits_allocated: int, signed: bool) -> np.ndarray:
    """Samples reduced to their Bits Stored (sign-extended when signed), as pydicom presents them."""
    if array.dtype.kind not in "iu" or bits_stored >= bits_allocated:
        return array
    unsigned = array.view(array.dtype.str.replace("i", "u")).astype(np.uint64)
    kept = unsigned & np.uint64((1 << bits_stored) - 1)
    if not signed:
        return kept
    as_int = kept.astype(np.int64)
    return np.where(as_int >= 1 << (bits_stored - 1), as_int - (1 << bits_stored), as_int)
