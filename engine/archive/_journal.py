"""The receive journal: received data sets made durable with one append and a shared fdatasync.

A C-STORE is acknowledged once its bytes are in the journal, and transcoded into the pixel store and the
index right after, off the association's thread. After a crash, records the index does not hold yet are
ingested again at open. Segments whose records are all indexed are deleted.

Record layout (little endian): b"PEJ1", u32 header length, u64 data length, u32 crc32(data),
header = JSON {"sop", "ts", "digest"}, then the data set bytes. A torn record at the tail (a crash
during the append) was never acknowledged, so recovery stops there; damage before the tail costs only
the records it hits (see Journal.records).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from engine.codecs import crc32
from engine.errors import CorruptDataError, StorageFullError

LOGGER = logging.getLogger(__name__)

_MAGIC = b"PEJ1"
_HEAD = struct.Struct("<4sIQI")
SEGMENT_BYTES = 256 << 20  # rotate after this much; a segment is deleted once all its records are indexed
# A segment whose records are all indexed is swapped for a new one once it holds this much, so released
# records stop taking disk space the instances need (on a small volume 256 MiB of them fill it).
DRAINED_ROTATE_BYTES = 8 << 20


@dataclass(frozen=True, slots=True)
class JournalRecord:
    segment: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    digest: str
    data: bytes
    data_offset: int  # where `data` starts in the segment file
    end: int  # byte offset just past the record


@dataclass(frozen=True, slots=True)
class Ticket:
    """Where an appended record lives, so its segment can be released once the record is indexed."""

    segment: str  # the segment file's name
    end: int  # byte offset just past the record: durable once the segment is synced to here
    data_offset: int = 0  # where the data set bytes start in the segment file
    data_length: int = 0


class Journal:
    """Append-only segment files with group fdatasync. Thread-safe."""

    def __init__(self, directory: Path, prefix: str = "local-") -> None:
        """`prefix` names this writer's segments, so two processes never write the same file."""
        self._dir = directory
        self._prefix = prefix
        directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()  # one fdatasync at a time; waiters behind it share the next
        numbers = (name[len(prefix) : -len(".journal")] for name in self.segments() if name.startswith(prefix))
        existing = [int(n) for n in numbers if n.isdigit()]  # a stray "local-old.journal" is not one of ours
        self._number = max(existing, default=0) + 1
        self._segment = self._name(self._number)
        self._fd = self._open_segment(self._segment)
        self._written = 0
        self._synced = 0
        self._outstanding: dict[str, int] = {}  # segment -> records appended but not yet released
        self._failed: OSError | None = None

    @property
    def current(self) -> str:
        """The segment being written by this journal."""
        return self._segment

    @property
    def directory(self) -> Path:
        return self._dir

    def segments(self) -> list[str]:
        """Every segment in the folder, of any writer, oldest first within a writer."""
        return sorted(p.name for p in self._dir.glob("*.journal"))

    def _name(self, number: int) -> str:
        return f"{self._prefix}{number:012d}.journal"

    def _path(self, segment: str) -> Path:
        return self._dir / segment

    def _open_segment(self, segment: str) -> int:
        fd = os.open(self._path(segment), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        # The new file's directory entry must be durable before any record in it is acknowledged.
        dir_fd = os.open(self._dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return fd

    def append(self, sop_instance_uid: str, transfer_syntax_uid: str, digest: str, data: bytes | memoryview) -> Ticket:
        """Write a record (not yet durable: call sync(ticket)). Raises StorageFullError on ENOSPC."""
        header = json.dumps({"sop": sop_instance_uid, "ts": transfer_syntax_uid, "digest": digest}).encode()
        head = _HEAD.pack(_MAGIC, len(header), len(data), crc32(data))
        with self._lock:
            if self._written >= SEGMENT_BYTES:
                self._rotate()
            try:
                written = os.writev(self._fd, [head, header, data])
                if written != len(head) + len(header) + len(data):
                    raise OSError(errno.ENOSPC, "short write to the receive journal")
            except OSError as exc:
                # Cut a partial record off again: records after a torn one would be unreachable.
                os.ftruncate(self._fd, self._written)
                raise _translate(exc) from exc
            data_offset = self._written + len(head) + len(header)
            self._written += len(head) + len(header) + len(data)
            self._outstanding[self._segment] = self._outstanding.get(self._segment, 0) + 1
            return Ticket(self._segment, self._written, data_offset, len(data))

    def rotate(self) -> None:
        """Start a new segment now if the current one holds records; the old one goes once all are released.

        Deletion calls it so that no segment still on disk can replay a deleted instance at the next open.
        """
        # The sync lock first, as sync() takes them: its fdatasync must not run on a descriptor closed here.
        with self._sync_lock, self._lock:
            if self._written:
                self._rotate()

    def _rotate(self) -> None:
        """Start a new segment (called with the lock held); the old one is synced before it is left."""
        os.fdatasync(self._fd)
        segment = self._name(self._number + 1)
        fd = self._open_segment(segment)  # first: if it fails (disk full), the old segment stays usable
        os.close(self._fd)
        old = self._segment
        self._number += 1
        self._segment, self._fd = segment, fd
        self._written = self._synced = 0
        if not self._outstanding.get(old):
            self._delete(old)

    def sync(self, ticket: Ticket) -> None:
        """Return once the record of `ticket` is on disk; concurrent callers share one fdatasync."""
        with self._sync_lock:
            with self._lock:
                if self._failed is not None:
                    raise self._failed
                if ticket.segment != self._segment or self._synced >= ticket.end:
                    return  # rotation synced it, or another caller's fdatasync covered it
                # A duplicate descriptor: a rotation may close the segment's own while this one syncs.
                fd, target, segment = os.dup(self._fd), self._written, self._segment
            try:
                os.fdatasync(fd)
            except OSError as exc:
                # After a failed fdatasync the page cache may have dropped the data: fail everything
                # written so far rather than acknowledge it later.
                with self._lock:
                    self._failed = _translate(exc)
                raise self._failed from exc
            finally:
                os.close(fd)
            with self._lock:
                if segment == self._segment:
                    self._synced = max(self._synced, target)

    def release(self, ticket: Ticket) -> None:
        """The record of `ticket` is indexed: its segment may go once nothing else in it is pending."""
        with self._lock:
            left = self._outstanding.get(ticket.segment, 0) - 1
            if left > 0:
                self._outstanding[ticket.segment] = left
                return
            self._outstanding.pop(ticket.segment, None)
            if ticket.segment != self._segment:
                self._delete(ticket.segment)
                return
            drained = self._written >= DRAINED_ROTATE_BYTES
        if drained:
            with self._sync_lock, self._lock:  # in the order sync() takes them
                if not self._outstanding.get(self._segment) and self._written >= DRAINED_ROTATE_BYTES:
                    try:
                        self._rotate()
                    except OSError as exc:  # the record is indexed all the same; the next release retries
                        LOGGER.warning("could not start a new receive journal segment: %s", exc)

    def _delete(self, segment: str) -> None:
        try:
            self._path(segment).unlink()
        except FileNotFoundError:
            pass

    def records(self, segment: str, damage: list[str] | None = None) -> Iterator[JournalRecord]:
        """The intact records of a segment in order.

        A torn tail (a crash during the append, never synced, so never acknowledged) ends the segment: a
        record cut short with no intact record after it, a last record that fails its checksum, or zeros
        (after a power loss unwritten bytes may read so). Damage before the tail is skipped, not allowed to
        cost the records after it: a record that fails its checksum or whose header does not read is passed
        over by its length, and after bytes that are no record, or a length that overruns the segment, the
        next intact record is looked for. Each is described in `damage`.
        """
        data = self._path(segment).read_bytes()
        pos = 0
        while pos + _HEAD.size <= len(data):
            magic, header_len, data_len, crc = _HEAD.unpack_from(data, pos)
            start = pos + _HEAD.size
            end = start + header_len + data_len
            if magic != _MAGIC or end > len(data):
                found = _next_record(data, pos + 1)
                if found < 0 and (magic == _MAGIC or not data[pos:].strip(b"\x00")):
                    return  # torn tail: cut short, or zeros where a power loss left unwritten bytes
                what = "are no record" if magic != _MAGIC else "hold a record whose length overruns the next one"
                _note(damage, segment, f"bytes {pos}..{found if found >= 0 else len(data)} {what}")
                if found < 0:
                    return
                pos = found
                continue
            body = data[start + header_len : end]
            header = _header(data[start : start + header_len])
            intact = crc32(body) == crc
            if not intact or header is None:
                if end == len(data) and not intact:
                    return  # torn tail
                what = "fails its checksum" if header is not None else "has an unreadable header"
                _note(damage, segment, f"record at byte {pos} ({(header or {}).get('sop', 'SOP unknown')}) {what}")
                pos = end
                continue
            yield JournalRecord(segment, header["sop"], header["ts"], header["digest"], body, start + header_len, end)
            pos = end

    def adopt(self, record: JournalRecord) -> Ticket:
        """Count a recovered record as outstanding again (it could not be indexed yet): its segment stays
        until release(ticket), and the next open replays it if this process does not get that far."""
        with self._lock:
            self._outstanding[record.segment] = self._outstanding.get(record.segment, 0) + 1
        return Ticket(record.segment, record.end, record.data_offset, len(record.data))

    def drop_segment(self, segment: str) -> None:
        """Delete a recovered segment (never the one being written)."""
        if segment != self._segment:
            self._delete(segment)

    def set_aside(self, segment: str) -> Path:
        """Rename a damaged segment out of the journal (it is not replayed again) and keep it to inspect."""
        target = self._path(segment).with_suffix(".damaged")
        os.replace(self._path(segment), target)
        return target

    def close(self) -> None:
        with self._lock:
            os.close(self._fd)
            if not self._outstanding.get(self._segment):
                self._delete(self._segment)


def _header(raw: bytes) -> dict[str, str] | None:
    """A record's JSON header, or None when it is not one (damaged bytes)."""
    try:
        header = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(header, dict) or not all(isinstance(header.get(k), str) for k in ("sop", "ts", "digest")):
        return None
    return header


def _next_record(data: bytes, start: int) -> int:
    """Offset of the next record whose header and checksum hold, from `start`; -1 if there is none."""
    pos = data.find(_MAGIC, start)
    while pos >= 0:
        if pos + _HEAD.size <= len(data):
            _, header_len, data_len, crc = _HEAD.unpack_from(data, pos)
            begin = pos + _HEAD.size
            end = begin + header_len + data_len
            if end <= len(data) and _header(data[begin : begin + header_len]) and crc32(data[begin + header_len : end]) == crc:
                return pos
        pos = data.find(_MAGIC, pos + 1)
    return -1


def _note(damage: list[str] | None, segment: str, what: str) -> None:
    LOGGER.error("receive journal segment %s: %s; skipped", segment, what)
    if damage is not None:
        damage.append(what)


def read_data(directory: Path, segment: str, offset: int, length: int) -> bytes:
    """The data set bytes of one record, for the process that ingests what another one journalled."""
    fd = os.open(directory / segment, os.O_RDONLY)
    try:
        data = os.pread(fd, length, offset)
    finally:
        os.close(fd)
    if len(data) != length:
        raise CorruptDataError(f"journal segment {segment}: record at byte {offset} is cut short")
    return data


def _translate(exc: OSError) -> OSError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFullError(exc.errno, f"no space left for the receive journal: {exc.strerror}")
    return exc
