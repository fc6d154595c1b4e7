"""The pixel description of an instance and its consistency with the Pixel Data value."""

from __future__ import annotations

import logging

from engine.errors import PixelDataError
from engine.types import PixelDescription

from ._scan import DOUBLE_FLOAT_PIXEL_DATA, FLOAT_PIXEL_DATA, PIXEL_DATA, PixelElement
from ._values import PIXEL_ELEMENTS, ValueReader

# A decoded frame larger than this is refused before anything is allocated: 2 GiB is more than any
# acquisition produces in one frame (whole-slide images are tiled into frames far smaller).
MAX_FRAME_BYTES = 2**31
MAX_FRAMES = 2**31 - 1  # the largest value an IS can hold
LOGGER = logging.getLogger(__name__)

SUBSAMPLED_422 = frozenset({"YBR_FULL_422", "YBR_PARTIAL_422"})


def _tag(keyword: str) -> int:
    return PIXEL_ELEMENTS[keyword][0]


def _required(reader: ValueReader, keyword: str) -> int:
    value = reader.integer(_tag(keyword), keyword)
    if value is None:
        raise PixelDataError(f"Pixel Data present but {keyword} is missing or empty")
    return value


def describe_pixels(reader: ValueReader, pixel: PixelElement) -> PixelDescription:
    """The PixelDescription of the Image Pixel module, checked for values no image can have.

    Raises PixelDataError for missing Type 1 attributes or impossible values.
    """
    rows = _required(reader, "Rows")
    columns = _required(reader, "Columns")
    bits_allocated = _required(reader, "BitsAllocated")
    samples = reader.integer(_tag("SamplesPerPixel"), "SamplesPerPixel")
    samples = 1 if samples is None else samples
    frames = reader.integer(_tag("NumberOfFrames"), "NumberOfFrames")
    frames = 1 if frames is None else frames
    photometric = reader.text(_tag("PhotometricInterpretation"))
    if not photometric:
        raise PixelDataError("Pixel Data present but PhotometricInterpretation is missing or empty")
    bits_stored = reader.integer(_tag("BitsStored"), "BitsStored")
    bits_stored = bits_allocated if bits_stored is None else bits_stored
    high_bit = reader.integer(_tag("HighBit"), "HighBit")
    high_bit = bits_stored - 1 if high_bit is None else high_bit
    representation = reader.integer(_tag("PixelRepresentation"), "PixelRepresentation") or 0
    planar = reader.integer(_tag("PlanarConfiguration"), "PlanarConfiguration") or 0
    float_kind = {FLOAT_PIXEL_DATA: 32, DOUBLE_FLOAT_PIXEL_DATA: 64}.get(pixel.tag, 0)
    if float_kind:
        bits_stored, high_bit, representation = float_kind, float_kind - 1, 0
    desc = PixelDescription(
        rows=rows,
        columns=columns,
        frames=frames,
        samples_per_pixel=samples,
        bits_allocated=bits_allocated,
        bits_stored=bits_stored,
        high_bit=high_bit,
        pixel_representation=representation,
        photometric=photometric,
        planar_configuration=planar if samples > 1 else 0,
        float_kind=float_kind,
    )
    check_description(desc)
    return desc


def pixel_element_tag(desc: PixelDescription) -> int:
    """The tag of the pixel element `desc` describes: (7FE0,0010) Pixel Data, or the float ones."""
    return {32: FLOAT_PIXEL_DATA, 64: DOUBLE_FLOAT_PIXEL_DATA}.get(desc.float_kind, PIXEL_DATA)


def check_description(desc: PixelDescription) -> None:
    """Raise PixelDataError if `desc` describes no possible image or an absurdly large one."""
    if desc.rows < 1 or desc.columns < 1:
        raise PixelDataError(f"image of {desc.rows} rows x {desc.columns} columns")
    if not 1 <= desc.frames <= MAX_FRAMES:
        raise PixelDataError(f"Number of Frames is {desc.frames}")
    if desc.samples_per_pixel not in (1, 3, 4):
        raise PixelDataError(f"Samples per Pixel is {desc.samples_per_pixel}, not 1, 3 or 4")
    # 1-bit and the retired packed 12-bit layouts are kept as bytes; everything else is whole bytes.
    if desc.bits_allocated not in (1, 12) and (desc.bits_allocated % 8 or not 8 <= desc.bits_allocated <= 64):
        raise PixelDataError(f"Bits Allocated is {desc.bits_allocated}, not 1, 12 or a multiple of 8 up to 64")
    if desc.float_kind and desc.bits_allocated != desc.float_kind:
        raise PixelDataError(
            f"float pixel data of {desc.float_kind} bits with Bits Allocated {desc.bits_allocated}"
        )
    if not 1 <= desc.bits_stored <= desc.bits_allocated:
        raise PixelDataError(f"Bits Stored {desc.bits_stored} with Bits Allocated {desc.bits_allocated}")
    if desc.pixel_representation not in (0, 1):
        raise PixelDataError(f"Pixel Representation is {desc.pixel_representation}, not 0 or 1")
    if desc.planar_configuration not in (0, 1):
        raise PixelDataError(f"Planar Configuration is {desc.planar_configuration}, not 0 or 1")
    frame_bytes = (desc.rows * desc.columns * desc.samples_per_pixel * desc.bits_allocated + 7) // 8
    if frame_bytes > MAX_FRAME_BYTES:
        raise PixelDataError(
            f"a frame of {desc.rows} x {desc.columns} x {desc.samples_per_pixel} samples of "
            f"{desc.bits_allocated} bits is {frame_bytes} bytes, more than the {MAX_FRAME_BYTES} allowed"
        )


def native_length(desc: PixelDescription) -> int:
    """Bytes the native Pixel Data of `desc` occupies, before the pad byte to even length.

    Frames of 1-bit data follow each other without padding; YBR_*_422 data carries two samples per
    pixel (PS3.5 8.2 / PS3.3 C.7.6.3.1.2).
    """
    samples = desc.samples_per_pixel
    if samples == 3 and desc.photometric in SUBSAMPLED_422:
        samples = 2
    bits = desc.frames * desc.rows * desc.columns * samples * desc.bits_allocated
    return (bits + 7) // 8


def check_native_length(desc: PixelDescription, length: int) -> None:
    """Raise PixelDataError unless a native value of `length` bytes holds the frames of `desc`.

    The value may exceed the frames by the pad byte to even length, or by less than one frame of
    excess padding (kept as the tail, so nothing is lost); a whole frame more means the attributes
    are wrong and is refused.
    """
    needed = native_length(desc)
    what = (
        f"{desc.frames} frame(s) of {desc.rows} x {desc.columns} x {desc.samples_per_pixel} samples "
        f"of {desc.bits_allocated} bits ({desc.photometric})"
    )
    if length < needed:
        raise PixelDataError(f"native Pixel Data is {length} bytes, {what} need {needed}")
    frame_bits = desc.rows * desc.columns * desc.samples_per_pixel * desc.bits_allocated
    if length - needed >= max(2, frame_bits // 8):
        raise PixelDataError(
            f"native Pixel Data is {length} bytes, a frame or more longer than the {needed} that {what} take"
        )
    if length > needed + needed % 2:
        LOGGER.warning("native Pixel Data has %d bytes of padding beyond its frames; kept", length - needed)
