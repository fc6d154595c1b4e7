"""Micro benchmarks of the LMDB index: group-committed puts, point reads, series metadata."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pydicom
import pytest

from engine.index import Index, IndexEntry
from engine.testing.corpus import pydicom_test_files_dir
from engine.types import ChunkRef, InstanceRecord, LevelInfo, PixelDescription

SERIES = 300


def _records(study: str, series: str, n: int) -> list[IndexEntry]:
    ds = pydicom.dcmread(pydicom_test_files_dir() / "CT_small.dcm", stop_before_pixels=True)
    header = ds.to_json().encode()[:1500]  # header-sized bytes; the index treats them as opaque
    pixel = PixelDescription(512, 512, 1, 1, 16, 16, 15, 1, "MONOCHROME2", 0)
    out = []
    for i in range(n):
        sop = f"{series}.{i + 1}"
        record = InstanceRecord(
            sop_instance_uid=sop,
            sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
            study_instance_uid=study,
            series_instance_uid=series,
            transfer_syntax_uid="1.2.840.10008.1.2.1",
            received_bytes=525_000,
            stored_bytes=120_000,
            digest=f"{i:032x}",
            instance_number=i + 1,
            pixel=pixel,
            codec="htj2k",
            levels=(LevelInfo(0, 512, 512, "array", (ChunkRef(f"ab/{sop}/0/c.0.0.0", 0, 120_000, i),)),),
            query={"PatientID": "BENCH", "PatientName": "Bench^Patient", "StudyDate": "20260101", "Modality": "CT"},
        )
        out.append(IndexEntry(record, header, b""))
    return out


@pytest.fixture
def index(tmp_path: Path):  # type: ignore[no-untyped-def]
    with Index(tmp_path / "index") as idx:
        yield idx


def test_put_batch_of_64(benchmark, index: Index) -> None:  # type: ignore[no-untyped-def]
    counter = iter(range(10_000))

    def put() -> None:
        k = next(counter)
        index.put_instances(_records("1.2.3", f"1.2.3.{k}", 64))

    benchmark(put)
    assert index.stats().instances % 64 == 0


def test_get_instance(benchmark, index: Index) -> None:  # type: ignore[no-untyped-def]
    entries = _records("1.2.3", "1.2.3.4", SERIES)
    index.put_instances(entries)
    record = benchmark(index.get_instance, entries[150].record.sop_instance_uid)
    assert record == entries[150].record


def test_series_metadata_300(benchmark, index: Index) -> None:  # type: ignore[no-untyped-def]
    entries = _records("1.2.3", "1.2.3.4", SERIES)
    index.put_instances(entries)
    rows = benchmark(index.series_metadata, "1.2.3.4")
    assert len(rows) == SERIES
    assert dataclasses.asdict(rows[0][0])["instance_number"] == 1
