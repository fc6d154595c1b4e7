"""The pixel store: the only user of zarr. Encoded frames in a Zarr v3 hierarchy, read back by ChunkRef."""

from __future__ import annotations

from engine.pixels._chunkstore import ChunkStore, LocalChunkStore
from engine.pixels._layout import LevelArray, fanout, zarr_codec_name
from engine.pixels._store import LocalPixelStore, PixelStore
from engine.pixels._zarr_codecs import ZARR_CODECS, PacsEngineCodec, register_codecs

__all__ = [
    "ZARR_CODECS",
    "ChunkStore",
    "LevelArray",
    "LocalChunkStore",
    "LocalPixelStore",
    "PacsEngineCodec",
    "PixelStore",
    "fanout",
    "register_codecs",
    "zarr_codec_name",
]
