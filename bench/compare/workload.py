"""The benchmark workload: generated CT and MR series and the large real radiographs, written as Part-10 files."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

from engine.testing.corpus import pydicom_data_dir
from engine.testing.series import write_ct_series, write_mr_series

LOGGER = logging.getLogger(__name__)

SERIES_NAMES = ("ct300", "mr", "cr")
RADIOGRAPHS = ("RG1_UNCR.dcm", "RG3_UNCR.dcm")  # 1955 x 1841 and 1760 x 1760 CR, 16 bits, uncompressed
# Sizes in full and small mode: (instances, rows, columns).
_CT = {False: (300, 512, 512), True: (8, 512, 512)}
_MR = {False: (100, 256, 256), True: (4, 256, 256)}
_MIXED = {False: 100, True: 4}  # the CT study stored while readers read (mixed-load phase)


@dataclass(frozen=True, slots=True)
class Series:
    """One series of the workload on disk, with the UIDs and keys the phases query by."""

    name: str
    files: tuple[Path, ...]
    patient_id: str
    study_uid: str
    series_uid: str
    sop_uids: tuple[str, ...]
    sop_classes: tuple[str, ...]

    @property
    def size(self) -> int:
        return sum(p.stat().st_size for p in self.files)


@dataclass(frozen=True, slots=True)
class Workload:
    """What every target ingests (`series`) plus one study per repetition stored during the mixed load."""

    series: tuple[Series, ...]
    mixed: tuple[Series, ...]

    @property
    def files(self) -> list[Path]:
        return [f for s in self.series for f in s.files]

    @property
    def size(self) -> int:
        return sum(s.size for s in self.series)

    @property
    def instances(self) -> int:
        return sum(len(s.files) for s in self.series)

    def main_series(self) -> Series:
        """The series the retrieve phases use: the largest one (the CT when it is there)."""
        return max(self.series, key=lambda s: (len(s.files), s.size))


def describe(name: str, files: Sequence[Path]) -> Series:
    """Read the UIDs of written files (headers only)."""
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    first = headers[0]
    return Series(
        name=name,
        files=tuple(files),
        patient_id=str(first.PatientID),
        study_uid=str(first.StudyInstanceUID),
        series_uid=str(first.SeriesInstanceUID),
        sop_uids=tuple(str(h.SOPInstanceUID) for h in headers),
        sop_classes=tuple(dict.fromkeys(str(h.SOPClassUID) for h in headers)),
    )


def write_radiographs(out_dir: Path) -> list[Path]:
    """The large CR images of pydicom-data as one study and series of their own (new UIDs, pixels untouched).

    Raises FileNotFoundError when pydicom-data is not installed.
    """
    data_dir = pydicom_data_dir()
    if data_dir is None:
        raise FileNotFoundError("the cr series needs pydicom-data (pip install pydicom-data)")
    out_dir.mkdir(parents=True, exist_ok=True)
    study, series = generate_uid(entropy_srcs=["bench-cr-study"]), generate_uid(entropy_srcs=["bench-cr-series"])
    paths = []
    for number, name in enumerate(RADIOGRAPHS, start=1):
        ds = pydicom.dcmread(data_dir / name)
        sop = generate_uid(entropy_srcs=["bench-cr", name])
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, series, sop
        ds.file_meta.MediaStorageSOPInstanceUID = sop
        ds.PatientID, ds.InstanceNumber, ds.SeriesNumber = "BENCH-CR", number, 1
        path = out_dir / f"CR{number:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def build_workload(root: Path, names: Sequence[str], *, small: bool, repeats: int = 1) -> Workload:
    """Write the named series (ct300, mr, cr) and the mixed-load study under `root`; reuse files already there.

    Raises ValueError for an unknown series name, FileNotFoundError without pydicom-data.
    """
    unknown = [n for n in names if n not in SERIES_NAMES]
    if unknown or not names:
        raise ValueError(f"unknown series {unknown or names}; choose from {', '.join(SERIES_NAMES)}")
    root = root / ("small" if small else "full")
    series = [_series(root, name, small) for name in names]
    count = _MIXED[small]
    mixed = [describe(f"mixed{r}", _cached(root / f"mixed{r}", count, _ct_writer(count, 100 + r))) for r in range(repeats)]
    return Workload(tuple(series), tuple(mixed))


def _ct_writer(count: int, seed: int) -> Callable[[Path], list[Path]]:
    return lambda directory: write_ct_series(directory, count, seed=seed)


def _series(root: Path, name: str, small: bool) -> Series:
    if name == "ct300":
        n, rows, cols = _CT[small]
        files = _cached(root / name, n, lambda d: write_ct_series(d, n, rows=rows, cols=cols, seed=3))
    elif name == "mr":
        n, rows, cols = _MR[small]
        files = _cached(root / name, n, lambda d: write_mr_series(d, n, rows=rows, cols=cols, seed=5))
    else:
        files = _cached(root / name, len(RADIOGRAPHS), write_radiographs)
    return describe(name, files)


def _cached(directory: Path, count: int, write: Callable[[Path], list[Path]]) -> list[Path]:
    """The files in `directory` when there are `count` of them (the generators are deterministic), else new."""
    existing = sorted(directory.glob("*.dcm")) if directory.is_dir() else []
    if len(existing) == count:
        return existing
    for stale in existing:
        stale.unlink()
    LOGGER.info("writing %d files into %s", count, directory)
    return sorted(write(directory))
