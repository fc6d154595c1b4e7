"""The archive: ingest, retrieval and integrity over one pixel store and one index."""

from __future__ import annotations

from engine.archive._archive import Archive, ArchiveInUseError, ArchiveStats
from engine.archive._delete import DELETE_LEVELS, DeleteLevel, DeleteResult, DeletionDisabledError
from engine.archive._ingest import IngestResult
from engine.archive._retrieve import check_stored, stored_syntax

__all__ = [
    "DELETE_LEVELS",
    "Archive",
    "ArchiveInUseError",
    "ArchiveStats",
    "DeleteLevel",
    "DeleteResult",
    "DeletionDisabledError",
    "IngestResult",
    "check_stored",
    "stored_syntax",
]
