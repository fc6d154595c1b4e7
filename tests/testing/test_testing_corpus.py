"""The corpus listing and the table of known-bad files, re-derived by actually reading every file."""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
import pytest

from engine.testing.corpus import (
    KNOWN_BAD,
    SHORT_PIXEL_DATA,
    TRUNCATED,
    corpus_problem,
    pydicom_data_dir,
    pydicom_test_files_dir,
    read_problem,
    readable,
)
from engine.testing.series import write_ct_series


def test_corpus_lists_both_sources_without_dicomdir_tests(corpus: list[Path]) -> None:
    data_dir = pydicom_data_dir()
    assert data_dir is not None, "pydicom-data is part of the test extra"
    assert any(p.is_relative_to(pydicom_test_files_dir()) for p in corpus)
    assert any(p.is_relative_to(data_dir) for p in corpus)
    assert all(p.suffix == ".dcm" and p.is_file() for p in corpus)
    assert not any("dicomdirtests" in p.parts for p in corpus)
    assert len(set(corpus)) == len(corpus) > 100
    assert data_dir / "693_UNCR.dcm" in corpus


def test_known_bad_table_matches_what_reading_finds(corpus: list[Path]) -> None:
    found = {}
    for path in corpus:
        problem = corpus_problem(path)
        if problem is not None:
            found[path.name] = problem.split(":", 1)[0]
    assert found == dict(KNOWN_BAD)


def test_readable_agrees_with_pydicom(corpus: list[Path]) -> None:
    for path in corpus:
        expected = (
            path.name not in KNOWN_BAD or KNOWN_BAD[path.name] == SHORT_PIXEL_DATA
        )
        assert readable(path) is expected, path.name


def test_a_file_cut_in_its_pixel_data_is_truncated(tmp_path: Path) -> None:
    source = pydicom_data_dir() / "693_UNCR.dcm"  # type: ignore[operator]
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    problem = read_problem(cut)
    assert (
        problem is not None
        and problem.startswith(TRUNCATED)
        and "(7FE0,0010)" in problem
    )
    intact = tmp_path / "intact.dcm"
    shutil.copy(source, intact)
    assert read_problem(intact) is None


def test_consistently_short_native_pixel_data_is_named(tmp_path: Path) -> None:
    (path,) = write_ct_series(tmp_path, 1, rows=64, cols=64)
    ds = pydicom.dcmread(path)
    ds.PixelData = ds.PixelData[
        :-128
    ]  # a well-formed element, just too short for 64 x 64 x 16 bit
    ds.save_as(path)
    assert readable(path)
    assert (
        corpus_problem(path)
        == f"{SHORT_PIXEL_DATA}: native Pixel Data is 8064 bytes, 8192 expected"
    )


@pytest.mark.parametrize("name", ["no_meta.dcm", "rtstruct.dcm"])
def test_files_without_meta_are_not_readable(name: str) -> None:
    problem = read_problem(pydicom_test_files_dir() / name)
    assert problem is not None and problem.startswith("no file meta information")
