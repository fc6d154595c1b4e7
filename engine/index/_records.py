"""Serialisation of everything the index stores as a value: records, header blobs, changes, totals.

Records are JSON arrays whose first element is the format version, so a later engine can still read
records written by this one. Positional arrays keep the values small and json's C codec keeps them fast
(measured against short-key objects: see the package report).
"""

from __future__ import annotations

import base64
import json
import struct
import zlib
from collections.abc import Callable, Sequence
from typing import Any, cast

from engine.errors import CorruptDataError
from engine.index._model import Change, ChangeOp, IndexStats, InstanceSummary, PatientRecord, SeriesRecord, StudyRecord
from engine.types import ChunkRef, Encapsulation, InstanceRecord, LevelInfo, PixelDescription

RECORD_VERSION = 1

_dumps = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode
_loads = json.loads


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii") if data else ""


def _unb64(text: str) -> bytes:
    return base64.b64decode(text) if text else b""


def _load(raw: bytes, what: str) -> list[object]:
    """Parse a stored array and check its format version."""
    try:
        value = _loads(raw)
    except ValueError as exc:
        raise CorruptDataError(f"stored {what} is not valid JSON: {exc}") from None
    if not isinstance(value, list) or not value:
        raise CorruptDataError(f"stored {what} is not a versioned array")
    if value[0] != RECORD_VERSION:
        raise CorruptDataError(
            f"stored {what} has format version {value[0]!r}; this engine reads version {RECORD_VERSION}"
        )
    return value


# --- InstanceRecord -------------------------------------------------------------------------------


def _pixel_out(p: PixelDescription | None) -> list[object] | None:
    if p is None:
        return None
    return [
        p.rows,
        p.columns,
        p.frames,
        p.samples_per_pixel,
        p.bits_allocated,
        p.bits_stored,
        p.high_bit,
        p.pixel_representation,
        p.photometric,
        p.planar_configuration,
        p.float_kind,
    ]


def _pixel_in(v: list[object] | None) -> PixelDescription | None:
    if v is None:
        return None
    return PixelDescription(*cast("list[Any]", v))


def _level_out(lv: LevelInfo) -> list[object]:
    chunks = [[c.key, c.offset, c.length, c.crc32] for c in lv.chunks]
    return [lv.level, lv.rows, lv.columns, lv.source, chunks, lv.level_prefixes, lv.codec]


def _level_in(v: list[object]) -> LevelInfo:
    level, rows, columns, source, chunks, prefixes, codec = v
    return LevelInfo(
        level=cast(int, level),
        rows=cast(int, rows),
        columns=cast(int, columns),
        source=cast(str, source),
        chunks=tuple(ChunkRef(*c) for c in cast("list[list[Any]]", chunks)),
        level_prefixes=tuple(tuple(p) for p in cast(list[list[int]], prefixes)),
        codec=cast(str, codec),
    )


def _encap_out(e: Encapsulation | None) -> list[object] | None:
    if e is None:
        return None
    return [_b64(e.basic_offset_table), e.fragments_per_frame, _b64(e.extended_offset_table), _b64(e.trailing)]


def _encap_in(v: list[object] | None) -> Encapsulation | None:
    if v is None:
        return None
    bot, fragments, eot, trailing = v
    return Encapsulation(
        basic_offset_table=_unb64(cast(str, bot)),
        fragments_per_frame=tuple(tuple(f) for f in cast(list[list[int]], fragments)),
        extended_offset_table=_unb64(cast(str, eot)),
        trailing=_unb64(cast(str, trailing)),
    )


def encode_instance(r: InstanceRecord) -> bytes:
    """Bytes of an InstanceRecord."""
    return _dumps(
        [
            RECORD_VERSION,
            r.sop_instance_uid,
            r.sop_class_uid,
            r.study_instance_uid,
            r.series_instance_uid,
            r.transfer_syntax_uid,
            r.received_bytes,
            r.stored_bytes,
            r.digest,
            r.instance_number,
            _pixel_out(r.pixel),
            r.codec,
            [_level_out(lv) for lv in r.levels],
            r.frame_hashes,
            _encap_out(r.encapsulation),
            _b64(r.pixel_tail),
            r.received_at,
            r.query,
            r.generation,
            r.layout,
            _b64(r.pixel_element_header),
        ]
    ).encode("ascii")


def decode_instance_summary(raw: bytes) -> InstanceSummary:
    """The query-relevant part of an instance record, without building its pixel layout (3x faster)."""
    v = _load(raw, "instance record")
    try:
        pixel = cast("list[Any] | None", v[10])
        return InstanceSummary(
            sop_instance_uid=cast(str, v[1]),
            sop_class_uid=cast(str, v[2]),
            study_instance_uid=cast(str, v[3]),
            series_instance_uid=cast(str, v[4]),
            instance_number=cast("int | None", v[9]),
            frames=None if pixel is None else int(pixel[2]),
            query=cast(dict[str, str], v[17]),
        )
    except (IndexError, TypeError, ValueError) as exc:
        raise CorruptDataError(f"stored instance record has an unexpected layout: {exc}") from None


def decode_instance(raw: bytes) -> InstanceRecord:
    """InstanceRecord from encode_instance's bytes; raises CorruptDataError if they are not one."""
    v = _load(raw, "instance record")
    try:
        (
            _,
            sop,
            sop_class,
            study,
            series,
            syntax,
            received,
            stored,
            digest,
            number,
            pixel,
            codec,
            levels,
            hashes,
            encap,
            tail,
            received_at,
            query,
            generation,
            layout,
            element_header,
        ) = v
        return InstanceRecord(
            sop_instance_uid=cast(str, sop),
            sop_class_uid=cast(str, sop_class),
            study_instance_uid=cast(str, study),
            series_instance_uid=cast(str, series),
            transfer_syntax_uid=cast(str, syntax),
            received_bytes=cast(int, received),
            stored_bytes=cast(int, stored),
            digest=cast(str, digest),
            instance_number=cast("int | None", number),
            pixel=_pixel_in(cast("list[object] | None", pixel)),
            codec=cast("str | None", codec),
            levels=tuple(_level_in(lv) for lv in cast(list[list[object]], levels)),
            frame_hashes=tuple(cast(list[str], hashes)),
            encapsulation=_encap_in(cast("list[object] | None", encap)),
            pixel_tail=_unb64(cast(str, tail)),
            received_at=cast(str, received_at),
            query=cast(dict[str, str], query),
            generation=cast(int, generation),
            layout=cast(str, layout),
            pixel_element_header=_unb64(cast(str, element_header)),
        )
    except (ValueError, TypeError) as exc:
        raise CorruptDataError(f"stored instance record has an unexpected layout: {exc}") from None


# --- aggregate records ----------------------------------------------------------------------------


def _encode_fields(values: Sequence[object]) -> bytes:
    return _dumps([RECORD_VERSION, *values]).encode("ascii")


def _decode_fields(raw: bytes, what: str, build: Callable[[list[object]], object]) -> object:
    v = _load(raw, what)
    try:
        return build(v[1:])
    except (ValueError, TypeError) as exc:
        raise CorruptDataError(f"stored {what} has an unexpected layout: {exc}") from None


def encode_study(s: StudyRecord) -> bytes:
    return _encode_fields(
        [
            s.study_instance_uid,
            s.patient_id,
            s.patient_name,
            s.patient_birth_date,
            s.patient_sex,
            s.study_date,
            s.study_time,
            s.accession_number,
            s.study_id,
            s.study_description,
            s.referring_physician_name,
            s.modalities,
            s.series_count,
            s.instance_count,
            s.received_bytes,
            s.stored_bytes,
            s.updated_at,
        ]
    )


def _study_in(v: list[object]) -> StudyRecord:
    fields: list[Any] = list(v)
    fields[11] = tuple(fields[11])
    return StudyRecord(*fields)


def decode_study(raw: bytes) -> StudyRecord:
    return cast(StudyRecord, _decode_fields(raw, "study record", _study_in))


def encode_series(s: SeriesRecord) -> bytes:
    return _encode_fields(
        [
            s.series_instance_uid,
            s.study_instance_uid,
            s.modality,
            s.series_number,
            s.series_description,
            s.body_part_examined,
            s.series_date,
            s.series_time,
            s.instance_count,
            s.received_bytes,
            s.stored_bytes,
            s.updated_at,
        ]
    )


def decode_series(raw: bytes) -> SeriesRecord:
    return cast(SeriesRecord, _decode_fields(raw, "series record", lambda v: SeriesRecord(*cast("list[Any]", v))))


def encode_patient(p: PatientRecord) -> bytes:
    return _encode_fields(
        [
            p.patient_id,
            p.patient_name,
            p.patient_birth_date,
            p.patient_sex,
            p.study_count,
            p.series_count,
            p.instance_count,
        ]
    )


def decode_patient(raw: bytes) -> PatientRecord:
    return cast(PatientRecord, _decode_fields(raw, "patient record", lambda v: PatientRecord(*cast("list[Any]", v))))


def encode_change(op: ChangeOp, record: InstanceRecord, timestamp: str) -> bytes:
    return _encode_fields(
        [op, record.sop_instance_uid, record.series_instance_uid, record.study_instance_uid, timestamp]
    )


def decode_change(sequence: int, raw: bytes) -> Change:
    return cast(Change, _decode_fields(raw, "change", lambda v: Change(sequence, *cast("list[Any]", v))))


# --- header blobs ---------------------------------------------------------------------------------

_HEADER = struct.Struct("<BI")  # format (0 raw, 1 zlib), length of the prefix part
_RAW, _ZLIB = 0, 1
_ZLIB_LEVEL = 1  # headers are small and repetitive: level 1 gets most of the ratio at a fraction of the cost


def pack_header(prefix: bytes, suffix: bytes) -> bytes:
    """One blob holding both header parts, zlib-compressed unless that does not make it smaller."""
    joined = prefix + suffix
    packed = zlib.compress(joined, _ZLIB_LEVEL)
    if len(packed) < len(joined):
        return _HEADER.pack(_ZLIB, len(prefix)) + packed
    return _HEADER.pack(_RAW, len(prefix)) + joined


def unpack_header(blob: bytes) -> tuple[bytes, bytes]:
    """(prefix, suffix) from pack_header's blob; raises CorruptDataError if it is damaged."""
    if len(blob) < _HEADER.size:
        raise CorruptDataError(f"stored header blob is {len(blob)} bytes, shorter than its own header")
    kind, split = _HEADER.unpack_from(blob)
    body = blob[_HEADER.size :]
    if kind == _ZLIB:
        try:
            body = zlib.decompress(body)
        except zlib.error as exc:
            raise CorruptDataError(f"stored header blob does not decompress: {exc}") from None
    elif kind != _RAW:
        raise CorruptDataError(f"stored header blob has unknown format {kind}")
    if split > len(body):
        raise CorruptDataError(f"stored header blob splits at {split} but holds {len(body)} bytes")
    return body[:split], body[split:]


# --- totals ---------------------------------------------------------------------------------------

_TOTALS = struct.Struct("<6q")


def encode_totals(t: IndexStats) -> bytes:
    return _TOTALS.pack(t.patients, t.studies, t.series, t.instances, t.received_bytes, t.stored_bytes)


def decode_totals(raw: bytes | None) -> IndexStats:
    if raw is None:
        return IndexStats(0, 0, 0, 0, 0, 0)
    return IndexStats(*_TOTALS.unpack(raw))
