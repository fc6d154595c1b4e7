"""Realistic CT and MR series built from real slices of pydicom-data, for tests and benchmarks.

A helper layer on top of the engine (not part of the core): it imports pydicom and numpy directly.

Each slice is a blend of real images: a base slice and a partner (its left-right mirror for the head
CT, the same slice displaced for MR) with a slowly varying weight, a small slowly varying integer shift,
and for CT a low-weight blend of the two real enhanced-CT frames. Nothing is random noise: the texture
is the real scanner's, so codecs see realistic entropy. Every slice has its own SOP Instance UID and
position; all are deterministic given the seed.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    PYDICOM_ROOT_UID,
    UID,
    RLELossless,
    generate_uid,
)

from engine.errors import UnsupportedTransferSyntaxError
from engine.testing.corpus import pydicom_data_dir
from engine.types import (
    DEFLATED_EXPLICIT_VR_LE,
    EXPLICIT_VR_BE,
    EXPLICIT_VR_LE,
    IMPLICIT_VR_LE,
    RLE_LOSSLESS,
)

CT_BASE = "693_UNCR.dcm"  # head CT, 512 x 512 int16, HU = stored - 1024, padding -2000
CT_DETAIL = (
    "eCT_Supplemental.dcm"  # two real 512 x 512 enhanced-CT brain frames, same rescale
)
MR_SOURCES = (
    "MR2_UNCR.dcm",
    "MR-SIEMENS-DICOM-WithOverlays.dcm",
)  # shoulder 1024^2, abdomen 484^2
WRITABLE_SYNTAXES = (
    IMPLICIT_VR_LE,
    EXPLICIT_VR_LE,
    EXPLICIT_VR_BE,
    DEFLATED_EXPLICIT_VR_LE,
    RLE_LOSSLESS,
)

Image = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class _Sources:
    """Header template and real images, fitted to the requested frame size."""

    template: Dataset  # without pixel data, group lengths or overlays
    base: Image
    details: tuple[Image, ...]  # blended at low weight (CT only)
    spacing_scale: int  # how many source pixels one output pixel covers
    low: int  # value range of the sources: output stays inside it
    high: int
    padding: int | None  # Pixel Padding Value kept exact outside the field of view


def _source_path(name: str) -> Path:
    data_dir = pydicom_data_dir()
    if data_dir is None or not (data_dir / name).is_file():
        raise FileNotFoundError(
            f"{name} not found: the series helpers need pydicom-data (pip install pydicom-data)"
        )
    return data_dir / name


def _fit(
    image: npt.NDArray[np.generic], rows: int, cols: int, fill: float
) -> tuple[Image, int]:
    """Block-mean downsample by the nearest integer factor, then centre crop or pad to rows x cols."""
    src = image.astype(np.float32)
    factor = max(1, round(min(src.shape[0] / rows, src.shape[1] / cols)))
    if factor > 1:
        h, w = src.shape[0] // factor * factor, src.shape[1] // factor * factor
        src = (
            src[:h, :w]
            .reshape(h // factor, factor, w // factor, factor)
            .mean(axis=(1, 3))
        )
    out = np.full((rows, cols), fill, dtype=np.float32)
    h, w = min(rows, src.shape[0]), min(cols, src.shape[1])
    sy, sx = (src.shape[0] - h) // 2, (src.shape[1] - w) // 2
    dy, dx = (rows - h) // 2, (cols - w) // 2
    out[dy : dy + h, dx : dx + w] = src[sy : sy + h, sx : sx + w]
    return out, factor


def _template(ds: Dataset) -> Dataset:
    """A fresh header from a real one: no pixel data, stale group lengths, overlays or file meta."""
    template = Dataset()
    for elem in ds:
        tag = elem.tag
        if tag.element == 0 or 0x6000 <= tag.group <= 0x60FF or tag >= 0x7FE00000:
            continue
        template.add(copy.deepcopy(ds[tag]))
    return template


def _readonly(image: Image) -> Image:
    image.setflags(write=False)
    return image


@cache
def _ct_sources(rows: int, cols: int) -> _Sources:
    ds = pydicom.dcmread(_source_path(CT_BASE))
    padding = int(ds.PixelPaddingValue)
    base, factor = _fit(ds.pixel_array, rows, cols, padding)
    # The enhanced-CT frames share the base's rescale (HU = stored - 1024), so stored values blend as is.
    frames = pydicom.dcmread(_source_path(CT_DETAIL)).pixel_array
    details = tuple(_readonly(_fit(frame, rows, cols, 0)[0]) for frame in frames)
    low = int(min(base.min(), *(d.min() for d in details)))
    high = int(max(base.max(), *(d.max() for d in details)))
    return _Sources(_template(ds), _readonly(base), details, factor, low, high, padding)


@cache
def _mr_sources(rows: int, cols: int, source: str) -> _Sources:
    if source not in MR_SOURCES:
        raise ValueError(f"MR source {source!r} is not one of {', '.join(MR_SOURCES)}")
    ds = pydicom.dcmread(_source_path(source))
    base, factor = _fit(ds.pixel_array, rows, cols, 0)
    return _Sources(
        _template(ds),
        _readonly(base),
        (),
        factor,
        int(base.min()),
        int(base.max()),
        None,
    )


def _shift(image: Image, dy: int, dx: int, fill: float) -> Image:
    """Translate by whole pixels, filling the uncovered border instead of wrapping round."""
    out = np.full_like(image, fill)
    h, w = image.shape
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = image[
        max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def _wave(i: int, period: float, phase: float) -> float:
    """A slow, smooth 0..1 oscillation along the series."""
    return 0.5 - 0.5 * math.cos(2.0 * math.pi * i / period + phase)


@dataclass(frozen=True, slots=True)
class _Motion:
    """Periods, phases and amplitudes of the slow variations; drawn once from the seed."""

    periods: tuple[float, ...]
    phases: tuple[float, ...]
    amplitude: int

    @classmethod
    def from_seed(cls, seed: int, rows: int) -> _Motion:
        rng = np.random.default_rng(seed)
        periods = tuple(float(p) for p in rng.uniform(40.0, 140.0, size=5))
        phases = tuple(float(p) for p in rng.uniform(0.0, 2.0 * math.pi, size=5))
        return cls(periods, phases, max(1, rows // 64))

    def wave(self, k: int, i: int) -> float:
        return _wave(i, self.periods[k], self.phases[k])

    def offset(self, k: int, i: int) -> int:
        return round(self.amplitude * (2.0 * self.wave(k, i) - 1.0))


def _ct_pixels(src: _Sources, motion: _Motion, i: int) -> npt.NDArray[np.int16]:
    fill = float(src.padding if src.padding is not None else src.low)
    dy, dx = motion.offset(0, i), motion.offset(1, i)
    base = _shift(src.base, dy, dx, fill)
    mirror = _shift(src.base[:, ::-1], dy, -dx, fill)
    mirror_weight = 0.5 * motion.wave(2, i)
    detail_weight = 0.3 * motion.wave(3, i)
    mix = motion.wave(4, i)
    detail = (1.0 - mix) * src.details[0] + mix * src.details[-1]
    image = (
        (1.0 - mirror_weight - detail_weight) * base
        + mirror_weight * mirror
        + detail_weight * detail
    )
    out = np.clip(np.rint(image), src.low, src.high).astype(np.int16)
    if src.padding is not None:
        out[base == src.padding] = (
            src.padding
        )  # outside the field of view stays exactly padding
    return out


def _mr_pixels(src: _Sources, motion: _Motion, i: int) -> npt.NDArray[np.uint16]:
    dy, dx = motion.offset(0, i), motion.offset(1, i)
    base = _shift(src.base, dy, dx, 0.0)
    # The neighbouring anatomy: the same slice displaced further, fading in and out along the series.
    partner = _shift(src.base, -2 * dy, dx + motion.amplitude, 0.0)
    weight = 0.5 * motion.wave(2, i)
    gain = 1.0 - 0.1 * motion.wave(
        3, i
    )  # receive-coil sensitivity varies from slice to slice
    image = gain * ((1.0 - weight) * base + weight * partner)
    return np.clip(np.rint(image), src.low, src.high).astype(np.uint16)


def _uid(seed: int, *parts: object) -> UID:
    """A deterministic UID under a root derived from the seed."""
    return generate_uid(
        prefix=f"{PYDICOM_ROOT_UID}{seed}.",
        entropy_srcs=["pacs-engine-testing", *map(str, parts)],
    )


def _check(n: int, rows: int, cols: int, seed: int, transfer_syntax: str) -> None:
    if n < 1 or rows < 16 or cols < 16:
        raise ValueError(
            f"a series needs n >= 1 and rows, cols >= 16 (got n={n}, {rows} x {cols})"
        )
    if seed < 0 or seed > 10**12:
        raise ValueError(f"seed must be between 0 and 10**12, got {seed}")
    if transfer_syntax not in WRITABLE_SYNTAXES:
        raise UnsupportedTransferSyntaxError(
            f"the series helpers write {', '.join(WRITABLE_SYNTAXES)}; not {transfer_syntax}"
        )


@dataclass(frozen=True, slots=True)
class _SeriesSpec:
    kind: str
    seed: int
    study_uid: str
    series_uid: str
    thickness: float
    transfer_syntax: str


def _positions(
    template: Dataset, thickness: float, i: int
) -> tuple[list[float], float]:
    """Image Position (Patient) of slice i: the template's origin stepped along the slice normal."""
    orientation = [float(v) for v in template.ImageOrientationPatient]
    row, col = np.array(orientation[:3]), np.array(orientation[3:])
    normal = np.cross(row, col)
    origin = np.array([float(v) for v in template.ImagePositionPatient])
    position = origin + i * thickness * normal
    location = float(np.dot(position, normal))
    return [round(float(v), 4) for v in position], round(location, 4)


def _slice_dataset(
    src: _Sources, spec: _SeriesSpec, i: int, pixels: npt.NDArray[np.integer]
) -> Dataset:
    ds = copy.deepcopy(src.template)
    sop_uid = _uid(spec.seed, spec.kind, "sop", spec.series_uid, i)
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = spec.study_uid
    ds.SeriesInstanceUID = spec.series_uid
    ds.FrameOfReferenceUID = _uid(
        spec.seed, spec.kind, "frame-of-reference", spec.study_uid
    )
    ds.InstanceNumber = i + 1
    position, location = _positions(src.template, spec.thickness, i)
    ds.ImagePositionPatient = position
    ds.SliceLocation = location
    ds.SliceThickness = spec.thickness
    ds.SpacingBetweenSlices = spec.thickness
    ds.Rows, ds.Columns = pixels.shape
    spacing = [float(v) * src.spacing_scale for v in src.template.PixelSpacing]
    ds.PixelSpacing = [round(v, 6) for v in spacing]
    big_endian = spec.transfer_syntax == EXPLICIT_VR_BE
    ds.PixelData = pixels.astype(
        pixels.dtype.newbyteorder(">" if big_endian else "<")
    ).tobytes()
    ds["PixelData"].VR = "OW"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = UID(
        EXPLICIT_VR_LE if spec.transfer_syntax == RLE_LOSSLESS else spec.transfer_syntax
    )
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    if spec.transfer_syntax == RLE_LOSSLESS:
        ds.compress(RLELossless, encoding_plugin="pydicom")
    return ds


def _series(
    kind: str,
    src: _Sources,
    n: int,
    seed: int,
    study_uid: str | None,
    thickness: float,
    transfer_syntax: str,
) -> Iterator[Dataset]:
    study = study_uid or _uid(seed, "study")
    spec = _SeriesSpec(
        kind, seed, study, _uid(seed, kind, "series", study), thickness, transfer_syntax
    )
    motion = _Motion.from_seed(seed, src.base.shape[0])
    pixels = _ct_pixels if kind == "CT" else _mr_pixels
    for i in range(n):
        yield _slice_dataset(src, spec, i, pixels(src, motion, i))


def ct_series_datasets(
    n: int = 300,
    *,
    rows: int = 512,
    cols: int = 512,
    seed: int = 0,
    study_uid: str | None = None,
    slice_thickness: float = 1.0,
    transfer_syntax: str = EXPLICIT_VR_LE,
) -> Iterator[Dataset]:
    """Yield the slices of a CT series (int16, HU = stored - 1024) as pydicom Datasets with file meta.

    Raises ValueError for impossible sizes, UnsupportedTransferSyntaxError for syntaxes outside
    WRITABLE_SYNTAXES (RLE uses pydicom's own encoder: about 60 ms a 512 x 512 slice).
    """
    _check(n, rows, cols, seed, transfer_syntax)
    return _series(
        "CT",
        _ct_sources(rows, cols),
        n,
        seed,
        study_uid,
        slice_thickness,
        transfer_syntax,
    )


def mr_series_datasets(
    n: int = 100,
    *,
    rows: int = 256,
    cols: int = 256,
    seed: int = 0,
    study_uid: str | None = None,
    slice_thickness: float = 3.0,
    transfer_syntax: str = EXPLICIT_VR_LE,
    source: str = MR_SOURCES[0],
) -> Iterator[Dataset]:
    """Yield the slices of an MR series (uint16, 12 bits stored) built from one of MR_SOURCES."""
    _check(n, rows, cols, seed, transfer_syntax)
    return _series(
        "MR",
        _mr_sources(rows, cols, source),
        n,
        seed,
        study_uid,
        slice_thickness,
        transfer_syntax,
    )


def _write(datasets: Iterator[Dataset], out_dir: Path, prefix: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for ds in datasets:
        path = out_dir / f"{prefix}{int(ds.InstanceNumber):05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_ct_series(
    out_dir: Path,
    n: int = 300,
    *,
    rows: int = 512,
    cols: int = 512,
    seed: int = 0,
    study_uid: str | None = None,
    slice_thickness: float = 1.0,
    transfer_syntax: str = EXPLICIT_VR_LE,
) -> list[Path]:
    """Write a CT series as Part-10 files CT00001.dcm... into out_dir (created); return their paths."""
    datasets = ct_series_datasets(
        n,
        rows=rows,
        cols=cols,
        seed=seed,
        study_uid=study_uid,
        slice_thickness=slice_thickness,
        transfer_syntax=transfer_syntax,
    )
    return _write(datasets, out_dir, "CT")


def write_mr_series(
    out_dir: Path,
    n: int = 100,
    *,
    rows: int = 256,
    cols: int = 256,
    seed: int = 0,
    study_uid: str | None = None,
    slice_thickness: float = 3.0,
    transfer_syntax: str = EXPLICIT_VR_LE,
    source: str = MR_SOURCES[0],
) -> list[Path]:
    """Write an MR series as Part-10 files MR00001.dcm... into out_dir (created); return their paths."""
    datasets = mr_series_datasets(
        n,
        rows=rows,
        cols=cols,
        seed=seed,
        study_uid=study_uid,
        slice_thickness=slice_thickness,
        transfer_syntax=transfer_syntax,
        source=source,
    )
    return _write(datasets, out_dir, "MR")


@dataclass(frozen=True, slots=True)
class SeriesFiles:
    """A generated series on disk: its directory, files in slice order, and its UIDs."""

    directory: Path
    files: tuple[Path, ...]
    study_uid: str
    series_uid: str

    @classmethod
    def from_files(cls, files: Sequence[Path]) -> SeriesFiles:
        """Describe written files (all in one directory), reading the UIDs from the first one."""
        if not files:
            raise ValueError("an empty list of files is not a series")
        ds = pydicom.dcmread(files[0], stop_before_pixels=True)
        return cls(
            files[0].parent,
            tuple(files),
            str(ds.StudyInstanceUID),
            str(ds.SeriesInstanceUID),
        )
