"""Real frames and corpus files for the codec tests (pydicom is used here only, never in engine.codecs)."""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest
from pydicom.encaps import generate_frames

from engine.types import PixelDescription

DATA_STORE = Path(pydicom.__file__).parent.parent / "data_store" / "data"
TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"


def path_of(name: str) -> Path:
    """A corpus file from pydicom-data or pydicom's own test files."""
    for folder in (DATA_STORE, TEST_FILES):
        if (folder / name).exists():
            return folder / name
    pytest.skip(f"{name} is not installed")
    raise AssertionError  # unreachable: skip raises


@functools.cache
def dataset(name: str) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path_of(name))


@functools.cache
def _pixels(name: str) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        array = dataset(name).pixel_array
    array.setflags(write=False)
    return array


def first_frame(name: str) -> np.ndarray:
    """Frame 0 of a corpus file as pydicom decodes it."""
    ds = dataset(name)
    array = _pixels(name)
    return array[0] if int(ds.get("NumberOfFrames", 1) or 1) > 1 else array


def frame_of(name: str, index: int) -> np.ndarray:
    ds = dataset(name)
    array = _pixels(name)
    return array[index] if int(ds.get("NumberOfFrames", 1) or 1) > 1 else array


def describe(ds: pydicom.Dataset) -> PixelDescription:
    """PixelDescription of a pydicom dataset (what engine.dicom will hand the codecs)."""
    float_kind = 32 if "FloatPixelData" in ds else 64 if "DoubleFloatPixelData" in ds else 0
    return PixelDescription(
        rows=ds.Rows,
        columns=ds.Columns,
        frames=int(ds.get("NumberOfFrames", 1) or 1),
        samples_per_pixel=ds.SamplesPerPixel,
        bits_allocated=ds.BitsAllocated,
        bits_stored=ds.BitsStored,
        high_bit=ds.HighBit,
        pixel_representation=ds.PixelRepresentation,
        photometric=str(ds.PhotometricInterpretation),
        planar_configuration=int(ds.get("PlanarConfiguration", 0) or 0),
        float_kind=float_kind,
    )


def codestreams(name: str) -> list[bytes]:
    """The encapsulated frames of a corpus file, fragments joined."""
    ds = dataset(name)
    count = int(ds.get("NumberOfFrames", 1) or 1)
    return list(generate_frames(ds.PixelData, number_of_frames=count))


def compressed_corpus() -> list[str]:
    """Every encapsulated corpus file pydicom itself can decode (the oracle)."""
    names = []
    for folder in (TEST_FILES, DATA_STORE):
        for path in sorted(folder.glob("*.dcm")):
            try:
                ds = dataset(path.name)
                if "PixelData" not in ds or not ds.file_meta.TransferSyntaxUID.is_compressed:
                    continue
                _pixels(path.name)
            except Exception:  # noqa: BLE001 - a file pydicom cannot read is simply not in the oracle set
                continue
            names.append(path.name)
    return names


# Real frames for storage codecs: name -> (file, description)
STORAGE_FRAMES = {
    "ct_int16": "693_UNCR.dcm",
    "mr_uint16": "MR2_UNCR.dcm",
    "mr_small_int16": "MR_small.dcm",
    "cr_uint16": "RG1_UNCR.dcm",
    "us_rgb": "US1_UNCR.dcm",
    "sc_rgb": "SC_rgb.dcm",
    "sc_rgb_16bit": "SC_rgb_16bit.dcm",
    "palette_uint8": "OBXXXX1A.dcm",
}
