"""The pixel store over each backend: writing instances, reading chunks back, damage, deletion, leftovers."""

from __future__ import annotations

import os
import shutil
import threading
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pixel_data import deflated_level, inflate

from engine.errors import CorruptDataError, InvalidUIDError, NotFoundError
from engine.pixels import LevelArray, LocalPixelStore, PixelStore, fanout
from engine.pixels._layout import (
    FANOUTS,
    ZARR_JSON,
    index_nbytes,
    instance_key,
    parse_instance_name,
    parse_shard_index,
    shard_index,
)
from engine.types import CODEC_PASSTHROUGH, JPEG_BASELINE, ChunkRef

SOP = "1.2.840.113619.2.55.3.604688119.971.1.0"


class PixelStoreTests:
    """Subclass with a `store` fixture yielding an empty PixelStore and a `damage` method."""

    @pytest.fixture
    def store(self) -> Iterator[PixelStore]:
        raise NotImplementedError("a backend test class provides the store fixture")

    def overwrite(self, store: PixelStore, key: str, offset: int, data: bytes) -> None:
        raise NotImplementedError

    def truncate(self, store: PixelStore, key: str, size: int) -> None:
        raise NotImplementedError

    def test_round_trip_multi_frame_multi_level(
        self, store: PixelStore, mr_frames: npt.NDArray[np.generic]
    ) -> None:
        levels = [deflated_level(mr_frames, 0), deflated_level(mr_frames, 1)]
        refs = store.write_instance(SOP, levels, {"study_instance_uid": "1.2.3"})
        assert [len(r) for r in refs] == [10, 10]
        for level, level_refs in zip(levels, refs, strict=True):
            chunks = store.read_chunks(level_refs)
            assert chunks == list(level.chunks)
            for i, chunk in enumerate(chunks):
                np.testing.assert_array_equal(
                    inflate(chunk, level), mr_frames[i, :: 2**level.level, :: 2**level.level]
                )
        assert refs[0][0].key == f"{fanout(SOP)}/{SOP}/0/c.0.0.0"
        assert refs[1][3].key == f"{fanout(SOP)}/{SOP}/1/c.0.0.0"
        assert store.verify_instance(refs) == []

    def test_round_trip_colour(self, store: PixelStore, rgb_frames: npt.NDArray[np.generic]) -> None:
        level = deflated_level(rgb_frames)
        assert level.shape == (2, 100, 100, 3)
        (refs,) = store.write_instance(SOP, [level], {})
        assert refs[0].key.endswith("/0/c.0.0.0.0")
        for i, ref in enumerate(refs):
            np.testing.assert_array_equal(inflate(store.read_chunk(ref), level), rgb_frames[i])

    def test_refs_describe_the_chunks(self, store: PixelStore, mr_frames: npt.NDArray[np.generic]) -> None:
        level = deflated_level(mr_frames)
        (refs,) = store.write_instance(SOP, [level], {})
        offset = 0
        for ref, chunk in zip(refs, level.chunks, strict=True):
            assert (ref.offset, ref.length, ref.crc32) == (offset, len(chunk), zlib.crc32(chunk))
            offset += len(chunk)
        assert store.chunk_file_size(refs[0].key) == offset + index_nbytes(10)

    def test_flipped_byte_is_detected(self, store: PixelStore, mr_frames: npt.NDArray[np.generic]) -> None:
        (refs,) = store.write_instance(SOP, [deflated_level(mr_frames)], {})
        victim = refs[4]
        original = store.read_chunk(victim)
        self.overwrite(store, victim.key, victim.offset + 7, bytes([original[7] ^ 0x01]))
        with pytest.raises(CorruptDataError, match=victim.key):
            store.read_chunk(victim)
        with pytest.raises(CorruptDataError, match="crc32"):
            store.read_chunks(refs)
        assert store.read_chunk(refs[3]) is not None  # neighbours are intact
        assert store.verify_instance(refs) == [
            f"{victim.key}: chunk 4 at offset {victim.offset} fails its crc32"
        ]

    def test_truncated_shard_is_detected(self, store: PixelStore, mr_frames: npt.NDArray[np.generic]) -> None:
        (refs,) = store.write_instance(SOP, [deflated_level(mr_frames)], {})
        last = refs[-1]
        self.truncate(store, last.key, last.offset + last.length // 2)
        with pytest.raises(CorruptDataError, match="truncated"):
            store.read_chunk(last)
        with pytest.raises(CorruptDataError, match="truncated"):
            store.read_chunk(last, prefix=last.length)
        assert store.read_chunk(refs[0]) == store.read_chunks([refs[0]])[0]
        [problem] = store.verify_instance(refs)
        assert "shard file is" in problem and last.key in problem

    def test_damaged_shard_index_is_reported(
        self, store: PixelStore, mr_frames: npt.NDArray[np.generic]
    ) -> None:
        (refs,) = store.write_instance(SOP, [deflated_level(mr_frames)], {})
        size = store.chunk_file_size(refs[0].key)
        self.overwrite(store, refs[0].key, size - index_nbytes(10), b"\xff")
        assert store.verify_instance(refs) == [f"{refs[0].key}: shard index checksum (crc32c) does not match"]

    def test_prefix_reads(self, store: PixelStore, ct_frames: npt.NDArray[np.generic]) -> None:
        level = deflated_level(ct_frames)
        (refs,) = store.write_instance(SOP, [level], {})
        chunk = level.chunks[0]
        for n in (1, 10, len(chunk) - 1, len(chunk)):
            assert store.read_chunk(refs[0], prefix=n) == chunk[:n]
        for n in (0, len(chunk) + 1):
            with pytest.raises(ValueError):
                store.read_chunk(refs[0], prefix=n)

    def test_missing_shard(self, store: PixelStore, ct_frames: npt.NDArray[np.generic]) -> None:
        (refs,) = store.write_instance(SOP, [deflated_level(ct_frames)], {})
        store.delete_instance(SOP)
        with pytest.raises(CorruptDataError, match="missing"):
            store.read_chunk(refs[0])
        assert store.verify_instance(refs) == [f"{refs[0].key}: shard file is missing"]
        with pytest.raises(NotFoundError):
            store.chunk_file_size(refs[0].key)

    def test_delete(self, store: PixelStore, ct_frames: npt.NDArray[np.generic]) -> None:
        store.write_instance(SOP, [deflated_level(ct_frames)], {})
        store.write_instance("1.2.3", [deflated_level(ct_frames)], {})
        nbytes = store.instance_nbytes(SOP)
        assert nbytes > len(deflated_level(ct_frames).chunks[0])
        assert store.delete_instance(SOP) == nbytes
        assert store.delete_instance(SOP) == 0
        assert list(store.instance_dirs()) == [("1.2.3", 0)]
        assert store.temp_dirs() == []
        with pytest.raises(NotFoundError, match=SOP):
            store.instance_nbytes(SOP)

    def test_generations(self, store: PixelStore, ct_frames: npt.NDArray[np.generic]) -> None:
        old = store.write_instance(SOP, [deflated_level(ct_frames)], {})
        new_level = deflated_level(ct_frames[:, ::-1])
        new = store.write_instance(SOP, [new_level], {}, generation=1)
        assert store.instance_key(SOP, 1) == f"{fanout(SOP)}/{SOP}~1"
        assert new[0][0].key.startswith(store.instance_key(SOP, 1) + "/")
        assert sorted(store.instance_dirs()) == [(SOP, 0), (SOP, 1)]
        store.delete_instance(SOP)
        assert list(store.instance_dirs()) == [(SOP, 1)]
        assert store.read_chunk(new[0][0]) == new_level.chunks[0]
        with pytest.raises(CorruptDataError):
            store.read_chunk(old[0][0])
        with pytest.raises(ValueError):
            store.write_instance(SOP, [new_level], {}, generation=-1)

    def test_rewrite_same_generation_is_refused(
        self, store: PixelStore, ct_frames: npt.NDArray[np.generic]
    ) -> None:
        level = deflated_level(ct_frames)
        (refs,) = store.write_instance(SOP, [level], {})
        with pytest.raises(FileExistsError):
            store.write_instance(SOP, [deflated_level(ct_frames[:, ::-1])], {})
        assert store.read_chunk(refs[0]) == level.chunks[0]
        assert store.temp_dirs() == []

    def test_racing_writers_of_one_instance(
        self, store: PixelStore, mr_frames: npt.NDArray[np.generic]
    ) -> None:
        levels = [deflated_level(mr_frames[i : i + 1]) for i in range(4)]
        barrier = threading.Barrier(4)

        def write(level: LevelArray) -> tuple[ChunkRef, ...] | None:
            barrier.wait()
            try:
                return store.write_instance(SOP, [level], {})[0]
            except FileExistsError:
                return None

        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(write, levels))
        [(winner, refs)] = [(i, r) for i, r in enumerate(results) if r is not None]
        assert store.read_chunk(refs[0]) == levels[winner].chunks[0]
        assert list(store.instance_dirs()) == [(SOP, 0)]
        assert store.temp_dirs() == []

    def test_rewrite_after_delete_reads_new_bytes(
        self, store: PixelStore, mr_frames: npt.NDArray[np.generic]
    ) -> None:
        (old,) = store.write_instance(SOP, [deflated_level(mr_frames)], {})
        store.read_chunk(old[0])
        store.delete_instance(SOP)
        level = deflated_level(mr_frames[:, ::-1])
        (new,) = store.write_instance(SOP, [level], {})
        assert new[0].key == old[0].key
        assert store.read_chunks(new) == list(level.chunks)

    def test_passthrough_config_and_attributes(
        self, store: PixelStore, ct_frames: npt.NDArray[np.generic]
    ) -> None:
        jpeg = b"\xff\xd8\xff\xdb" + bytes(100) + b"\xff\xd9"  # kept as received: the store never parses it
        level = LevelArray(
            0, (1, 8, 8, 3), "|u1", CODEC_PASSTHROUGH, {"transfer_syntax": JPEG_BASELINE}, [jpeg]
        )
        (refs,) = store.write_instance(SOP, [level], {"rows": 8})
        assert store.read_chunk(refs[0]) == jpeg

    def test_invalid_input(self, store: PixelStore, ct_frames: npt.NDArray[np.generic]) -> None:
        good = deflated_level(ct_frames)
        bad_levels = [
            LevelArray(0, (2, 128, 128), good.dtype, good.codec, {}, good.chunks),
            LevelArray(0, (1, 128), good.dtype, good.codec, {}, good.chunks),
            LevelArray(0, good.shape, ">i2", good.codec, {}, good.chunks),
            LevelArray(0, good.shape, good.dtype, "gif", {}, good.chunks),
            LevelArray(0, good.shape, good.dtype, good.codec, {}, [b""]),
            LevelArray(-1, good.shape, good.dtype, good.codec, {}, good.chunks),
        ]
        for level in bad_levels:
            with pytest.raises(ValueError):
                store.write_instance(SOP, [level], {})
        with pytest.raises(ValueError, match="duplicate"):
            store.write_instance(SOP, [good, good], {})
        with pytest.raises(ValueError, match="multiscales"):
            store.write_instance(SOP, [good], {"multiscales": []})
        with pytest.raises(ValueError):
            store.write_instance(SOP, [], {})
        for uid in ("../etc", "1.2.x", "", "1." * 40 + "1", "1..2"):
            with pytest.raises(InvalidUIDError):
                store.write_instance(uid, [good], {})
        assert list(store.instance_dirs()) == [] and store.temp_dirs() == []

    def test_batched_writes_then_one_sync(
        self, store: PixelStore, mr_frames: npt.NDArray[np.generic]
    ) -> None:
        levels = [deflated_level(mr_frames, 0), deflated_level(mr_frames, 1)]
        uids = [f"1.2.826.0.1.{n}" for n in range(5)]
        written = [store.write_instance(uid, levels, {}, sync=False) for uid in uids]
        assert store.sync() is None
        assert sorted(store.instance_dirs()) == sorted((uid, 0) for uid in uids)
        for refs in written:
            assert store.verify_instance(refs) == []
            assert store.read_chunks(refs[1]) == list(levels[1].chunks)
        assert store.temp_dirs() == []

    def test_fanout_groups_exist_from_the_start(self, store: PixelStore) -> None:
        assert store.store.list_dir("") == sorted([*FANOUTS, ZARR_JSON])
        for name in FANOUTS:
            assert store.store.list_dir(name) == [ZARR_JSON]
        assert list(store.instance_dirs()) == [] and store.temp_dirs() == []

    @pytest.mark.parametrize("sync", [True, False])
    def test_concurrent_writes(
        self, store: PixelStore, mr_frames: npt.NDArray[np.generic], sync: bool
    ) -> None:
        levels = [deflated_level(mr_frames[i : i + 1]) for i in range(10)]

        def write(n: int) -> tuple[str, tuple[ChunkRef, ...]]:
            uid = f"1.2.826.0.1.{n}"
            refs = store.write_instance(uid, [levels[n % 10]], {"n": n}, sync=sync)[0]
            if not sync and n % 16 == 15:
                store.sync()
            return uid, refs

        with ThreadPoolExecutor(8) as pool:
            written = list(pool.map(write, range(64)))
        store.sync()
        assert sorted(store.instance_dirs()) == sorted((uid, 0) for uid, _ in written)
        with ThreadPoolExecutor(8) as pool:
            chunks = list(pool.map(lambda item: store.read_chunk(item[1][0]), written))
        for n, chunk in enumerate(chunks):
            assert chunk == levels[n % 10].chunks[0]
        assert store.temp_dirs() == []


class TestLocalPixelStore(PixelStoreTests):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[PixelStore]:
        with LocalPixelStore(tmp_path / "pixels", fd_cache_size=8) as local:
            yield local

    def overwrite(self, store: PixelStore, key: str, offset: int, data: bytes) -> None:
        assert isinstance(store, LocalPixelStore)
        with open(store.root / key, "r+b") as file:
            file.seek(offset)
            file.write(data)

    def truncate(self, store: PixelStore, key: str, size: int) -> None:
        assert isinstance(store, LocalPixelStore)
        os.truncate(store.root / key, size)

    def test_layout_on_disk(self, tmp_path: Path, mr_frames: npt.NDArray[np.generic]) -> None:
        root = tmp_path / "pixels"
        with LocalPixelStore(root) as store:
            store.write_instance(SOP, [deflated_level(mr_frames, 0), deflated_level(mr_frames, 1)], {})
            store.write_instance("1.2.3", [deflated_level(mr_frames, 0)], {}, sync=False)
        instance = root / fanout(SOP) / SOP
        files = sorted(str(p.relative_to(instance)) for p in instance.rglob("*") if p.is_file())
        assert files == ["0/c.0.0.0", "0/zarr.json", "1/c.0.0.0", "1/zarr.json", "zarr.json"]
        single = root / fanout("1.2.3") / "1.2.3"
        entries = sorted(str(p.relative_to(single)) for p in single.rglob("*"))
        assert entries == ["0", "0/c.0.0.0", "0/zarr.json", "zarr.json"]  # two directories an instance
        assert sorted(p.name for p in root.iterdir()) == sorted([*FANOUTS, "zarr.json"])
        assert all((root / name / "zarr.json").is_file() for name in FANOUTS)

    def test_reopen_adds_missing_fanout_groups(
        self, tmp_path: Path, ct_frames: npt.NDArray[np.generic]
    ) -> None:
        root = tmp_path / "pixels"
        with LocalPixelStore(root) as store:
            (refs,) = store.write_instance(SOP, [deflated_level(ct_frames)], {})
        group = (root / "00" / "zarr.json").read_bytes()
        # a root made before fan-outs were created up front, and a group file cut short by a crash
        for name in FANOUTS:
            if name != fanout(SOP):
                shutil.rmtree(root / name)
        os.truncate(root / fanout(SOP) / "zarr.json", 0)
        with LocalPixelStore(root) as again:
            assert all((root / name / "zarr.json").read_bytes() == group for name in FANOUTS)
            assert again.read_chunk(refs[0]) == deflated_level(ct_frames).chunks[0]
            assert list(again.instance_dirs()) == [(SOP, 0)]

    def test_reopen_existing_root(self, tmp_path: Path, ct_frames: npt.NDArray[np.generic]) -> None:
        root = tmp_path / "pixels"
        with LocalPixelStore(root) as store:
            (refs,) = store.write_instance(SOP, [deflated_level(ct_frames)], {})
            root_json = (root / "zarr.json").read_bytes()
        with LocalPixelStore(root) as again:
            assert again.read_chunk(refs[0]) == deflated_level(ct_frames).chunks[0]
            assert (root / "zarr.json").read_bytes() == root_json

    def test_temp_dir_cleanup(self, tmp_path: Path, ct_frames: npt.NDArray[np.generic]) -> None:
        root = tmp_path / "pixels"
        with LocalPixelStore(root) as store:
            store.write_instance(SOP, [deflated_level(ct_frames)], {})
            # what a crash between mkdir and rename leaves behind
            orphan = root / fanout(SOP) / f".tmp-{SOP}-deadbeef"
            (orphan / "0").mkdir(parents=True)
            (orphan / "0" / "zarr.json").write_bytes(b"{}")
            assert store.temp_dirs() == [f"{fanout(SOP)}/.tmp-{SOP}-deadbeef"]
            assert list(store.instance_dirs()) == [(SOP, 0)]
            assert store.remove_temp_dirs(min_age_s=3600) == 0  # too young: might be a write in flight
            assert store.remove_temp_dirs() == 2
            assert store.temp_dirs() == []
            assert not orphan.exists()
            assert list(store.instance_dirs()) == [(SOP, 0)]

    def test_foreign_entries_are_not_instances(
        self, tmp_path: Path, ct_frames: npt.NDArray[np.generic]
    ) -> None:
        root = tmp_path / "pixels"
        with LocalPixelStore(root) as store:
            store.write_instance(SOP, [deflated_level(ct_frames)], {})
            (root / fanout(SOP) / "not-a-uid").mkdir()
            (root / fanout(SOP) / "1.2.3").mkdir()  # a UID that hashes to another fan-out
            (root / "zz").mkdir()
            assert list(store.instance_dirs()) == [(SOP, 0)]


@settings(max_examples=50, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(lengths=st.lists(st.integers(min_value=1, max_value=5000), min_size=1, max_size=40))
def test_shard_index_round_trip(lengths: list[int]) -> None:
    index, offsets = shard_index(lengths)
    assert len(index) == index_nbytes(len(lengths))
    assert parse_shard_index(index, len(lengths)) == list(zip(offsets, lengths, strict=True))
    damaged = bytes([index[0] ^ 1]) + index[1:]
    assert parse_shard_index(damaged, len(lengths)) is None


@settings(max_examples=25, deadline=None)
@given(chunks=st.lists(st.binary(min_size=1, max_size=3000), min_size=1, max_size=12))
def test_any_chunks_round_trip(tmp_path_factory: pytest.TempPathFactory, chunks: list[bytes]) -> None:
    with LocalPixelStore(tmp_path_factory.mktemp("pixels")) as store:
        level = LevelArray(0, (len(chunks), 4, 4), "<u2", "zstd", {}, chunks)
        (refs,) = store.write_instance(SOP, [level], {})
        assert store.read_chunks(list(reversed(refs))) == list(reversed(chunks))
        assert store.verify_instance(refs) == []


@given(
    uid=st.from_regex(r"[1-9][0-9]{0,5}(\.[0-9]{1,8}){1,6}", fullmatch=True), generation=st.integers(0, 10**6)
)
def test_instance_names_parse_back(uid: str, generation: int) -> None:
    prefix, name = instance_key(uid, generation).split("/")
    assert prefix == fanout(uid)
    assert parse_instance_name(name) == (uid, generation)
