"""Integrity: the index and the pixel store agree; chunks hold their length and checksum; frames their hash."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.archive._plan import bytes_hash, frame_hash
from engine.errors import EngineError, NotFoundError
from engine.index import Index
from engine.pixels import LocalPixelStore
from engine.types import CODEC_PASSTHROUGH, InstanceRecord

if TYPE_CHECKING:
    from engine.archive._retrieve import Retriever

LOGGER = logging.getLogger(__name__)

# A pixel group this recent may belong to an ingest still in flight in the writing process.
IN_FLIGHT_SECONDS = 120.0


@dataclass(frozen=True, slots=True)
class IndexScan:
    """What one pass over every instance record found."""

    referenced: dict[str, int]  # SOP UID -> generation of every instance whose pixels are in the pixel store
    pending: list[str]  # SOP UIDs of pending records (acknowledged, not stored when the scan ran)


def scan_index(index: Index) -> IndexScan:
    """Read every instance record once."""
    referenced: dict[str, int] = {}
    pending: list[str] = []
    for sop in index.iter_instance_uids():
        try:
            record = index.get_instance(sop)
        except NotFoundError:  # deleted between the listing and the read
            continue
        if record.codec is not None:
            referenced[sop] = record.generation
        elif record.pending:
            pending.append(sop)
    return IndexScan(referenced, pending)


def sweep_orphans(index: Index, pixels: LocalPixelStore, scan: IndexScan | None = None) -> int:
    """Remove temporary and unreferenced pixel groups; returns how many were removed. `scan`: a
    scan_index of the index as it is now, if the caller has one.

    Safe only while nothing ingests into this archive (it runs when a writer opens it).
    """
    removed = len(pixels.temp_dirs())
    pixels.remove_temp_dirs()
    referenced = (scan or scan_index(index)).referenced
    for sop, generation in list(pixels.instance_dirs()):
        if referenced.get(sop) != generation:
            pixels.delete_instance(sop, generation)
            removed += 1
    return removed


def verify_archive(
    index: Index, pixels: LocalPixelStore, retriever: Retriever, *, deep: bool, live: bool = False,
    storing: Callable[[str], bool] = lambda sop: False,
) -> list[str]:
    """Every problem found, as a sentence naming the instance; empty when the archive is sound.

    `live`: another process is writing the archive, so pixel groups younger than IN_FLIGHT_SECONDS
    that the index does not reference yet are ingests in flight, not orphans, and pending records are
    instances it is storing. `storing(sop)`: this process is still storing that pending instance (its
    store failed and is tried again), so its pending record is no problem either.
    """
    problems: list[str] = []
    referenced = scan_index(index).referenced
    present = set(pixels.instance_dirs())
    recent = time.time() - IN_FLIGHT_SECONDS if live else float("inf")
    for sop, generation in sorted(present):
        if referenced.get(sop) != generation and _mtime(pixels, pixels.instance_key(sop, generation)) < recent:
            problems.append(f"orphaned pixel group {pixels.instance_key(sop, generation)} (not in the index)")
    temp = [t for t in pixels.temp_dirs() if _mtime(pixels, t) < recent]
    if temp:
        problems.append(f"{len(temp)} unfinished pixel writes: {', '.join(map(str, temp[:5]))}")
    for sop in index.iter_instance_uids():
        try:
            record = index.get_instance(sop)
            if record.pending:
                if not live and not storing(sop):  # the writer that acknowledged it stopped before storing it
                    problems.append(f"{sop}: acknowledged but not stored; the receive journal holds it until "
                                    "the archive is next opened for writing")
                continue
            problems.extend(_verify_instance(record, pixels, retriever, present, deep))
        except NotFoundError:
            continue
        except EngineError as exc:
            problems.append(f"{sop}: {exc}")
    return problems


def _mtime(pixels: LocalPixelStore, key: str) -> float:
    try:
        return (pixels.root / key).stat().st_mtime
    except FileNotFoundError:  # finished or removed meanwhile
        return float("inf")


def _verify_instance(
    record: InstanceRecord,
    pixels: LocalPixelStore,
    retriever: Retriever,
    present: set[tuple[str, int]],
    deep: bool,
) -> list[str]:
    sop = record.sop_instance_uid
    if record.codec is None:
        return []
    if (sop, record.generation) not in present:
        return [f"{sop}: pixel group {pixels.instance_key(sop, record.generation)} is missing"]
    refs = [ref for level in record.levels for ref in level.chunks]
    problems = [f"{sop}: {p}" for p in pixels.verify_instance(refs)]
    if problems or not deep:
        return problems
    if record.layout == "raw":
        hashes = [bytes_hash(retriever.raw_bytes(record))]
    elif record.codec == CODEC_PASSTHROUGH:
        # Kept codestreams are checked against their hash; lossy codestreams are never decoded to verify.
        hashes = [bytes_hash(c) for c in pixels.read_chunks(record.levels[0].chunks)]
    else:
        hashes = [frame_hash(f) for f in retriever.all_frames(record)]
    bad = [i + 1 for i, (a, b) in enumerate(zip(hashes, record.frame_hashes, strict=False)) if a != b]
    if len(hashes) != len(record.frame_hashes):
        return [f"{sop}: {len(hashes)} frames stored, {len(record.frame_hashes)} recorded"]
    return [f"{sop}: frame {i} does not decode to the pixels received" for i in bad]
