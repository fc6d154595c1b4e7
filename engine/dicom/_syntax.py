"""Transfer syntaxes the engine reads and writes, and how each encodes a data set."""

from __future__ import annotations

from dataclasses import dataclass

from engine.errors import UnsupportedTransferSyntaxError
from engine.types import (
    DEFLATED_EXPLICIT_VR_LE,
    EXPLICIT_VR_BE,
    EXPLICIT_VR_LE,
    HTJ2K,
    HTJ2K_LOSSLESS,
    HTJ2K_LOSSLESS_RPCL,
    IMPLICIT_VR_LE,
    JPEG2000,
    JPEG2000_LOSSLESS,
    JPEG_BASELINE,
    JPEG_EXTENDED,
    JPEG_LOSSLESS_P14,
    JPEG_LOSSLESS_SV1,
    JPEGLS_LOSSLESS,
    JPEGLS_NEAR_LOSSLESS,
    RLE_LOSSLESS,
)


@dataclass(frozen=True, slots=True)
class SyntaxInfo:
    """How a transfer syntax encodes the data set and its Pixel Data."""

    uid: str
    name: str
    implicit_vr: bool
    little_endian: bool
    deflated: bool
    encapsulated: bool
    video: bool = False  # one MPEG / H.264 / HEVC stream for all frames: frames are not separable


def _native(uid: str, name: str, implicit: bool, little: bool, deflated: bool) -> SyntaxInfo:
    return SyntaxInfo(uid, name, implicit, little, deflated, False)


def _encapsulated(uid: str, name: str) -> SyntaxInfo:
    video = name.startswith(("MPEG", "Fragmentable MPEG", "HEVC"))
    return SyntaxInfo(uid, name, False, True, False, True, video)


# Every syntax here stores the data set in a form we can walk; JPIP (pixel data by reference) and
# the retired JPEG processes / MIME / XML encodings are left out on purpose: nothing sends them.
_SYNTAXES: dict[str, SyntaxInfo] = {
    s.uid: s
    for s in (
        _native(IMPLICIT_VR_LE, "Implicit VR Little Endian", True, True, False),
        _native(EXPLICIT_VR_LE, "Explicit VR Little Endian", False, True, False),
        _native(DEFLATED_EXPLICIT_VR_LE, "Deflated Explicit VR Little Endian", False, True, True),
        _native(EXPLICIT_VR_BE, "Explicit VR Big Endian", False, False, False),
        _encapsulated("1.2.840.10008.1.2.1.98", "Encapsulated Uncompressed Explicit VR Little Endian"),
        _encapsulated(JPEG_BASELINE, "JPEG Baseline (Process 1)"),
        _encapsulated(JPEG_EXTENDED, "JPEG Extended (Process 2 & 4)"),
        _encapsulated(JPEG_LOSSLESS_P14, "JPEG Lossless, Non-Hierarchical (Process 14)"),
        _encapsulated(JPEG_LOSSLESS_SV1, "JPEG Lossless, First-Order Prediction (Process 14 SV1)"),
        _encapsulated(JPEGLS_LOSSLESS, "JPEG-LS Lossless"),
        _encapsulated(JPEGLS_NEAR_LOSSLESS, "JPEG-LS Near-Lossless"),
        _encapsulated(JPEG2000_LOSSLESS, "JPEG 2000 Lossless Only"),
        _encapsulated(JPEG2000, "JPEG 2000"),
        _encapsulated("1.2.840.10008.1.2.4.92", "JPEG 2000 Part 2 Multi-component Lossless Only"),
        _encapsulated("1.2.840.10008.1.2.4.93", "JPEG 2000 Part 2 Multi-component"),
        _encapsulated("1.2.840.10008.1.2.4.100", "MPEG2 Main Profile / Main Level"),
        _encapsulated("1.2.840.10008.1.2.4.100.1", "Fragmentable MPEG2 Main Profile / Main Level"),
        _encapsulated("1.2.840.10008.1.2.4.101", "MPEG2 Main Profile / High Level"),
        _encapsulated("1.2.840.10008.1.2.4.101.1", "Fragmentable MPEG2 Main Profile / High Level"),
        _encapsulated("1.2.840.10008.1.2.4.102", "MPEG-4 AVC/H.264 High Profile / Level 4.1"),
        _encapsulated("1.2.840.10008.1.2.4.102.1", "Fragmentable MPEG-4 AVC/H.264 High Profile / Level 4.1"),
        _encapsulated("1.2.840.10008.1.2.4.103", "MPEG-4 AVC/H.264 BD-compatible High Profile / Level 4.1"),
        _encapsulated("1.2.840.10008.1.2.4.103.1", "Fragmentable MPEG-4 AVC/H.264 BD-compatible HP / L4.1"),
        _encapsulated("1.2.840.10008.1.2.4.104", "MPEG-4 AVC/H.264 High Profile / Level 4.2 For 2D Video"),
        _encapsulated("1.2.840.10008.1.2.4.104.1", "Fragmentable MPEG-4 AVC/H.264 HP / L4.2 For 2D Video"),
        _encapsulated("1.2.840.10008.1.2.4.105", "MPEG-4 AVC/H.264 High Profile / Level 4.2 For 3D Video"),
        _encapsulated("1.2.840.10008.1.2.4.105.1", "Fragmentable MPEG-4 AVC/H.264 HP / L4.2 For 3D Video"),
        _encapsulated("1.2.840.10008.1.2.4.106", "MPEG-4 AVC/H.264 Stereo High Profile / Level 4.2"),
        _encapsulated("1.2.840.10008.1.2.4.106.1", "Fragmentable MPEG-4 AVC/H.264 Stereo HP / L4.2"),
        _encapsulated("1.2.840.10008.1.2.4.107", "HEVC/H.265 Main Profile / Level 5.1"),
        _encapsulated("1.2.840.10008.1.2.4.108", "HEVC/H.265 Main 10 Profile / Level 5.1"),
        _encapsulated("1.2.840.10008.1.2.4.110", "JPEG XL Lossless"),
        _encapsulated("1.2.840.10008.1.2.4.111", "JPEG XL JPEG Recompression"),
        _encapsulated("1.2.840.10008.1.2.4.112", "JPEG XL"),
        _encapsulated(HTJ2K_LOSSLESS, "High-Throughput JPEG 2000 Lossless Only"),
        _encapsulated(HTJ2K_LOSSLESS_RPCL, "High-Throughput JPEG 2000 with RPCL Options Lossless Only"),
        _encapsulated(HTJ2K, "High-Throughput JPEG 2000"),
        _encapsulated(RLE_LOSSLESS, "RLE Lossless"),
    )
}


def syntax_info(transfer_syntax_uid: str) -> SyntaxInfo:
    """Return how `transfer_syntax_uid` encodes a data set.

    Raises UnsupportedTransferSyntaxError for a syntax the engine does not read or write.
    """
    info = _SYNTAXES.get(transfer_syntax_uid)
    if info is None:
        shown = transfer_syntax_uid[:80]
        raise UnsupportedTransferSyntaxError(f"unsupported transfer syntax {shown!r}")
    return info


def supported_syntaxes() -> frozenset[str]:
    """UIDs of every transfer syntax the engine reads and writes."""
    return frozenset(_SYNTAXES)
