"""Serialisation of records and header blobs, and the ordering promises of the key encodings."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.errors import CorruptDataError
from engine.index import RECORD_VERSION, _keys, _records, decode_instance, encode_instance
from engine.index._model import PatientRecord, SeriesRecord, StudyRecord
from engine.types import ChunkRef, Encapsulation, InstanceRecord, LevelInfo, PixelDescription

uids = st.from_regex(r"[12](\.[1-9][0-9]{0,8}){2,12}", fullmatch=True)
small = st.integers(min_value=0, max_value=2**40)
hexes = st.binary(min_size=16, max_size=16).map(bytes.hex)
texts = st.text(max_size=40)

pixels = st.builds(
    PixelDescription,
    rows=small,
    columns=small,
    frames=small,
    samples_per_pixel=st.sampled_from([1, 3]),
    bits_allocated=st.sampled_from([1, 8, 16, 32, 64]),
    bits_stored=small,
    high_bit=small,
    pixel_representation=st.sampled_from([0, 1]),
    photometric=texts,
    planar_configuration=st.sampled_from([0, 1]),
    float_kind=st.sampled_from([0, 32, 64]),
)
chunks = st.builds(ChunkRef, key=texts, offset=small, length=small, crc32=st.integers(0, 2**32 - 1))
levels = st.builds(
    LevelInfo,
    level=st.integers(0, 8),
    rows=small,
    columns=small,
    source=st.sampled_from(["array", "resolution"]),
    chunks=st.lists(chunks, max_size=4).map(tuple),
    level_prefixes=st.lists(st.lists(small, max_size=5).map(tuple), max_size=4).map(tuple),
    codec=st.sampled_from(["", "htj2k", "jpegls", "zstd"]),
)
encapsulations = st.builds(
    Encapsulation,
    basic_offset_table=st.binary(max_size=64),
    fragments_per_frame=st.lists(st.lists(small, min_size=1, max_size=3).map(tuple), max_size=4).map(tuple),
    extended_offset_table=st.binary(max_size=32),
    trailing=st.binary(max_size=8),
)
records = st.builds(
    InstanceRecord,
    sop_instance_uid=uids,
    sop_class_uid=uids,
    study_instance_uid=uids,
    series_instance_uid=uids,
    transfer_syntax_uid=uids,
    received_bytes=small,
    stored_bytes=small,
    digest=hexes,
    instance_number=st.none() | st.integers(-(2**40), 2**40),
    pixel=st.none() | pixels,
    codec=st.none() | st.sampled_from(["htj2k", "jpegls", "zstd", "passthrough"]),
    levels=st.lists(levels, max_size=3).map(tuple),
    frame_hashes=st.lists(hexes, max_size=4).map(tuple),
    encapsulation=st.none() | encapsulations,
    pixel_tail=st.binary(max_size=4),
    received_at=texts,
    query=st.dictionaries(st.sampled_from(["PatientID", "PatientName", "StudyDate", "Modality"]), texts),
    generation=st.integers(0, 2**31),
    layout=st.sampled_from(["frames", "raw"]),
    pixel_element_header=st.binary(max_size=12),
)


@given(records)
def test_instance_record_round_trips(record: InstanceRecord) -> None:
    assert decode_instance(encode_instance(record)) == record


def test_real_record_round_trips_and_carries_its_version(factory) -> None:
    record = factory.record()
    raw = encode_instance(record)
    assert json.loads(raw)[0] == RECORD_VERSION
    assert decode_instance(raw) == record


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"[99,1,2]", "format version 99"),
        (b'{"a":1}', "not a versioned array"),
        (b'[1,"x"]', "unexpected layout"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_damaged_or_future_records_are_named(raw: bytes, message: str) -> None:
    with pytest.raises(CorruptDataError, match=message):
        decode_instance(raw)


@given(st.builds(StudyRecord, modalities=st.lists(texts, max_size=3).map(tuple)))
def test_study_record_round_trips(study: StudyRecord) -> None:
    assert _records.decode_study(_records.encode_study(study)) == study


@given(st.builds(SeriesRecord, series_number=st.none() | st.integers()))
def test_series_record_round_trips(series: SeriesRecord) -> None:
    assert _records.decode_series(_records.encode_series(series)) == series


@given(st.builds(PatientRecord))
def test_patient_record_round_trips(patient: PatientRecord) -> None:
    assert _records.decode_patient(_records.encode_patient(patient)) == patient


@given(st.binary(max_size=3000), st.binary(max_size=300))
def test_header_blob_round_trips(prefix: bytes, suffix: bytes) -> None:
    assert _records.unpack_header(_records.pack_header(prefix, suffix)) == (prefix, suffix)


def test_real_header_is_compressed_and_damage_is_detected(factory) -> None:
    blob = _records.pack_header(factory.prefix, factory.suffix)
    assert len(blob) < len(factory.prefix) // 2
    with pytest.raises(CorruptDataError, match="does not decompress"):
        _records.unpack_header(blob[:-10])
    with pytest.raises(CorruptDataError, match="shorter than its own header"):
        _records.unpack_header(b"\x01")


@given(st.lists(st.tuples(st.none() | st.integers(-(2**70), 2**70), uids), min_size=1, max_size=30))
def test_instance_keys_sort_by_number_then_uid(items: list[tuple[int | None, str]]) -> None:
    series = b"1.2.3"
    keyed = sorted(items, key=lambda it: _keys.instance_order_key(series, it[0], it[1].encode()))

    def expected(it: tuple[int | None, str]) -> tuple[bool, int, bytes]:
        number, sop = it
        return (number is None, 0 if number is None else _keys.clamp_int64(number), sop.encode())

    assert [expected(it) for it in keyed] == sorted(expected(it) for it in items)
    prefix = _keys.children_prefix(series)
    for number, sop in items:
        key = _keys.instance_order_key(series, number, sop.encode())
        assert _keys.instance_from_order_key(key, len(prefix)) == sop


@given(st.text(max_size=30))
def test_patient_name_normalisation_is_case_and_padding_blind(name: str) -> None:
    base = _keys.normalise_value("PatientName", name)
    assert _keys.normalise_value("PatientName", name.lower() + "^^ ") == _keys.normalise_value(
        "PatientName", name.lower()
    )
    assert _keys.SEP.decode() not in base
    assert base == base.upper()


@given(records)
def test_instance_summary_agrees_with_the_full_record(record: InstanceRecord) -> None:
    from engine.index._records import decode_instance_summary

    summary = decode_instance_summary(encode_instance(record))
    assert (summary.sop_instance_uid, summary.sop_class_uid, summary.study_instance_uid) == (
        record.sop_instance_uid, record.sop_class_uid, record.study_instance_uid,
    )  # fmt: skip
    assert summary.series_instance_uid == record.series_instance_uid
    assert summary.instance_number == record.instance_number
    assert summary.frames == (record.pixel.frames if record.pixel is not None else None)
    assert dict(summary.query) == record.query
