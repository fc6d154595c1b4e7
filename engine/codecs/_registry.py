"""Lazy registry of storage codecs: name -> implementing module, imported on first use."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Protocol, cast

import numpy as np
import numpy.typing as npt

from engine.codecs import _backend
from engine.errors import CodecUnavailableError
from engine.types import CODEC_HTJ2K, CODEC_JPEG2K, CODEC_JPEGLS, CODEC_ZSTD, EncodedFrame


class StorageCodec(Protocol):
    """What a storage codec module provides."""

    FEATURE: str

    def encode(self, frame: npt.NDArray[np.generic], bits_stored: int | None) -> EncodedFrame: ...

    def decode(
        self, data: bytes, shape: tuple[int, ...], dtype: np.dtype[np.generic], level: int
    ) -> npt.NDArray[np.generic]: ...


_MODULES = {
    CODEC_HTJ2K: "engine.codecs._htj2k",
    CODEC_JPEGLS: "engine.codecs._jpegls",
    CODEC_JPEG2K: "engine.codecs._jpeg2k",
    CODEC_ZSTD: "engine.codecs._zstd",
}
_FEATURES = {CODEC_HTJ2K: "htj2k", CODEC_JPEGLS: "jpegls", CODEC_JPEG2K: "jpeg2k", CODEC_ZSTD: "zstd"}
IMAGE_CODECS = frozenset({CODEC_HTJ2K, CODEC_JPEGLS, CODEC_JPEG2K})


def storage_codecs() -> tuple[str, ...]:
    """Names of every storage codec the engine knows."""
    return tuple(_MODULES)


def is_available(codec: str) -> bool:
    """Whether the storage codec `codec` can be used on this installation."""
    return codec in _FEATURES and _backend.is_available(_FEATURES[codec])


def load(codec: str) -> StorageCodec:
    """The module implementing `codec`; raises CodecUnavailableError for unknown or missing codecs."""
    if codec not in _MODULES:
        raise CodecUnavailableError(f"unknown storage codec {codec!r}; known: {', '.join(_MODULES)}")
    _backend.require(_FEATURES[codec])
    module: ModuleType = importlib.import_module(_MODULES[codec])
    return cast(StorageCodec, module)
