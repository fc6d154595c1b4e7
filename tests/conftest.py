"""Shared pytest set-up: version header, marker handling, and session fixtures built from real files."""

from __future__ import annotations

import os
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest

from engine.testing.corpus import corpus_files
from engine.testing.dcmtk import dcmtk_available, dcmtk_version
from engine.testing.series import SeriesFiles, write_ct_series, write_mr_series

_VERSIONED = ("pydicom", "pynetdicom", "zarr", "imagecodecs", "lmdb", "numba", "numpy")
_MARKERS = {
    "slow": "long-running tests (run with -m slow)",
    "dcmtk": "needs DCMTK command-line tools",
}


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def pytest_report_header(config: pytest.Config) -> list[str]:
    versions = ", ".join(f"{name} {_version(name)}" for name in _VERSIONED)
    return [f"versions: {versions}", f"dcmtk: {dcmtk_version() or 'not installed'}"]


def pytest_configure(config: pytest.Config) -> None:
    declared = {line.split(":", 1)[0].strip() for line in config.getini("markers")}
    for name, text in _MARKERS.items():
        if (
            name not in declared
        ):  # pyproject declares them; this keeps --strict-markers happy without it
            config.addinivalue_line("markers", f"{name}: {text}")


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    if dcmtk_available():
        return
    skip = pytest.mark.skip(
        reason="DCMTK tools (storescu, storescp, echoscu) not on PATH: apt-get install dcmtk"
    )
    for item in items:
        if "dcmtk" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def ct_series(tmp_path_factory: pytest.TempPathFactory) -> SeriesFiles:
    """A CT series of PACS_TEST_CT_SLICES (default 40) 512 x 512 int16 slices, written once per session."""
    n = int(os.environ.get("PACS_TEST_CT_SLICES", "40"))
    directory = tmp_path_factory.mktemp("ct_series")
    return SeriesFiles.from_files(write_ct_series(directory, n))


@pytest.fixture(scope="session")
def mr_series(tmp_path_factory: pytest.TempPathFactory) -> SeriesFiles:
    """An MR series of PACS_TEST_MR_SLICES (default 20) 256 x 256 uint16 slices, written once per session."""
    n = int(os.environ.get("PACS_TEST_MR_SLICES", "20"))
    directory = tmp_path_factory.mktemp("mr_series")
    return SeriesFiles.from_files(write_mr_series(directory, n))


@pytest.fixture(scope="session")
def corpus() -> list[Path]:
    """Every .dcm of pydicom's test files and pydicom-data (see engine.testing.corpus for the bad ones)."""
    return corpus_files()


@pytest.fixture
def tmp_archive(tmp_path: Path) -> Iterator[Path]:
    """An empty directory for a fresh archive."""
    archive = tmp_path / "archive"
    archive.mkdir()
    yield archive
