"""Where things live in the pixel hierarchy and what its Zarr v3 metadata and shard files contain."""

from __future__ import annotations

import hashlib
import json
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import google_crc32c
import numpy as np

from engine.errors import InvalidUIDError
from engine.types import CODEC_HTJ2K, CODEC_JPEG2K, CODEC_JPEGLS, CODEC_PASSTHROUGH, CODEC_ZSTD

ZARR_JSON = "zarr.json"
GENERATION_SEPARATOR = "~"
CODEC_NAME_PREFIX = "pacs_engine."
CHUNK_KEY_SEPARATOR = "."
# The fan-out groups under the root, all created with the root so no instance write creates one.
FANOUTS = tuple(f"{i:02x}" for i in range(256))
STORAGE_CODECS = (CODEC_HTJ2K, CODEC_JPEGLS, CODEC_JPEG2K, CODEC_ZSTD, CODEC_PASSTHROUGH)
# Every entry of the shard index is a pair of little-endian uint64 (offset, nbytes); crc32c follows it.
INDEX_ENTRY = struct.Struct("<QQ")
INDEX_CRC = struct.Struct("<I")
# Integer and float formats a frame can have; big-endian frames are converted before they reach us.
_ALLOWED_DTYPES = frozenset({"|u1", "|i1", "<u2", "<i2", "<u4", "<i4", "<u8", "<i8", "<f4", "<f8"})
# A DICOM UID is digits and dots, at most 64 characters: safe as a path component once checked.
_UID_RE = re.compile(r"[0-9]+(\.[0-9]+)*")
_UID_MAX = 64


@dataclass(frozen=True, slots=True)
class LevelArray:
    """One resolution level of one instance as it is written: one encoded chunk per frame."""

    level: int
    shape: tuple[int, ...]  # (frames, rows, cols) or (frames, rows, cols, samples)
    dtype: str  # numpy dtype str of the decoded frame, e.g. '<i2'
    codec: str  # one of engine.types CODEC_*
    codec_config: Mapping[str, str | int]
    chunks: Sequence[bytes]


def check_uid(sop_uid: str) -> str:
    """Return `sop_uid` if it is a UID we can use as a path component; raise InvalidUIDError otherwise."""
    if len(sop_uid) > _UID_MAX or _UID_RE.fullmatch(sop_uid) is None:
        raise InvalidUIDError(
            f"SOP Instance UID {sop_uid!r} is not a valid UID (digits and dots, <= 64 chars)"
        )
    return sop_uid


def check_generation(generation: int) -> int:
    """Return `generation` if it is a non-negative int; raise ValueError otherwise."""
    if not isinstance(generation, int) or isinstance(generation, bool) or generation < 0:
        raise ValueError(f"generation must be an int >= 0, got {generation!r}")
    return generation


def fanout(sop_uid: str) -> str:
    """The two-hex-digit fan-out group an instance lives under: spreads instances over 256 directories."""
    return hashlib.blake2b(sop_uid.encode("ascii"), digest_size=1).hexdigest()


def instance_name(sop_uid: str, generation: int) -> str:
    """Directory name of an instance group: the UID, plus `~generation` for a replacement."""
    if generation == 0:
        return sop_uid
    return f"{sop_uid}{GENERATION_SEPARATOR}{generation}"


def instance_key(sop_uid: str, generation: int = 0) -> str:
    """Key of an instance group relative to the store root, e.g. 'ab/1.2.3' or 'ab/1.2.3~2'."""
    check_uid(sop_uid)
    check_generation(generation)
    return f"{fanout(sop_uid)}/{instance_name(sop_uid, generation)}"


def parse_instance_name(name: str) -> tuple[str, int] | None:
    """(sop_uid, generation) of an instance directory name, or None if it is not one."""
    uid, sep, gen = name.partition(GENERATION_SEPARATOR)
    if _UID_RE.fullmatch(uid) is None or len(uid) > _UID_MAX:
        return None
    if not sep:
        return uid, 0
    if not gen.isdigit() or gen.startswith("0"):
        return None
    return uid, int(gen)


def shard_key(ndim: int) -> str:
    """Key of the one shard of a level array, relative to the array: (0, ...) in the default chunk key
    encoding with separator '.', e.g. 'c.0.0.0'.

    One file beside the array's zarr.json, where the '/' separator would need a directory per dimension.
    """
    return CHUNK_KEY_SEPARATOR.join(["c", *("0" for _ in range(ndim))])


def zarr_codec_name(codec: str) -> str:
    """Name under which a storage codec is registered with zarr, e.g. 'pacs_engine.htj2k'."""
    return CODEC_NAME_PREFIX + codec


def check_level(array: LevelArray) -> None:
    """Raise ValueError unless `array` describes a level we can write."""
    where = f"level {array.level}"
    if not isinstance(array.level, int) or array.level < 0:
        raise ValueError(f"{where}: level must be an int >= 0")
    if len(array.shape) not in (3, 4) or any(int(d) <= 0 for d in array.shape):
        raise ValueError(
            f"{where}: shape {array.shape} is not (frames, rows, cols[, samples]) of positive sizes"
        )
    if array.dtype not in _ALLOWED_DTYPES:
        raise ValueError(f"{where}: dtype {array.dtype!r} is not one of {sorted(_ALLOWED_DTYPES)}")
    if array.codec not in STORAGE_CODECS:
        raise ValueError(f"{where}: unknown storage codec {array.codec!r}")
    if len(array.chunks) != array.shape[0]:
        raise ValueError(f"{where}: {len(array.chunks)} chunks for {array.shape[0]} frames")
    if any(len(chunk) == 0 for chunk in array.chunks):
        raise ValueError(f"{where}: an encoded chunk is empty")
    for name, value in array.codec_config.items():
        if not isinstance(name, str) or not isinstance(value, (str, int)) or isinstance(value, bool):
            raise ValueError(f"{where}: codec_config {name!r}={value!r} is not str -> str | int")


def shard_index(lengths: Sequence[int]) -> tuple[bytes, tuple[int, ...]]:
    """The shard index (entries + crc32c) for chunks of `lengths` laid out back to back from offset 0.

    Returns the index bytes and the offset of each chunk.
    """
    offsets: list[int] = []
    entries = bytearray()
    offset = 0
    for length in lengths:
        offsets.append(offset)
        entries += INDEX_ENTRY.pack(offset, length)
        offset += length
    crc = google_crc32c.value(bytes(entries))
    return bytes(entries) + INDEX_CRC.pack(crc), tuple(offsets)


def index_nbytes(frames: int) -> int:
    """Size of the shard index of a level array with `frames` inner chunks."""
    return frames * INDEX_ENTRY.size + INDEX_CRC.size


def parse_shard_index(data: bytes, frames: int) -> list[tuple[int, int]] | None:
    """(offset, nbytes) entries of a shard index, or None if its crc32c does not match."""
    entries, crc = data[: frames * INDEX_ENTRY.size], data[frames * INDEX_ENTRY.size :]
    if len(crc) != INDEX_CRC.size or INDEX_CRC.unpack(crc)[0] != google_crc32c.value(entries):
        return None
    return [INDEX_ENTRY.unpack_from(entries, i * INDEX_ENTRY.size) for i in range(frames)]


def to_json(document: Mapping[str, object]) -> bytes:
    """Encode a metadata document; compact, because these files are written on every ingest."""
    return json.dumps(document, separators=(",", ":"), allow_nan=False).encode("utf-8")


def group_metadata(attributes: Mapping[str, object]) -> dict[str, object]:
    """The zarr.json document of a group."""
    return {"zarr_format": 3, "node_type": "group", "attributes": dict(attributes)}


def array_metadata(array: LevelArray) -> dict[str, object]:
    """The zarr.json document of a level array: one shard holding the whole array, one inner chunk a frame."""
    shape = [int(d) for d in array.shape]
    dtype = np.dtype(array.dtype)
    codec: dict[str, object] = {
        "name": zarr_codec_name(array.codec),
        "configuration": dict(array.codec_config),
    }
    names = ["frame", "y", "x", "c"][: len(shape)]
    return {
        "zarr_format": 3,
        "node_type": "array",
        "shape": shape,
        "data_type": dtype.name,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": shape}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": CHUNK_KEY_SEPARATOR}},
        "fill_value": 0.0 if dtype.kind == "f" else 0,
        "codecs": [
            {
                "name": "sharding_indexed",
                "configuration": {
                    "chunk_shape": [1, *shape[1:]],
                    "codecs": [codec],
                    "index_codecs": [
                        {"name": "bytes", "configuration": {"endian": "little"}},
                        {"name": "crc32c"},
                    ],
                    "index_location": "end",
                },
            }
        ],
        "attributes": {},
        "dimension_names": names,
        "storage_transformers": [],
    }


def multiscales(sop_uid: str, arrays: Sequence[LevelArray]) -> list[dict[str, object]]:
    """OME-Zarr-style `multiscales` description of the levels, finest first."""
    ordered = sorted(arrays, key=lambda a: a.level)
    base = ordered[0].shape
    axes: list[dict[str, str]] = [
        {"name": "frame"},
        {"name": "y", "type": "space"},
        {"name": "x", "type": "space"},
    ]
    if len(base) == 4:
        axes.append({"name": "c", "type": "channel"})
    datasets = []
    for array in ordered:
        scale = [1.0] + [base[i] / array.shape[i] for i in (1, 2)] + ([1.0] if len(base) == 4 else [])
        datasets.append(
            {"path": str(array.level), "coordinateTransformations": [{"type": "scale", "scale": scale}]}
        )
    return [{"name": sop_uid, "axes": axes, "datasets": datasets}]
