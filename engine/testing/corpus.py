"""The real-file corpus: every .dcm of pydicom's test files and of pydicom-data, and which ones are bad.

A helper layer on top of the engine (not part of the core): it imports pydicom directly.
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from collections.abc import Mapping
from functools import cache
from pathlib import Path

import pydicom
import pydicom.data
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

LOGGER = logging.getLogger(__name__)

# Reason categories; read_problem / corpus_problem return "<category>: <detail>".
NO_META = "no file meta information"
TRUNCATED = "truncated"
SHORT_PIXEL_DATA = "pixel data shorter than declared"
UNREADABLE = "unreadable"
_UNDEFINED = 0xFFFFFFFF

# Derived by running corpus_problem() over pydicom 3.0 test files and pydicom-data 1.0, not by guessing;
# tests/testing/test_corpus.py re-derives it so a new pydicom release that changes the corpus shows up.
KNOWN_BAD: Mapping[str, str] = {
    "ExplVR_BigEndNoMeta.dcm": NO_META,
    "ExplVR_LitEndNoMeta.dcm": NO_META,
    "no_meta.dcm": NO_META,
    "rtstruct.dcm": NO_META,
    "OT-PAL-8-face.dcm": NO_META,
    # The JPEG 2000 item sequence ends before its delimiter; pydicom drops the Pixel Data element.
    "emri_small_jpeg_2k_lossless_too_short.dcm": TRUNCATED,
    # The file ends inside a value whose declared length it does not hold; pydicom reads it silently.
    "MR_truncated.dcm": TRUNCATED,
    "rtplan_truncated.dcm": TRUNCATED,
}


def pydicom_test_files_dir() -> Path:
    """pydicom's own test files directory (pydicom/data/test_files)."""
    return Path(pydicom.data.__file__).parent / "test_files"


def pydicom_data_dir() -> Path | None:
    """The `data/` directory of the pydicom-data package (`data_store`), or None when not installed."""
    spec = importlib.util.find_spec("data_store")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data"
    return path if path.is_dir() else None


@cache
def _corpus_files() -> tuple[Path, ...]:
    found = sorted(
        p
        for p in pydicom_test_files_dir().rglob("*.dcm")
        if "dicomdirtests" not in p.parts
    )
    data_dir = pydicom_data_dir()
    if data_dir is None:
        LOGGER.warning(
            "pydicom-data is not installed: the corpus holds pydicom's test files only"
        )
    else:
        found.extend(sorted(data_dir.rglob("*.dcm")))
    return tuple(found)


def corpus_files() -> list[Path]:
    """Every .dcm in pydicom's test files (without dicomdirtests) and in pydicom-data, sorted per source."""
    return list(_corpus_files())


def _walk(ds: Dataset) -> None:
    """Convert every element, nested ones too: pydicom parses values lazily and fails only on access."""
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                _walk(item)


def _short_value(ds: Dataset) -> str | None:
    """A top-level value cut short by the end of the file: pydicom reads what is there without a word."""
    tags = (
        ds.keys()
    )  # get_item leaves raw elements raw; iterating the data set would convert them
    for tag in tags:
        raw = ds.get_item(tag)
        if (
            not isinstance(raw, RawDataElement)
            or raw.length == _UNDEFINED
            or not isinstance(raw.value, bytes)
        ):
            continue
        if len(raw.value) < raw.length:
            return f"{TRUNCATED}: element {tag} declares {raw.length} bytes, the file holds {len(raw.value)}"
    return None


def read_problem(path: Path) -> str | None:
    """Why pydicom cannot read `path` without force (all elements, pixel data included), or None."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = pydicom.dcmread(path)
        except InvalidDicomError as exc:
            return f"{NO_META}: {exc}"
        except EOFError as exc:
            return f"{TRUNCATED}: {exc}"
        # A probe must report any failure of the reader as the reason, whatever its type.
        except Exception as exc:  # noqa: BLE001
            return f"{UNREADABLE}: {type(exc).__name__}: {exc}"
        short = _short_value(
            ds
        )  # outside the broad except: a bug here must not pass for a bad file
        if short is not None:
            return short
        try:
            _walk(ds)
        except Exception as exc:  # noqa: BLE001
            return f"{UNREADABLE}: {type(exc).__name__}: {exc}"
    for warning in caught:
        message = str(warning.message)
        # pydicom only warns (and drops the element) when a file ends inside an element or sequence.
        if "End of file reached" in message or "than remaining bytes" in message:
            return f"{TRUNCATED}: {message}"
    return None


def readable(path: Path) -> bool:
    """True when pydicom reads `path` completely without force."""
    return read_problem(path) is None


def _native_pixel_problem(ds: Dataset) -> str | None:
    """Native Pixel Data shorter than Rows x Columns x Samples x Bits x Frames says it must be."""
    if "PixelData" not in ds:
        return None
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    # Without a transfer syntax (the meta lacks one), an undefined length marks encapsulated pixel data.
    if syntax.is_encapsulated if syntax else ds["PixelData"].is_undefined_length:
        return None
    try:
        rows, cols, bits = int(ds.Rows), int(ds.Columns), int(ds.BitsAllocated)
        samples, frames = int(ds.SamplesPerPixel), int(ds.get("NumberOfFrames") or 1)
    except (AttributeError, TypeError, ValueError):
        return (
            None  # attributes missing or malformed: a reader problem, not a length one
        )
    if str(ds.get("PhotometricInterpretation", "")) == "YBR_FULL_422":
        samples = 2  # two chroma samples are shared by each pair of pixels
    expected = (rows * cols * samples * bits * frames + 7) // 8
    actual = len(ds.PixelData)
    if actual < expected:
        return f"{SHORT_PIXEL_DATA}: native Pixel Data is {actual} bytes, {expected} expected"
    return None


def corpus_problem(path: Path) -> str | None:
    """Why an archive must refuse `path`: unreadable, truncated or short native pixel data; else None."""
    problem = read_problem(path)
    if problem is not None:
        return problem
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _native_pixel_problem(pydicom.dcmread(path))
