"""Value objects shared by every layer: pixel descriptions, stored-frame references, instance records."""

from __future__ import annotations

from dataclasses import dataclass, field

# Transfer syntax UIDs the engine names in code (PS3.5 / PS3.6).
IMPLICIT_VR_LE = "1.2.840.10008.1.2"
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
DEFLATED_EXPLICIT_VR_LE = "1.2.840.10008.1.2.1.99"
EXPLICIT_VR_BE = "1.2.840.10008.1.2.2"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_EXTENDED = "1.2.840.10008.1.2.4.51"
JPEG_LOSSLESS_P14 = "1.2.840.10008.1.2.4.57"
JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"
JPEGLS_LOSSLESS = "1.2.840.10008.1.2.4.80"
JPEGLS_NEAR_LOSSLESS = "1.2.840.10008.1.2.4.81"
JPEG2000_LOSSLESS = "1.2.840.10008.1.2.4.90"
JPEG2000 = "1.2.840.10008.1.2.4.91"
HTJ2K_LOSSLESS = "1.2.840.10008.1.2.4.201"
HTJ2K_LOSSLESS_RPCL = "1.2.840.10008.1.2.4.202"
HTJ2K = "1.2.840.10008.1.2.4.203"
RLE_LOSSLESS = "1.2.840.10008.1.2.5"

NATIVE_SYNTAXES = frozenset({IMPLICIT_VR_LE, EXPLICIT_VR_LE, DEFLATED_EXPLICIT_VR_LE, EXPLICIT_VR_BE})
LOSSLESS_ENCAPSULATED_SYNTAXES = frozenset(
    {
        JPEG_LOSSLESS_P14,
        JPEG_LOSSLESS_SV1,
        JPEGLS_LOSSLESS,
        JPEG2000_LOSSLESS,
        HTJ2K_LOSSLESS,
        HTJ2K_LOSSLESS_RPCL,
        RLE_LOSSLESS,
    }
)

# Storage codecs: how a chunk of the pixel store is encoded.
CODEC_HTJ2K = "htj2k"  # HTJ2K lossless RPCL codestream, valid for HTJ2K_LOSSLESS_RPCL
CODEC_JPEGLS = "jpegls"  # JPEG-LS lossless codestream, valid for JPEGLS_LOSSLESS
CODEC_JPEG2K = "jpeg2k"  # JPEG 2000 lossless (reversible 5/3) codestream, valid for JPEG2000_LOSSLESS
CODEC_ZSTD = "zstd"  # byte-shuffled zstd of the little-endian frame array: formats no image codec takes
CODEC_PASSTHROUGH = "passthrough"  # the frame's original codestream exactly as received (lossy input)
PROFILES = (CODEC_HTJ2K, CODEC_JPEGLS, CODEC_JPEG2K)


@dataclass(frozen=True, slots=True)
class PixelDescription:
    """What the Image Pixel module says about the pixel data of one instance."""

    rows: int
    columns: int
    frames: int
    samples_per_pixel: int
    bits_allocated: int
    bits_stored: int
    high_bit: int
    pixel_representation: int  # 0 unsigned, 1 two's complement
    photometric: str
    planar_configuration: int  # 0 interleaved, 1 planes; only meaningful for samples_per_pixel > 1
    float_kind: int = 0  # 0 integer pixels, 32 Float Pixel Data, 64 Double Float Pixel Data

    @property
    def frame_bytes(self) -> int:
        """Bytes of one native frame (bit-packed for 1-bit data may not be a whole number: see dicom.native)."""
        return self.rows * self.columns * self.samples_per_pixel * self.bits_allocated // 8

    @property
    def frame_shape(self) -> tuple[int, ...]:
        """Shape of one decoded frame: (rows, cols) or (rows, cols, samples), interleaved."""
        if self.samples_per_pixel == 1:
            return (self.rows, self.columns)
        return (self.rows, self.columns, self.samples_per_pixel)


@dataclass(frozen=True, slots=True)
class EncodedFrame:
    """One frame (or one pyramid level of it) after lossless encoding, as the codec produced it."""

    data: bytes
    # For HTJ2K RPCL: level_prefixes[k] is the number of leading bytes of `data` that decode the frame at
    # resolution level k (1/2**k). Index 0 is len(data). Empty for codecs without embedded levels.
    level_prefixes: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class ChunkRef:
    """Where one encoded frame lies in the pixel store: a ranged read of `length` bytes at `offset`."""

    key: str  # store key of the shard file holding it, relative to the pixel store root
    offset: int
    length: int
    crc32: int  # zlib.crc32 of the chunk bytes, checked on every read


@dataclass(frozen=True, slots=True)
class LevelInfo:
    """One resolution level of an instance's frames."""

    level: int  # 0 is full resolution; level k is about 1/2**k in each dimension
    rows: int
    columns: int
    # "array": its own Zarr array (explicit pyramid); "resolution": decoded from level 0's codestream
    source: str
    chunks: tuple[ChunkRef, ...] = ()  # one per frame when source == "array"
    level_prefixes: tuple[tuple[int, ...], ...] = ()  # per frame, when level 0 is HTJ2K RPCL
    codec: str = ""  # storage codec of this level's chunks; "" means the instance's codec


@dataclass(frozen=True, slots=True)
class Encapsulation:
    """How the original encapsulated Pixel Data was laid out, to rebuild it byte for byte."""

    basic_offset_table: bytes  # value of the first item, as received (may be empty)
    fragments_per_frame: tuple[tuple[int, ...], ...]  # fragment lengths of each frame, in order
    extended_offset_table: bytes = b""  # (7FE0,0001) value if present; kept in the header bytes anyway
    trailing: bytes = b""  # anything after the sequence delimiter item inside the element, if any


# The layout of a record committed when a network instance is acknowledged, before it is transcoded: its
# query attributes and header, no pixel data. Queries see it; pixel reads wait for the record that
# replaces it once the instance is stored (or, in another process, are refused until then).
PENDING = "pending"


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    """Everything the index knows about one stored instance; the header bytes are stored beside it."""

    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str  # as received
    received_bytes: int  # size of the data set as received (no file meta)
    stored_bytes: int  # pixel chunks + compressed header
    digest: str  # XXH3-128 hex of the received data set bytes: identical re-sends are no-ops
    instance_number: int | None
    pixel: PixelDescription | None  # None for objects without pixel data
    codec: str | None  # storage codec of level 0, None without pixel data
    levels: tuple[LevelInfo, ...] = ()
    frame_hashes: tuple[str, ...] = ()  # XXH3-128 hex of each decoded frame's little-endian bytes
    encapsulation: Encapsulation | None = None  # for encapsulated input
    pixel_tail: bytes = b""  # bytes of a native Pixel Data value beyond the last frame (padding)
    pixel_element_header: bytes = b""  # the pixel element's tag/VR/length bytes as received
    received_at: str = ""  # ISO 8601 UTC
    generation: int = 0  # bumped when an overwrite replaces the instance; names its pixel group
    # "frames": one chunk per frame; "raw": the whole native value as one chunk; PENDING: no pixels yet
    layout: str = "frames"
    query: dict[str, str] = field(default_factory=dict)  # DICOM keyword -> string value, for matching

    @property
    def pending(self) -> bool:
        """Acknowledged and journalled, visible to queries, its pixels not stored yet (see PENDING)."""
        return self.layout == PENDING
