"""The LMDB index: instance records, header bytes, hierarchy, query keys, totals and the change log."""

from __future__ import annotations

from engine.index._committer import GroupCommitter
from engine.index._index import Index
from engine.index._match import InvalidQueryError
from engine.index._model import (
    Change,
    ChangeOp,
    IndexEntry,
    IndexStats,
    PatientRecord,
    PutOutcome,
    PutStatus,
    SeriesRecord,
    StudyRecord,
)
from engine.index._query import (
    ATTRIBUTE_LEVELS,
    LEVELS,
    MODEL_LEVELS,
    Match,
    belongs_below,
    check_level,
    find,
    instances_by_unique_keys,
    is_narrow,
    unsupported_keys,
)
from engine.index._read import LOOKUP_LEVELS, IndexReader
from engine.index._records import RECORD_VERSION, decode_instance, encode_instance
from engine.index._schema import SCHEMA_VERSION, IndexSchemaError
from engine.index._write import IndexWriter, PreparedEntry, prepare_entry

__all__ = [
    "ATTRIBUTE_LEVELS",
    "LEVELS",
    "MODEL_LEVELS",
    "LOOKUP_LEVELS",
    "RECORD_VERSION",
    "SCHEMA_VERSION",
    "Change",
    "ChangeOp",
    "GroupCommitter",
    "Index",
    "IndexEntry",
    "IndexReader",
    "IndexSchemaError",
    "IndexStats",
    "IndexWriter",
    "InvalidQueryError",
    "Match",
    "PatientRecord",
    "PreparedEntry",
    "PutOutcome",
    "PutStatus",
    "SeriesRecord",
    "StudyRecord",
    "belongs_below",
    "decode_instance",
    "check_level",
    "encode_instance",
    "find",
    "instances_by_unique_keys",
    "is_narrow",
    "prepare_entry",
    "unsupported_keys",
]
