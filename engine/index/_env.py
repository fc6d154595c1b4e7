"""Opening the LMDB environment (every flag with its reason), growing its map, and naming disk-full errors."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

import lmdb

from engine.errors import EngineError, NotFoundError, StorageFullError
from engine.index._schema import MAX_DBS

LOGGER = logging.getLogger(__name__)

# One reader slot per concurrent read transaction: DIMSE association threads, HTTP worker threads and the
# CLI in another process. Slots are small (64 bytes each in lock.mdb); running out fails reads.
MAX_READERS = 1024
MAX_MAP_SIZE = 1 << 44  # 16 TiB: far beyond any index; growth past it means something is wrong
_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
NEARLY_FULL_BYTES = 1 << 20  # less free space than this on the index's volume: an EIO from a write is ENOSPC


def open_env(path: Path, map_size: int, readonly: bool) -> lmdb.Environment:
    """Open (or create, unless readonly) the environment in directory `path`.

    Raises NotFoundError when opening read-only where no index exists, EngineError when LMDB refuses
    (e.g. the same index is already open in this process: LMDB's locks would break).
    """
    if readonly:
        if not (path / "data.mdb").is_file():
            raise NotFoundError(f"no index at {path} (data.mdb missing)")
    else:
        path.mkdir(parents=True, exist_ok=True)
    try:
        return _open(path, map_size, readonly)
    except lmdb.Error as exc:
        raise EngineError(f"cannot open the index at {path}: {exc}") from exc


def _open(path: Path, map_size: int, readonly: bool) -> lmdb.Environment:
    return lmdb.open(
        str(path),
        map_size=map_size,
        subdir=True,  # ARCHIVE/index/ is a directory holding data.mdb and lock.mdb
        readonly=readonly,
        create=not readonly,
        sync=True,  # fsync on commit: an acknowledged instance survives a crash or power cut
        metasync=True,  # flush the meta page with the data, so the newest commit is the durable one
        map_async=False,  # only matters with writemap, which is off
        writemap=False,  # writes go through write(): a stray pointer in the process cannot corrupt the file
        readahead=False,  # lookups are random; readahead only evicts useful pages once the index outgrows RAM
        meminit=True,  # never write uninitialised heap memory (possibly another patient's data) to disk
        max_readers=MAX_READERS,
        max_dbs=MAX_DBS,
        max_spare_txns=8,  # reuse reset read transactions: the many short reads of a server begin cheaper
        lock=True,  # the CLI or a second process may open the same index while the server runs
    )


def grow(env: lmdb.Environment, path: Path) -> int:
    """Double the map size; the caller guarantees no transaction of this process is open.

    Raises StorageFullError when the map would pass MAX_MAP_SIZE.
    """
    current = env.info()["map_size"]
    new = current * 2
    if new > MAX_MAP_SIZE:
        raise StorageFullError(f"index at {path} needs more than {MAX_MAP_SIZE} bytes of map; refusing to grow")
    env.set_mapsize(new)
    LOGGER.info("index map at %s grown from %d to %d bytes", path, current, new)
    return new


def is_disk_full(exc: BaseException, path: Path | None = None) -> bool:
    """Whether an LMDB or OS error means the volume (or quota) is out of space.

    LMDB turns a short write into EIO (mdb_page_flush: "short write"), which is what a write that runs
    into a full volume gets: an EIO while the volume holding `path` has next to no space left is one.
    """
    if isinstance(exc, lmdb.DiskError):
        return True
    if isinstance(exc, lmdb.Error):
        code = getattr(exc, "code", 0)
        return code in _DISK_FULL_ERRNOS or (code == errno.EIO and path is not None and _nearly_full(path))
    return isinstance(exc, OSError) and exc.errno in _DISK_FULL_ERRNOS


def _nearly_full(path: Path) -> bool:
    try:
        stat = os.statvfs(path)
    except OSError:
        return False
    return stat.f_bavail * stat.f_frsize < NEARLY_FULL_BYTES


def storage_full(path: Path, exc: BaseException) -> StorageFullError:
    """The error to raise for a disk-full failure during a write transaction."""
    return StorageFullError(
        f"index at {path} is out of disk space; the write transaction was aborted and nothing of it was "
        f"committed. Free space on that volume. ({exc})"
    )
