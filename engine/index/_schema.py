"""The index's named sub-databases and its schema version, created and checked when it opens."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import lmdb

from engine.errors import EngineError

SCHEMA_VERSION = 1
SCHEMA_KEY = b"schema_version"
TOTALS_KEY = b"totals"
SEQUENCE_KEY = b"sequence"  # last change-log sequence number handed out, kept even if the log is pruned

# Sub-database names, in the order of Dbs' fields.
DB_NAMES = (
    b"meta",  # schema version, totals, last sequence number
    b"instances",  # SOP Instance UID -> InstanceRecord
    b"headers",  # SOP Instance UID -> compressed header blob
    b"series",  # Series Instance UID -> SeriesRecord
    b"studies",  # Study Instance UID -> StudyRecord
    b"patients",  # patient key -> PatientRecord
    b"study_series",  # study SEP series -> b"": a study's series by a range scan
    b"series_instances",  # series SEP order SEP-less sop -> b"": a series' instances in InstanceNumber order
    b"patient_studies",  # patient key SEP study -> b""
    b"qkeys",  # code value SEP uid -> b"": secondary keys for query
    b"changes",  # big-endian sequence -> change
)
MAX_DBS = 16  # the sub-databases above, with room for a few more without reopening old files differently


class IndexSchemaError(EngineError, RuntimeError):
    """The directory holds an index of another schema version, or something that is not an index."""


@dataclass(frozen=True, slots=True)
class Dbs:
    """Handles of the sub-databases; valid for the life of the environment."""

    meta: lmdb._Database
    instances: lmdb._Database
    headers: lmdb._Database
    series: lmdb._Database
    studies: lmdb._Database
    patients: lmdb._Database
    study_series: lmdb._Database
    series_instances: lmdb._Database
    patient_studies: lmdb._Database
    qkeys: lmdb._Database
    changes: lmdb._Database


def _check_version(found: bytes | None, path: Path) -> None:
    if found is None:
        return
    if found != str(SCHEMA_VERSION).encode("ascii"):
        raise IndexSchemaError(
            f"index at {path} has schema version {found.decode('ascii', 'replace')}, but this engine reads "
            f"schema version {SCHEMA_VERSION}: open it with the pacs-engine release that wrote it, or migrate it"
        )


def open_dbs(env: lmdb.Environment, path: Path, readonly: bool) -> Dbs:
    """Open every sub-database, creating them and stamping the schema version on a new index.

    Raises IndexSchemaError on another schema version, or on a directory that holds something else.
    """
    if readonly:
        try:
            # No txn: py-lmdb opens and commits its own, which makes the handles outlive it (a reset spare
            # read transaction, as the with-block would give back, would drop them).
            handles = [env.open_db(name, create=False) for name in DB_NAMES]
        except lmdb.NotFoundError:
            raise IndexSchemaError(f"{path} holds no pacs-engine index (sub-databases missing)") from None
        with env.begin() as txn:
            found = txn.get(SCHEMA_KEY, db=handles[0])
        if found is None:
            raise IndexSchemaError(f"index at {path} has no schema version")
        _check_version(found, path)
        return Dbs(*handles)
    with env.begin(write=True) as txn:
        existing = {key for key, _ in txn.cursor()}
        meta = env.open_db(DB_NAMES[0], txn=txn)
        found = txn.get(SCHEMA_KEY, db=meta)
        _check_version(found, path)  # raising aborts the transaction: nothing of ours is written
        if found is None:
            if existing - {DB_NAMES[0]}:
                raise IndexSchemaError(f"{path} holds an LMDB environment that is not a pacs-engine index")
            txn.put(SCHEMA_KEY, str(SCHEMA_VERSION).encode("ascii"), db=meta)
        handles = [meta, *(env.open_db(name, txn=txn) for name in DB_NAMES[1:])]
    return Dbs(*handles)
