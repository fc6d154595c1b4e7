"""The pixel store: instances as Zarr v3 groups of sharded level arrays, chunks read back by reference."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from engine.codecs import crc32
from engine.errors import CorruptDataError, NotFoundError
from engine.pixels._chunkstore import ChunkStore, FileParts, LocalChunkStore
from engine.pixels._layout import (
    FANOUTS,
    ZARR_JSON,
    LevelArray,
    array_metadata,
    check_level,
    fanout,
    group_metadata,
    index_nbytes,
    instance_key,
    multiscales,
    parse_instance_name,
    parse_shard_index,
    shard_index,
    shard_key,
    to_json,
)
from engine.types import ChunkRef

LOGGER = logging.getLogger(__name__)

RESERVED_ATTRIBUTES = frozenset({"multiscales", "pacs_engine"})


class PixelStore:
    """Instances' encoded frames in a Zarr v3 hierarchy over any ChunkStore backend.

    Thread-safe: writes of different instances and reads run concurrently. Opening creates the root
    group and its 256 fan-out groups where missing (also in a store created by an older version).
    """

    def __init__(self, store: ChunkStore) -> None:
        self.store = store
        self._create_fanouts()
        if store.size(ZARR_JSON) is None:
            store.put(ZARR_JSON, to_json(group_metadata({"pacs_engine": {"layout": 1}})))

    def _create_fanouts(self) -> None:
        document = to_json(group_metadata({}))
        # a length that differs is a group file cut short by a crash before the sync below
        missing = [n for n in FANOUTS if self.store.size(f"{n}/{ZARR_JSON}") != len(document)]
        if not missing:
            return
        try:
            for name in missing:
                self.store.put(f"{name}/{ZARR_JSON}", document, sync=False)
        except PermissionError as error:
            # a reader without write access to a store made by an older version: reads need no fan-outs
            LOGGER.warning("cannot create the fan-out groups of %r: %s", self.store, error)
            return
        self.store.sync()
        LOGGER.info("created %d fan-out groups in %r", len(missing), self.store)

    def sync(self) -> None:
        """Make every instance written so far with sync=False durable, in one call.

        An instance written with sync=False is durable only after a later sync() returned: the
        archive calls it once per index group commit, after the group's writes finished and right
        before the index transaction, so an acknowledged instance stays durable. Raises
        StorageFullError or OSError when that cannot be promised for the instances it covers: refuse
        and remove the group then. An instance still being written when a failure is reported makes
        the sync() of its own group fail too, so each group needs only its own sync() to succeed.
        """
        self.store.sync()

    def close(self) -> None:
        """Release cached file descriptors (the store stays usable)."""
        self.store.close()

    def __enter__(self) -> PixelStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def write_instance(
        self,
        sop_uid: str,
        arrays: Sequence[LevelArray],
        attributes: Mapping[str, object],
        generation: int = 0,
        *,
        sync: bool = True,
    ) -> tuple[tuple[ChunkRef, ...], ...]:
        """Write an instance's level arrays; per array, per frame, where its chunk lies.

        The instance appears at once or not at all. With sync=True it is durable on return; with
        sync=False it is durable only after a later sync() returned (after a crash before that it
        may be missing or incomplete, and is an orphan the sweep removes since the index never
        referenced it). Raises InvalidUIDError, ValueError for an invalid level description or
        reserved attribute, FileExistsError if (sop_uid, generation) is already stored,
        StorageFullError when out of space, OSError for other write failures.
        """
        key = instance_key(sop_uid, generation)
        self._check_arrays(arrays, attributes)
        files: list[tuple[str, Sequence[bytes]]] = []
        refs: list[tuple[ChunkRef, ...]] = []
        for array in arrays:
            level_files, level_refs = self._level_files(key, array)
            files.extend(level_files)
            refs.append(level_refs)
        group_attributes = {
            **attributes,
            "multiscales": multiscales(sop_uid, arrays),
            "pacs_engine": {"sop_instance_uid": sop_uid, "generation": generation},
        }
        files.insert(0, (ZARR_JSON, [to_json(group_metadata(group_attributes))]))
        self.store.put_tree(key, files, sync=sync)
        LOGGER.debug("wrote %s: %d levels, %d files", key, len(arrays), len(files))
        return tuple(refs)

    @staticmethod
    def _check_arrays(arrays: Sequence[LevelArray], attributes: Mapping[str, object]) -> None:
        if not arrays:
            raise ValueError("an instance needs at least one level array")
        for array in arrays:
            check_level(array)
        levels = [a.level for a in arrays]
        if len(set(levels)) != len(levels):
            raise ValueError(f"duplicate levels {levels}")
        clash = RESERVED_ATTRIBUTES.intersection(attributes)
        if clash:
            raise ValueError(f"attributes {sorted(clash)} are written by the pixel store itself")

    @staticmethod
    def _level_files(key: str, array: LevelArray) -> tuple[FileParts, tuple[ChunkRef, ...]]:
        chunks = [bytes(c) for c in array.chunks]
        index, offsets = shard_index([len(c) for c in chunks])
        shard = f"{array.level}/{shard_key(len(array.shape))}"
        refs = tuple(
            ChunkRef(key=f"{key}/{shard}", offset=offset, length=len(chunk), crc32=crc32(chunk))
            for offset, chunk in zip(offsets, chunks, strict=True)
        )
        files = [
            (f"{array.level}/{ZARR_JSON}", [to_json(array_metadata(array))]),
            (shard, [*chunks, index]),
        ]
        return files, refs

    def read_chunk(self, ref: ChunkRef, *, prefix: int | None = None) -> bytes:
        """One stored chunk, or its first `prefix` bytes.

        The whole chunk is checked against its recorded length and crc32, a prefix against its length.
        Raises CorruptDataError naming the key when the bytes are missing, short or damaged.
        """
        return self._read(ref.key, [ref], prefix)[0]

    def read_chunks(self, refs: Sequence[ChunkRef]) -> list[bytes]:
        """Several whole chunks, checked like read_chunk; chunks of one shard are read with one open."""
        by_key: dict[str, list[int]] = {}
        for i, ref in enumerate(refs):
            by_key.setdefault(ref.key, []).append(i)
        out: list[bytes] = [b""] * len(refs)
        for key, positions in by_key.items():
            for position, data in zip(
                positions, self._read(key, [refs[p] for p in positions], None), strict=True
            ):
                out[position] = data
        return out

    def _read(self, key: str, refs: Sequence[ChunkRef], prefix: int | None) -> list[bytes]:
        if prefix is not None and not all(0 < prefix <= ref.length for ref in refs):
            raise ValueError(f"prefix {prefix} is outside 1..{refs[0].length} for a chunk of {key}")
        ranges = [(ref.offset, ref.length if prefix is None else prefix) for ref in refs]
        try:
            datas = self.store.get_ranges(key, ranges)
        except NotFoundError as error:
            raise CorruptDataError(f"pixel shard {key} is missing from the pixel store") from error
        for ref, (offset, length), data in zip(refs, ranges, datas, strict=True):
            if len(data) != length:
                raise CorruptDataError(
                    f"pixel shard {key} is truncated: {len(data)} of {length} bytes at offset {offset}"
                )
            if prefix is None and (actual := crc32(data)) != ref.crc32:
                raise CorruptDataError(
                    f"pixel shard {key} is corrupt: crc32 of {length} bytes at offset {offset} "
                    f"is {actual:08x}, recorded {ref.crc32:08x}"
                )
        return datas

    def verify_instance(self, refs: Sequence[Sequence[ChunkRef]] | Sequence[ChunkRef]) -> list[str]:
        """Problems with an instance's stored chunks, without decoding; [] when all are sound.

        `refs` is what write_instance returned (or the same refs flattened). Checks each shard exists,
        is long enough, ends with an intact index pointing at the chunks, and each chunk's crc32.
        """
        by_key: dict[str, list[ChunkRef]] = {}
        for ref in _flatten(refs):
            by_key.setdefault(ref.key, []).append(ref)
        problems: list[str] = []
        for key, key_refs in by_key.items():
            problems.extend(self._verify_shard(key, key_refs))
        return problems

    def _verify_shard(self, key: str, refs: list[ChunkRef]) -> list[str]:
        size = self.store.size(key)
        if size is None:
            return [f"{key}: shard file is missing"]
        expected = max(r.offset + r.length for r in refs) + index_nbytes(len(refs))
        if size < expected:
            return [f"{key}: shard file is {size} bytes, expected {expected}"]
        problems = []
        tail = self.store.get_range(key, size - index_nbytes(len(refs)), index_nbytes(len(refs)))
        entries = parse_shard_index(tail, len(refs))
        if entries is None:
            problems.append(f"{key}: shard index checksum (crc32c) does not match")
        elif entries != [(r.offset, r.length) for r in refs]:
            problems.append(f"{key}: shard index disagrees with the recorded chunk positions")
        for i, ref in enumerate(refs):
            data = self.store.get_range(key, ref.offset, ref.length)
            if crc32(data) != ref.crc32:
                problems.append(f"{key}: chunk {i} at offset {ref.offset} fails its crc32")
        return problems

    def delete_instance(self, sop_uid: str, generation: int = 0) -> int:
        """Remove an instance group at once; bytes freed, 0 if it was not there."""
        return self.store.delete_tree(instance_key(sop_uid, generation))

    def instance_key(self, sop_uid: str, generation: int = 0) -> str:
        """Key of the instance group relative to the store root."""
        return instance_key(sop_uid, generation)

    def instance_nbytes(self, sop_uid: str, generation: int = 0) -> int:
        """Bytes the instance occupies (metadata and shards); raises NotFoundError if absent."""
        key = instance_key(sop_uid, generation)
        if self.store.size(f"{key}/{ZARR_JSON}") is None:
            raise NotFoundError(f"instance {sop_uid} generation {generation} is not in the pixel store")
        return self.store.tree_nbytes(key)

    def chunk_file_size(self, key: str) -> int:
        """Size of a shard file; raises NotFoundError if it does not exist."""
        size = self.store.size(key)
        if size is None:
            raise NotFoundError(f"pixel shard {key} is not in the pixel store")
        return size

    def instance_dirs(self) -> Iterator[tuple[str, int]]:
        """Every (sop_uid, generation) stored, in fan-out order; temporary leftovers are not included."""
        for name in self._fanout_names():
            for child in self.store.list_dir(name):
                parsed = parse_instance_name(child)
                if parsed is not None and fanout(parsed[0]) == name:
                    yield parsed

    def temp_dirs(self) -> list[str]:
        """Keys of leftovers from interrupted writes and deletes: orphans once no write is running."""
        return [key for key, _ in self._temp_entries()]

    def remove_temp_dirs(self, min_age_s: float = 0.0) -> int:
        """Remove leftovers at least `min_age_s` seconds old; bytes freed.

        With writes in flight, pass an age longer than any write takes: a younger one may be in use.
        """
        cutoff = time.time() - min_age_s
        freed = 0
        for key, mtime in self._temp_entries():
            if mtime <= cutoff:
                freed += self.store.remove_incomplete(key)
                LOGGER.info("removed leftover %s", key)
        return freed

    def _temp_entries(self) -> list[tuple[str, float]]:
        found = list(self.store.incomplete_trees(""))
        for name in self._fanout_names():
            found.extend(self.store.incomplete_trees(name))
        return found

    def _fanout_names(self) -> list[str]:
        return [n for n in self.store.list_dir("") if len(n) == 2 and all(c in "0123456789abcdef" for c in n)]


class LocalPixelStore(PixelStore):
    """The pixel store in a local directory (created with its root group if missing)."""

    def __init__(self, root: Path | str, *, fd_cache_size: int = 256) -> None:
        self.root = Path(root)
        super().__init__(LocalChunkStore(root, fd_cache_size=fd_cache_size))

    def __repr__(self) -> str:
        return f"LocalPixelStore({str(self.root)!r})"


def _flatten(refs: Sequence[Sequence[ChunkRef]] | Sequence[ChunkRef]) -> Iterator[ChunkRef]:
    for item in refs:
        if isinstance(item, ChunkRef):
            yield item
        else:
            yield from item
