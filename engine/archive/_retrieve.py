"""Retrieval: frames at any level, stored codestreams without decoding, whole instances in any syntax."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import replace

import numpy as np

from engine import codecs, dicom
from engine.errors import CodecUnavailableError, NotFoundError, NotStoredYetError, UnsupportedTransferSyntaxError
from engine.pixels import LocalPixelStore
from engine.types import (
    CODEC_PASSTHROUGH,
    CODEC_ZSTD,
    EXPLICIT_VR_BE,
    EXPLICIT_VR_LE,
    LOSSLESS_ENCAPSULATED_SYNTAXES,
    NATIVE_SYNTAXES,
    InstanceRecord,
    LevelInfo,
    PixelDescription,
)

LOGGER = logging.getLogger(__name__)

# Photometric interpretations that JPEG decoders turn into RGB, so a decompressed copy must say RGB.
_DECODED_TO_RGB = frozenset({"YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "YBR_PARTIAL_420"})


def resolve_syntax(record: InstanceRecord, syntax: str) -> str:
    """Map "original" / "explicit" / "stored" / a UID to the transfer syntax UID to produce."""
    if syntax == "original":
        return record.transfer_syntax_uid
    if syntax == "explicit":
        return EXPLICIT_VR_LE
    if syntax == "stored":
        return stored_syntax(record)
    return syntax


def stored_syntax(record: InstanceRecord) -> str:
    """The syntax whose frames are the stored chunks themselves: served without decoding."""
    if record.codec is None or record.codec in (CODEC_PASSTHROUGH, CODEC_ZSTD):
        return record.transfer_syntax_uid
    syntax = codecs.syntax_for_codec(record.codec)
    return syntax if syntax is not None else record.transfer_syntax_uid


def check_stored(record: InstanceRecord) -> None:
    """Refuse a pending record: it has no pixels to read (NotStoredYetError)."""
    if record.pending:
        raise NotStoredYetError(
            f"instance {record.sop_instance_uid} was received and is still being stored; ask again in a moment"
        )


class Retriever:
    """Reads what an InstanceRecord points to in the pixel store and turns it into pixels or bytes."""

    def __init__(self, pixels: LocalPixelStore) -> None:
        self._pixels = pixels

    # -- frames -------------------------------------------------------------------------------------
    def frame(self, record: InstanceRecord, frame: int, level: int = 0) -> np.ndarray:
        """Decoded pixels of one frame (0-based) at one level (0 = full resolution).

        Raises NotFoundError for a frame or level the instance does not have, CorruptDataError when the
        stored chunk fails its checks, CodecUnavailableError for layouts that are not frame arrays.
        """
        desc, info = self._level(record, frame, level)
        if record.layout == "raw" and level == 0:
            frames = dicom.unpacked_frames(self.raw_bytes(record), desc, record.transfer_syntax_uid)
            if frames is None:
                raise CodecUnavailableError(
                    f"{record.sop_instance_uid}: pixel data is kept as packed bytes "
                    f"(BitsAllocated {desc.bits_allocated}, {desc.photometric}); retrieve the whole instance"
                )
            return frames[frame]
        codec = info.codec or record.codec or ""
        if info.source == "resolution":
            # The whole chunk, not the level's prefix: only a whole chunk can be checked against its
            # CRC, and the decoder needs it where OpenJPH's reduced output would wrap (see codecs).
            data = self._pixels.read_chunk(record.levels[0].chunks[frame])
            return codecs.decode_frame(data, codec, shape=desc.frame_shape, dtype=_dtype(desc), level=level)
        data = self._pixels.read_chunk(info.chunks[frame])
        if codec == CODEC_PASSTHROUGH:
            return codecs.decode_syntax_frame(data, record.transfer_syntax_uid, desc)
        shape = (info.rows, info.columns, *desc.frame_shape[2:])
        return codecs.decode_frame(data, codec, shape=shape, dtype=_dtype(desc))

    def frame_encoded(self, record: InstanceRecord, frame: int) -> tuple[str, bytes]:
        """(transfer syntax, codestream) of a frame exactly as stored: no decoding."""
        desc, info = self._level(record, frame, 0)
        if record.layout == "raw" or info.codec == CODEC_ZSTD:
            raise UnsupportedTransferSyntaxError(
                f"{record.sop_instance_uid}: frames are stored with a general-purpose codec; ask for a "
                "native or lossless transfer syntax"
            )
        return stored_syntax(record), self._pixels.read_chunk(info.chunks[frame])

    def frame_prefix(self, record: InstanceRecord, frame: int, level: int) -> bytes:
        """The leading bytes of a frame's HTJ2K codestream that decode it at `level`."""
        desc, info = self._level(record, frame, level)
        base = record.levels[0]
        if info.source != "resolution" and level != 0:
            raise NotFoundError(f"{record.sop_instance_uid}: level {level} is not a codestream prefix")
        if not base.level_prefixes:
            return self._pixels.read_chunk(base.chunks[frame])
        return self._pixels.read_chunk(base.chunks[frame], prefix=base.level_prefixes[frame][level])

    def _level(self, record: InstanceRecord, frame: int, level: int) -> tuple[PixelDescription, LevelInfo]:
        check_stored(record)
        desc = record.pixel
        if desc is None:
            raise NotFoundError(f"{record.sop_instance_uid} has no pixel data")
        if not 0 <= frame < desc.frames:
            raise NotFoundError(f"{record.sop_instance_uid} has frames 1..{desc.frames}; frame {frame + 1} asked")
        if not 0 <= level < len(record.levels):
            raise NotFoundError(
                f"{record.sop_instance_uid} has levels 0..{len(record.levels) - 1}; level {level} asked"
            )
        return desc, record.levels[level]

    def all_frames(self, record: InstanceRecord) -> Iterator[np.ndarray]:
        """Every frame at full resolution, decoded as it is reached: one held at a time."""
        assert record.pixel is not None
        return (self.frame(record, i, 0) for i in range(record.pixel.frames))

    # -- whole instances ----------------------------------------------------------------------------
    def dataset(self, record: InstanceRecord, prefix: bytes, suffix: bytes, target: str) -> bytes | bytearray:
        """The instance's data set (no file meta) encoded in `target`.

        Byte-identical to what was received when `target` is the original syntax and the pixel data was
        native or lossy; pixel-identical for lossless compressed input. Raises
        UnsupportedTransferSyntaxError when the pixels cannot be expressed in `target`.
        """
        check_stored(record)
        original = record.transfer_syntax_uid
        if record.pixel is None:
            if target == original:
                return dicom.assemble_dataset(prefix, b"", b"", suffix, original)
            return dicom.reencode_dataset(prefix, suffix, original, target)
        if target in NATIVE_SYNTAXES and record.layout != "raw":
            return self._native_dataset(record, prefix, suffix, target)
        value, encapsulated, updates = self._pixel_value(record, target)
        if target == original and not updates:
            return dicom.assemble_dataset(prefix, record.pixel_element_header, value, suffix, original)
        return dicom.reencode_dataset(
            prefix, suffix, original, target, pixel_value=value, encapsulated=encapsulated, updates=updates,
            pixel_tag=dicom.pixel_element_tag(record.pixel),
        )

    def _pixel_value(self, record: InstanceRecord, target: str) -> tuple[bytes, bool, dict[str, object]]:
        desc = record.pixel
        assert desc is not None
        original = record.transfer_syntax_uid
        if record.layout == "raw":
            return self._raw_value(record, target), False, {}
        chunks = self._pixels.read_chunks(record.levels[0].chunks)
        codec = record.codec
        if codec == CODEC_PASSTHROUGH and target == original:
            assert record.encapsulation is not None
            return dicom.join_encapsulated(record.encapsulation, chunks), True, {}
        # Compressed frames are interleaved whatever the native data was (PS3.5 8.2: planar configuration
        # is 0 for these syntaxes), so the header must say so.
        interleave: dict[str, object] = {"PlanarConfiguration": 0} if desc.planar_configuration else {}
        if codec not in (CODEC_PASSTHROUGH, CODEC_ZSTD) and target == codecs.syntax_for_codec(codec or ""):
            return dicom.encapsulate(chunks), True, interleave
        frames, updates = self._decoded(record, chunks)
        if target in LOSSLESS_ENCAPSULATED_SYNTAXES:
            updates = {**updates, **interleave}
            out_desc = _with_updates(desc, updates)
            encoded = [codecs.encode_syntax_frame(f, target, out_desc) for f in frames]
            return dicom.encapsulate(encoded), True, updates
        raise UnsupportedTransferSyntaxError(
            f"cannot produce {target} for {record.sop_instance_uid}: only its original syntax {original}, "
            "native syntaxes and lossless compressed syntaxes can be made from what is stored"
        )

    def _native_dataset(self, record: InstanceRecord, prefix: bytes, suffix: bytes, target: str) -> bytes | bytearray:
        """The data set in a native syntax, built in one buffer with each frame decoded into its place.

        Built as bytes (the value, then the data set around it), each decoded 512 kB CT slice was copied
        twice more while holding the GIL, which the other decoding thread and the sending thread wait for.
        """
        desc = record.pixel
        assert desc is not None
        original = record.transfer_syntax_uid
        frames, updates = self._decoded(record, self._pixels.read_chunks(record.levels[0].chunks))
        out_desc = _with_updates(desc, updates)
        tail = record.pixel_tail if target == original else b""
        length = dicom.native_length(out_desc) + len(tail)
        if target == original and not updates:
            head, after = prefix + record.pixel_element_header, suffix  # the value is as long as it was
            padded = length
        else:
            padded = length + length % 2  # PS3.5 7.1.1: an even value length; the pad byte stays 0
            head, after = dicom.reencoded_around_pixels(
                prefix, suffix, original, target, value_length=padded, updates=updates,
                pixel_tag=dicom.pixel_element_tag(desc),
            )
        data = bytearray(len(head) + padded + len(after))
        data[: len(head)] = head
        data[len(head) + padded :] = after
        value = memoryview(data)[len(head) : len(head) + length]
        dicom.write_native_value(value, frames, out_desc, target, tail, pixel_vr=_native_vr(record, target))
        return dicom.deflate(data) if dicom.syntax_info(target).deflated else data

    def _decoded(self, record: InstanceRecord, chunks: Sequence[bytes]
                 ) -> tuple[Iterator[np.ndarray], dict[str, object]]:
        """The frames of `chunks`, each decoded when it is reached, and the header updates they need."""
        desc = record.pixel
        assert desc is not None
        if record.codec == CODEC_PASSTHROUGH:
            updates: dict[str, object] = {}
            if desc.samples_per_pixel == 3:
                updates["PlanarConfiguration"] = 0
                if desc.photometric in _DECODED_TO_RGB:
                    updates["PhotometricInterpretation"] = "RGB"
            syntax = record.transfer_syntax_uid
            return (codecs.decode_syntax_frame(c, syntax, desc) for c in chunks), updates
        dtype = _dtype(desc)
        codec = record.codec or ""
        return (codecs.decode_frame(c, codec, shape=desc.frame_shape, dtype=dtype) for c in chunks), {}

    def raw_bytes(self, record: InstanceRecord) -> bytes:
        """The native Pixel Data value of a raw-layout instance, exactly as received."""
        chunk = self._pixels.read_chunk(record.levels[0].chunks[0])
        length = record.levels[0].columns  # the raw layout records the value length as its width
        return codecs.decode_frame(chunk, CODEC_ZSTD, shape=(1, length), dtype=np.dtype(np.uint8)).tobytes()

    def _raw_value(self, record: InstanceRecord, target: str) -> bytes:
        desc = record.pixel
        assert desc is not None
        raw = self.raw_bytes(record)
        if target not in NATIVE_SYNTAXES:
            raise UnsupportedTransferSyntaxError(
                f"{record.sop_instance_uid}: packed pixel data (BitsAllocated {desc.bits_allocated}, "
                f"{desc.photometric}) is served only in native transfer syntaxes"
            )
        same_order = (target == EXPLICIT_VR_BE) == (record.transfer_syntax_uid == EXPLICIT_VR_BE)
        if same_order or _native_vr(record, record.transfer_syntax_uid) == "OB":
            return raw  # bytes need no swapping
        if len(raw) % 2 == 0:
            # OW in big endian holds the packed bytes swapped in 16-bit words (PS3.5 7.3).
            return np.frombuffer(raw, dtype=">u2").astype("<u2").tobytes()
        raise UnsupportedTransferSyntaxError(
            f"{record.sop_instance_uid}: packed pixel data (BitsAllocated {desc.bits_allocated}, "
            f"{desc.photometric}) is served only in native syntaxes of its original byte order"
        )


def _native_vr(record: InstanceRecord, target: str) -> str:
    """The VR the pixel element had when it is rebuilt in its own syntax (8-bit OW byte order matters)."""
    if target != record.transfer_syntax_uid or len(record.pixel_element_header) < 6:
        return ""
    if target == "1.2.840.10008.1.2":  # implicit VR: the header holds no VR
        return ""
    return record.pixel_element_header[4:6].decode("ascii", errors="replace")


def _dtype(desc: PixelDescription) -> np.dtype:
    return codecs.frame_dtype(desc)


def _with_updates(desc: PixelDescription, updates: dict[str, object]) -> PixelDescription:
    if not updates:
        return desc
    return replace(
        desc,
        photometric=str(updates.get("PhotometricInterpretation", desc.photometric)),
        planar_configuration=int(str(updates.get("PlanarConfiguration", desc.planar_configuration))),
    )
