"""The pixel store: the only user of zarr. Encoded frames in a Zarr v3 hierarchy, read back by ChunkRef."""

from __future__ import annotations

from engine.pixels._chunkstore import ChunkStore, LocalChunkStore
from engine.pixels._layout import LevelArray, fanout, zarr_codec_name
from engine.pixels._store import LocalPixelStore, PixelStore

# zarr itself is only needed to read the hierarchy with zarr-python (register_codecs) and costs 0.24 s
# of start-up for every command that never does: imported on first use.
_LAZY = {"ZARR_CODECS", "PacsEngineCodec", "register_codecs"}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        from engine.pixels import _zarr_codecs

        return getattr(_zarr_codecs, name)
    raise AttributeError(f"module 'engine.pixels' has no attribute {name!r}")

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
