"""Fixtures for the index tests: instance records built the way the archive builds them, from real headers."""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from engine.index import Index, IndexEntry
from engine.types import ChunkRef, InstanceRecord, LevelInfo, PixelDescription

CT_PIXELS = PixelDescription(
    rows=512,
    columns=512,
    frames=1,
    samples_per_pixel=1,
    bits_allocated=16,
    bits_stored=12,
    high_bit=11,
    pixel_representation=1,
    photometric="MONOCHROME2",
    planar_configuration=0,
)
PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010) little endian


def _uid(*parts: object) -> str:
    """A deterministic UID under pydicom's root, as a modality would mint one."""
    return str(generate_uid(entropy_srcs=[str(p) for p in parts]))


def _split_header(name: str) -> tuple[bytes, bytes, pydicom.Dataset]:
    path = get_testdata_file(name)
    assert path is not None
    raw = Path(path).read_bytes()
    at = raw.rindex(PIXEL_DATA_TAG)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    # Native Pixel Data in explicit VR LE: tag, "OW", 2 reserved bytes, 4-byte length, then the value.
    length = int.from_bytes(raw[at + 8 : at + 12], "little")
    return raw[:at], raw[at + 12 + length :], ds


@dataclass
class Factory:
    """Builds studies, series and instance records with real header bytes from pydicom's CT_small.dcm."""

    prefix: bytes
    suffix: bytes
    patient_id: str
    patient_name: str
    study_date: str
    counter: int = 0
    studies: list[str] = field(default_factory=list)

    def study_uid(self, n: int = 0) -> str:
        return _uid("study", n)

    def series_uid(self, study: int, n: int) -> str:
        return _uid("series", study, n)

    def sop_uid(self, study: int, series: int, n: int) -> str:
        return _uid("sop", study, series, n)

    def record(
        self,
        *,
        study: int = 0,
        series: int = 0,
        number: int | None = 1,
        sop: str | None = None,
        version: int = 0,
        patient_id: str | None = None,
        patient_name: str | None = None,
        study_date: str | None = None,
        modality: str = "CT",
        accession: str | None = None,
        study_uid: str | None = None,
    ) -> InstanceRecord:
        """One CT instance; `version` changes its digest (a different instance under the same SOP UID)."""
        study_uid = study_uid or self.study_uid(study)
        series_uid = self.series_uid(study, series)
        sop = sop or self.sop_uid(study, series, number if number is not None else -1)
        digest = hashlib.blake2b(f"{sop}/{version}".encode(), digest_size=16).hexdigest()
        length = 100_000 + (number or 0) * 17 + version
        chunk_key = f"{study_uid}/{series_uid}/{sop}/0/c/0/0/0"
        level0 = LevelInfo(
            level=0,
            rows=512,
            columns=512,
            source="array",
            chunks=(ChunkRef(chunk_key, 0, length, zlib.crc32(chunk_key.encode())),),
            level_prefixes=((length, length * 37 // 100, length * 12 // 100, length * 4 // 100),),
        )
        query = {
            "PatientID": self.patient_id if patient_id is None else patient_id,
            "PatientName": self.patient_name if patient_name is None else patient_name,
            "PatientBirthDate": "19700101",
            "PatientSex": "F",
            "PatientAge": "042Y",
            "StudyDate": self.study_date if study_date is None else study_date,
            "StudyTime": "072730",
            "AccessionNumber": f"ACC{study:05d}" if accession is None else accession,
            "StudyDescription": "CT CHEST W/O CONTRAST",
            "Modality": modality,
            "SeriesNumber": str(series + 1),
            "SeriesDescription": f"AXIAL {series}",
            "InstanceNumber": "" if number is None else str(number),
        }
        return InstanceRecord(
            sop_instance_uid=sop,
            sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
            study_instance_uid=study_uid,
            series_instance_uid=series_uid,
            transfer_syntax_uid="1.2.840.10008.1.2.1",
            received_bytes=524_288 + len(self.prefix),
            stored_bytes=length + 900,
            digest=digest,
            instance_number=number,
            pixel=CT_PIXELS,
            codec="htj2k",
            levels=(level0,),
            frame_hashes=(hashlib.blake2b(digest.encode(), digest_size=16).hexdigest(),),
            received_at="2026-01-02T03:04:05.678Z",
            query=query,
        )

    def entry(self, record: InstanceRecord, *, overwrite: bool = False) -> IndexEntry:
        return IndexEntry(record, self.prefix, self.suffix, overwrite=overwrite)

    def series(self, n: int, *, study: int = 0, series: int = 0, **kw: object) -> list[IndexEntry]:
        return [self.entry(self.record(study=study, series=series, number=i + 1, **kw)) for i in range(n)]  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def factory() -> Factory:
    prefix, suffix, ds = _split_header("CT_small.dcm")
    return Factory(prefix, suffix, str(ds.PatientID), str(ds.PatientName), str(ds.StudyDate))


@pytest.fixture
def index(tmp_path: Path) -> Iterator[Index]:
    with Index(tmp_path / "index", map_size=1 << 24) as idx:
        yield idx
