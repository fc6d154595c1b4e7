"""Our storage codecs as Zarr v3 array->bytes codecs, so plain zarr-python can read the hierarchy."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np
from zarr.abc.codec import ArrayBytesCodec
from zarr.core.common import JSON, parse_named_configuration
from zarr.registry import register_codec

from engine.errors import CodecUnavailableError
from engine.pixels._layout import zarr_codec_name
from engine.types import CODEC_HTJ2K, CODEC_JPEG2K, CODEC_JPEGLS, CODEC_PASSTHROUGH, CODEC_ZSTD

if TYPE_CHECKING:
    from typing import Self

    from zarr.core.array_spec import ArraySpec
    from zarr.core.buffer import Buffer, NDBuffer

ConfigValue = str | int


@dataclass(frozen=True)
class PacsEngineCodec(ArrayBytesCodec):
    """One frame (the inner chunk (1, rows, cols[, samples])) as one codestream of a storage codec."""

    is_fixed_size = False
    storage_codec: ClassVar[str]

    configuration: tuple[tuple[str, ConfigValue], ...]

    def __init__(self, **configuration: ConfigValue) -> None:
        for name, value in configuration.items():
            if not isinstance(value, (str, int)) or isinstance(value, bool):
                raise TypeError(f"{zarr_codec_name(self.storage_codec)}: {name}={value!r} is not str or int")
        object.__setattr__(self, "configuration", tuple(sorted(configuration.items())))

    @classmethod
    def from_dict(cls, data: dict[str, JSON]) -> Self:
        _, configuration = parse_named_configuration(
            data, zarr_codec_name(cls.storage_codec), require_configuration=False
        )
        return cls(**(configuration or {}))  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, JSON]:
        return {"name": zarr_codec_name(self.storage_codec), "configuration": dict(self.configuration)}

    def compute_encoded_size(self, input_byte_length: int, chunk_spec: ArraySpec) -> int:
        raise NotImplementedError  # variable-size codestreams

    def _decode_sync(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        # imported here: codecs sits below pixels, but zarr only needs it once a chunk is actually read
        from engine.codecs import decode_frame

        frame = decode_frame(
            chunk_bytes.to_bytes(),
            self.storage_codec,
            shape=tuple(chunk_spec.shape[1:]),
            dtype=chunk_spec.dtype.to_native_dtype(),
        )
        return chunk_spec.prototype.nd_buffer.from_numpy_array(np.asarray(frame).reshape(chunk_spec.shape))

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        return await asyncio.to_thread(self._decode_sync, chunk_bytes, chunk_spec)

    def _encode_sync(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        from engine.codecs import encode_frame

        bits_stored = dict(self.configuration).get("bits_stored")
        frame = chunk_array.as_numpy_array().reshape(chunk_spec.shape[1:])
        encoded = encode_frame(
            frame, self.storage_codec, bits_stored=bits_stored if isinstance(bits_stored, int) else None
        )
        return chunk_spec.prototype.buffer.from_bytes(encoded.data)

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        return await asyncio.to_thread(self._encode_sync, chunk_array, chunk_spec)


@dataclass(frozen=True, init=False)  # keep the base __init__
class Htj2kCodec(PacsEngineCodec):
    """pacs_engine.htj2k: HTJ2K lossless RPCL codestream."""

    storage_codec = CODEC_HTJ2K


@dataclass(frozen=True, init=False)  # keep the base __init__
class JpeglsCodec(PacsEngineCodec):
    """pacs_engine.jpegls: JPEG-LS lossless codestream."""

    storage_codec = CODEC_JPEGLS


@dataclass(frozen=True, init=False)  # keep the base __init__
class Jpeg2kCodec(PacsEngineCodec):
    """pacs_engine.jpeg2k: JPEG 2000 lossless codestream."""

    storage_codec = CODEC_JPEG2K


@dataclass(frozen=True, init=False)  # keep the base __init__
class ZstdFrameCodec(PacsEngineCodec):
    """pacs_engine.zstd: byte-shuffled zstd of the little-endian frame."""

    storage_codec = CODEC_ZSTD


@dataclass(frozen=True, init=False)  # keep the base __init__
class PassthroughCodec(PacsEngineCodec):
    """pacs_engine.passthrough: the codestream exactly as received; readable, never written by zarr."""

    storage_codec = CODEC_PASSTHROUGH

    def _encode_sync(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        raise CodecUnavailableError(
            "pacs_engine.passthrough holds received codestreams as they were; zarr cannot write new ones"
        )


ZARR_CODECS: tuple[type[PacsEngineCodec], ...] = (
    Htj2kCodec,
    JpeglsCodec,
    Jpeg2kCodec,
    ZstdFrameCodec,
    PassthroughCodec,
)


def register_codecs() -> None:
    """Register the pacs_engine.* codecs with zarr-python so it can open the hierarchy.

    Idempotent: zarr keys its registry by class name, so registering again replaces an entry by itself.
    """
    for codec in ZARR_CODECS:
        register_codec(zarr_codec_name(codec.storage_codec), codec)
