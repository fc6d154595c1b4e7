"""The hierarchy we write by hand is a Zarr v3 hierarchy: plain zarr-python opens and decodes it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import zarr
import zarr.registry
from pixel_data import deflated_level

from engine.codecs import decode_frame, encode_frame, is_available
from engine.errors import CodecUnavailableError
from engine.pixels import ZARR_CODECS, LevelArray, LocalPixelStore, register_codecs, zarr_codec_name
from engine.types import (
    CODEC_HTJ2K,
    CODEC_JPEG2K,
    CODEC_JPEGLS,
    CODEC_PASSTHROUGH,
    CODEC_ZSTD,
    JPEG_BASELINE,
    ChunkRef,
)

SOP = "1.2.826.0.1.3680043.8.498.1"
ZARR_CODEC_OF = {codec.storage_codec: codec for codec in ZARR_CODECS}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "pixels"


@pytest.fixture
def store(root: Path) -> Iterator[LocalPixelStore]:
    register_codecs()
    with LocalPixelStore(root) as local:
        yield local


def encoded_level(frames: npt.NDArray[np.generic], codec: str, level: int = 0) -> LevelArray:
    step = 2**level
    scaled = np.ascontiguousarray(frames[:, ::step, ::step])
    return LevelArray(
        level=level,
        shape=tuple(scaled.shape),
        dtype=scaled.dtype.str,
        codec=codec,
        codec_config={},
        chunks=[encode_frame(frame, codec).data for frame in scaled],
    )


def open_level(root: Path, store: LocalPixelStore, level: int, generation: int = 0) -> zarr.Array:
    group = zarr.open_group(root, mode="r")
    node = group[f"{store.instance_key(SOP, generation)}/{level}"]
    assert isinstance(node, zarr.Array)
    return node


def our_decode(store: LocalPixelStore, ref: ChunkRef, level: LevelArray) -> npt.NDArray[np.generic]:
    return decode_frame(store.read_chunk(ref), level.codec, shape=level.shape[1:], dtype=level.dtype)


def test_register_codecs_is_idempotent() -> None:
    register_codecs()
    register_codecs()
    for codec in ZARR_CODECS:
        assert zarr.registry.get_codec_class(zarr_codec_name(codec.storage_codec)) is codec


@pytest.mark.parametrize("codec", [CODEC_ZSTD, CODEC_HTJ2K, CODEC_JPEGLS, CODEC_JPEG2K])
def test_zarr_reads_what_we_decode(
    codec: str, store: LocalPixelStore, root: Path, mr_frames: npt.NDArray[np.generic]
) -> None:
    if not is_available(codec):
        pytest.skip(f"{codec} is not built into this imagecodecs")
    levels = [encoded_level(mr_frames, codec, 0), encoded_level(mr_frames, codec, 1)]
    refs = store.write_instance(SOP, levels, {})
    for level, level_refs in zip(levels, refs, strict=True):
        array = open_level(root, store, level.level)
        assert array.shape == level.shape and array.dtype == np.dtype(level.dtype)
        whole = array[:]
        for i, ref in enumerate(level_refs):
            ours = our_decode(store, ref, level)
            np.testing.assert_array_equal(array[i], ours)
            np.testing.assert_array_equal(whole[i], ours)
        step = 2**level.level
        np.testing.assert_array_equal(whole, mr_frames[:, ::step, ::step])


@pytest.mark.parametrize("codec", [CODEC_ZSTD, CODEC_HTJ2K, CODEC_JPEGLS])
def test_zarr_reads_signed_ct_and_colour(
    codec: str,
    store: LocalPixelStore,
    root: Path,
    ct_frames: npt.NDArray[np.generic],
    rgb_frames: npt.NDArray[np.generic],
) -> None:
    if not is_available(codec):
        pytest.skip(f"{codec} is not built into this imagecodecs")
    ct = encoded_level(ct_frames, codec)
    store.write_instance(SOP, [ct], {})
    np.testing.assert_array_equal(open_level(root, store, 0)[:], ct_frames)
    rgb = encoded_level(rgb_frames, codec)
    store.write_instance(SOP, [rgb], {}, generation=1)
    colour = open_level(root, store, 0, generation=1)
    assert colour.shape == (2, 100, 100, 3)
    np.testing.assert_array_equal(colour[1], rgb_frames[1])


def test_metadata_as_zarr_sees_it(
    store: LocalPixelStore, root: Path, mr_frames: npt.NDArray[np.generic]
) -> None:
    levels = [deflated_level(mr_frames, 0), deflated_level(mr_frames, 1)]
    store.write_instance(SOP, levels, {"study_instance_uid": "1.2.3"})
    group = zarr.open_group(root, mode="r")
    instance = group[store.instance_key(SOP)]
    assert isinstance(instance, zarr.Group)
    attrs = instance.attrs.asdict()
    assert attrs["study_instance_uid"] == "1.2.3"
    assert attrs["pacs_engine"] == {"sop_instance_uid": SOP, "generation": 0}
    [scales] = attrs["multiscales"]
    assert [d["path"] for d in scales["datasets"]] == ["0", "1"]
    assert scales["datasets"][1]["coordinateTransformations"][0]["scale"] == [1.0, 2.0, 2.0]
    array = open_level(root, store, 1)
    assert array.shape == (10, 32, 32) and array.dtype == np.dtype("<u2")
    assert array.metadata.dimension_names == ("frame", "y", "x")
    assert array.metadata.chunk_key_encoding.to_dict() == {
        "name": "default",
        "configuration": {"separator": "."},
    }
    [sharding] = array.metadata.codecs
    on_disk = json.loads((root / store.instance_key(SOP) / "1" / "zarr.json").read_bytes())
    assert json.loads(json.dumps(sharding.to_dict())) == on_disk["codecs"][0]
    members = {name for name, _ in group.members(max_depth=None)}
    assert f"{store.instance_key(SOP)}/1" in members


def test_zarr_reads_unsynced_and_older_slash_separated_instances(
    store: LocalPixelStore, root: Path, mr_frames: npt.NDArray[np.generic]
) -> None:
    level = encoded_level(mr_frames, CODEC_ZSTD)
    (old_refs,) = store.write_instance(SOP, [level], {})
    # rewrite it as the layout before the '.' separator wrote it: c/0/0/0 under a '/' encoding
    array_dir = root / store.instance_key(SOP) / "0"
    metadata = json.loads((array_dir / "zarr.json").read_bytes())
    metadata["chunk_key_encoding"]["configuration"]["separator"] = "/"
    (array_dir / "zarr.json").write_text(json.dumps(metadata))
    (array_dir / "c" / "0" / "0").mkdir(parents=True)
    (array_dir / "c.0.0.0").rename(array_dir / "c" / "0" / "0" / "0")
    new = encoded_level(mr_frames[::-1], CODEC_ZSTD)
    (new_refs,) = store.write_instance(SOP, [new], {}, generation=1, sync=False)
    store.sync()
    np.testing.assert_array_equal(open_level(root, store, 0)[:], mr_frames)
    np.testing.assert_array_equal(open_level(root, store, 0, generation=1)[:], mr_frames[::-1])
    moved = [
        ChunkRef(f"{store.instance_key(SOP)}/0/c/0/0/0", r.offset, r.length, r.crc32) for r in old_refs
    ]
    assert store.read_chunks(moved) == list(level.chunks)
    assert store.read_chunks(new_refs) == list(new.chunks)


def test_passthrough_metadata(store: LocalPixelStore, root: Path) -> None:
    jpeg = b"\xff\xd8" + bytes(64) + b"\xff\xd9"
    level = LevelArray(0, (1, 8, 8, 3), "|u1", CODEC_PASSTHROUGH, {"transfer_syntax": JPEG_BASELINE}, [jpeg])
    store.write_instance(SOP, [level], {})
    [sharding] = open_level(root, store, 0).metadata.codecs
    assert json.loads(json.dumps(sharding.to_dict()))["configuration"]["codecs"] == [
        {"name": "pacs_engine.passthrough", "configuration": {"transfer_syntax": JPEG_BASELINE}}
    ]


def test_zarr_writes_through_our_codec(tmp_path: Path, mr_frames: npt.NDArray[np.generic]) -> None:
    register_codecs()
    codec = ZARR_CODEC_OF[CODEC_ZSTD]()
    assert zarr.registry.get_codec_class(zarr_codec_name(CODEC_ZSTD)) is type(codec)
    array = zarr.create_array(
        tmp_path / "z",
        shape=mr_frames.shape,
        chunks=(1, 64, 64),
        shards=mr_frames.shape,
        dtype=mr_frames.dtype,
        serializer=codec,
        compressors=None,
        fill_value=0,
    )
    array[:] = mr_frames
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "z", mode="r")[:], mr_frames)


def test_zarr_cannot_write_passthrough(tmp_path: Path) -> None:
    register_codecs()
    codec = ZARR_CODEC_OF[CODEC_PASSTHROUGH](transfer_syntax=JPEG_BASELINE)
    array = zarr.create_array(
        tmp_path / "p", shape=(1, 8, 8), chunks=(1, 8, 8), dtype="|u1", serializer=codec, compressors=None
    )
    with pytest.raises(CodecUnavailableError, match="passthrough"):
        array[:] = np.ones((1, 8, 8), dtype="|u1")


def test_codec_configuration_must_be_str_or_int() -> None:
    codec_class = ZARR_CODEC_OF[CODEC_HTJ2K]
    with pytest.raises(TypeError):
        codec_class(bits_stored=1.5)  # type: ignore[arg-type]
    assert codec_class(bits_stored=12).to_dict() == {
        "name": zarr_codec_name(codec_class.storage_codec),
        "configuration": {"bits_stored": 12},
    }
