"""The realistic series generator: UIDs, geometry, pixel values, determinism, transfer syntaxes."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.uid import UID

from engine.errors import UnsupportedTransferSyntaxError
from engine.testing.corpus import pydicom_data_dir
from engine.testing.series import (
    CT_BASE,
    MR_SOURCES,
    SeriesFiles,
    ct_series_datasets,
    mr_series_datasets,
    write_ct_series,
    write_mr_series,
)
from engine.types import (
    DEFLATED_EXPLICIT_VR_LE,
    EXPLICIT_VR_BE,
    IMPLICIT_VR_LE,
    JPEG2000_LOSSLESS,
    RLE_LOSSLESS,
)


def _read(paths: list[Path]) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p) for p in paths]


def test_ct_series_is_one_series_of_distinct_positioned_slices(tmp_path: Path) -> None:
    paths = write_ct_series(tmp_path, 12, slice_thickness=1.25)
    slices = _read(paths)
    assert len({ds.SOPInstanceUID for ds in slices}) == 12
    assert len({ds.StudyInstanceUID for ds in slices}) == 1
    assert len({ds.SeriesInstanceUID for ds in slices}) == 1
    assert len({ds.FrameOfReferenceUID for ds in slices}) == 1
    assert [ds.InstanceNumber for ds in slices] == list(range(1, 13))
    z = np.array([float(ds.ImagePositionPatient[2]) for ds in slices])
    assert np.allclose(np.diff(z), 1.25)
    assert np.allclose([float(ds.SliceLocation) for ds in slices], z)
    for ds in slices:
        assert ds.SOPClassUID == pydicom.uid.CTImageStorage
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.RescaleIntercept == -1024 and ds.RescaleSlope == 1
        assert float(ds.SliceThickness) == 1.25
        assert UID(ds.SOPInstanceUID).is_valid


def test_ct_pixels_are_real_int16_values_that_vary_smoothly(tmp_path: Path) -> None:
    source = pydicom.dcmread(pydicom_data_dir() / CT_BASE).pixel_array  # type: ignore[operator]
    pixels = [ds.pixel_array for ds in _read(write_ct_series(tmp_path, 8))]
    for image in pixels:
        assert image.dtype == np.int16 and image.shape == (512, 512)
        assert image.min() >= source.min() and image.max() <= source.max()
        assert (
            image == -2000
        ).any()  # the padding outside the field of view stays exact
    for a, b in itertools.pairwise(pixels):
        assert not np.array_equal(a, b)
        # neighbours are the same anatomy: strongly correlated, not independent noise
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.9


def test_same_seed_same_bytes_other_seed_other_series(tmp_path: Path) -> None:
    first = write_ct_series(tmp_path / "a", 3, rows=128, cols=128, seed=7)
    again = write_ct_series(tmp_path / "b", 3, rows=128, cols=128, seed=7)
    other = write_ct_series(tmp_path / "c", 3, rows=128, cols=128, seed=8)
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in again]
    a, c = _read(first), _read(other)
    assert {ds.SOPInstanceUID for ds in a}.isdisjoint(ds.SOPInstanceUID for ds in c)
    assert a[0].SeriesInstanceUID != c[0].SeriesInstanceUID
    assert not np.array_equal(a[2].pixel_array, c[2].pixel_array)


def test_given_study_uid_is_shared_and_series_differ() -> None:
    study = "1.2.826.0.1.3680043.8.498.99"
    ct = next(ct_series_datasets(1, rows=64, cols=64, study_uid=study))
    mr = next(mr_series_datasets(1, rows=64, cols=64, study_uid=study))
    assert ct.StudyInstanceUID == mr.StudyInstanceUID == study
    assert ct.SeriesInstanceUID != mr.SeriesInstanceUID


@pytest.mark.parametrize("source", MR_SOURCES)
@pytest.mark.parametrize("size", [256, 512])
def test_mr_series_typical_sizes(tmp_path: Path, source: str, size: int) -> None:
    slices = _read(write_mr_series(tmp_path, 4, rows=size, cols=size, source=source))
    for ds in slices:
        image = ds.pixel_array
        assert ds.SOPClassUID == pydicom.uid.MRImageStorage
        assert image.dtype == np.uint16 and image.shape == (size, size)
        assert 0 < image.max() < 2 ** int(ds.BitsStored)
    assert len({ds.SOPInstanceUID for ds in slices}) == 4
    assert not np.array_equal(slices[0].pixel_array, slices[3].pixel_array)
    # the slice normal of an oblique source is followed, a step of the slice thickness each time
    positions = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in slices])
    steps = np.linalg.norm(np.diff(positions, axis=0), axis=1)
    assert np.allclose(steps, float(slices[0].SliceThickness), atol=1e-3)


@pytest.mark.parametrize(
    "syntax", [IMPLICIT_VR_LE, EXPLICIT_VR_BE, DEFLATED_EXPLICIT_VR_LE, RLE_LOSSLESS]
)
def test_transfer_syntaxes_carry_the_same_pixels(tmp_path: Path, syntax: str) -> None:
    reference = [
        ds.pixel_array
        for ds in _read(write_ct_series(tmp_path / "ref", 2, rows=64, cols=64))
    ]
    written = _read(
        write_ct_series(tmp_path / "ts", 2, rows=64, cols=64, transfer_syntax=syntax)
    )
    for ds, expected in zip(written, reference):
        assert ds.file_meta.TransferSyntaxUID == syntax
        np.testing.assert_array_equal(ds.pixel_array, expected)


def test_refuses_what_it_cannot_write(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedTransferSyntaxError, match=JPEG2000_LOSSLESS):
        write_ct_series(tmp_path, 1, transfer_syntax=JPEG2000_LOSSLESS)
    with pytest.raises(ValueError, match="n >= 1"):
        write_ct_series(tmp_path, 0)
    with pytest.raises(ValueError, match="not one of"):
        write_mr_series(tmp_path, 1, source="CT_small.dcm")


def test_series_files_describes_a_written_series(tmp_path: Path) -> None:
    paths = write_mr_series(tmp_path, 2, rows=64, cols=64)
    series = SeriesFiles.from_files(paths)
    first = pydicom.dcmread(paths[0])
    assert series.directory == tmp_path and series.files == tuple(paths)
    assert (series.study_uid, series.series_uid) == (
        first.StudyInstanceUID,
        first.SeriesInstanceUID,
    )


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10**12), n=st.integers(1, 3))
def test_uids_are_valid_and_unique_for_any_seed(seed: int, n: int) -> None:
    slices = list(ct_series_datasets(n, rows=32, cols=32, seed=seed))
    uids = [ds.SOPInstanceUID for ds in slices] + [
        slices[0].SeriesInstanceUID,
        slices[0].StudyInstanceUID,
    ]
    assert len(set(uids)) == len(uids)
    assert all(UID(uid).is_valid and len(uid) <= 64 for uid in uids)
