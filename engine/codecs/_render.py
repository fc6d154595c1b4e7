"""Rendered images for viewers: VOI windowing to 8 bits, and PNG / JPEG encoding (lossy is fine here)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from engine.codecs._backend import DECODE_ERRORS, _module, require
from engine.errors import CodecUnavailableError

WINDOW_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")  # PS3.3 C.11.2.1.2 and C.11.2.1.3.1


def window_to_uint8(
    frame: npt.NDArray[np.generic],
    *,
    center: float | None = None,
    width: float | None = None,
    function: str = "LINEAR",
    slope: float = 1.0,
    intercept: float = 0.0,
    invert: bool = False,
) -> npt.NDArray[np.uint8]:
    """Apply the modality LUT (slope, intercept) and a VOI window (PS3.3 C.11.2.1.2) to 8-bit output.

    Without a window the full range of the frame's values is shown. Colour frames (rows, cols, 3) of
    8 bits are returned as they are. `invert` is MONOCHROME1. Raises ValueError for an unknown
    function or a width below 1 (LINEAR) or 0 (LINEAR_EXACT, SIGMOID).
    """
    if frame.ndim == 3 and frame.dtype == np.uint8:
        return np.ascontiguousarray(frame)
    function = function.upper()
    if function not in WINDOW_FUNCTIONS:
        raise ValueError(f"VOI LUT function {function!r} is not one of {', '.join(WINDOW_FUNCTIONS)}")
    values = frame.astype(np.float64) * slope + intercept
    if center is None or width is None:
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        center, width, function = (low + high) / 2, max(high - low, 1e-9), "LINEAR_EXACT"
    if function == "LINEAR":
        if width < 1:
            raise ValueError(f"window width {width} is below 1, which LINEAR does not allow")
        scaled = ((values - (center - 0.5)) / (width - 1) + 0.5) if width > 1 else (values > center - 0.5) * 1.0
    elif function == "SIGMOID":
        if width <= 0:
            raise ValueError(f"window width {width} must be above 0 for SIGMOID")
        scaled = 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    else:
        if width <= 0:
            raise ValueError(f"window width {width} must be above 0 for LINEAR_EXACT")
        scaled = (values - center) / width + 0.5
    out = np.clip(np.rint(scaled * 255.0), 0, 255).astype(np.uint8)
    return 255 - out if invert else out


def fit_within(image: npt.NDArray[np.uint8], width: int, height: int) -> npt.NDArray[np.uint8]:
    """`image` scaled down, aspect ratio kept, to fit `width` x `height` (each output pixel the mean of the
    source pixels it covers); returned as it is when it fits already."""
    rows, cols = image.shape[:2]
    scale = min(width / cols, height / rows)
    if scale >= 1:
        return image
    out_rows, out_cols = max(1, round(rows * scale)), max(1, round(cols * scale))
    # A box filter: np.add.reduceat sums the source pixels of each output cell, one axis after the other.
    row_edges = np.linspace(0, rows, out_rows + 1).round().astype(int)
    col_edges = np.linspace(0, cols, out_cols + 1).round().astype(int)
    summed = np.add.reduceat(np.add.reduceat(image.astype(np.float64), row_edges[:-1], axis=0), col_edges[:-1], axis=1)
    counts = np.outer(np.diff(row_edges), np.diff(col_edges))
    if image.ndim == 3:
        counts = counts[..., None]
    out: npt.NDArray[np.uint8] = np.clip(np.rint(summed / counts), 0, 255).astype(np.uint8)
    return out


def ybr_full_to_rgb(frame: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """8-bit YBR_FULL samples (rows, cols, 3) as RGB, by the equations of PS3.3 C.7.6.3.1.2."""
    y, cb, cr = (frame[..., k].astype(np.float32) for k in range(3))
    cb -= 128.0
    cr -= 128.0
    rgb = np.stack((y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb), axis=-1)
    out: npt.NDArray[np.uint8] = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    return out


def encode_png(image: npt.NDArray[np.uint8]) -> bytes:
    """A PNG of an 8-bit grey (rows, cols) or colour (rows, cols, 3) image; raises CodecUnavailableError."""
    codecs = _module()  # PNG is not a storage feature of _backend: its availability is checked here
    if not getattr(getattr(codecs, "PNG", None), "available", False):
        raise CodecUnavailableError("imagecodecs was built without PNG")
    try:
        return bytes(codecs.png_encode(np.ascontiguousarray(image), level=1))
    except DECODE_ERRORS as exc:
        raise CodecUnavailableError(f"PNG cannot encode a {image.shape} {image.dtype} image: {exc}") from exc


def encode_jpeg(image: npt.NDArray[np.uint8], quality: int = 90) -> bytes:
    """A baseline JPEG of an 8-bit grey or RGB image (libjpeg-turbo); raises CodecUnavailableError."""
    codecs = require("jpeg8")
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be 1..100, not {quality}")
    try:
        return bytes(codecs.jpeg8_encode(np.ascontiguousarray(image), level=quality))
    except DECODE_ERRORS as exc:
        raise CodecUnavailableError(f"JPEG cannot encode a {image.shape} {image.dtype} image: {exc}") from exc
