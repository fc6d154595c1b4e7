"""One single-threaded round trip per codec before any concurrent use.

OpenJPH (behind imagecodecs' HTJ2K) initialises shared state on first use without a lock: with four
threads encoding and decoding at once in a fresh process, 2 of 15 runs here decoded garbage (an
"ojph error" that imagecodecs swallows); after one warm-up round trip, 0 of 15. Verification caught
it, so nothing wrong was stored, but valid instances were refused. Callers that start threads (the
archive) call warm_up() once first.
"""

from __future__ import annotations

import threading

import numpy as np

from engine.codecs._frames import decode_frame, encode_frame
from engine.codecs._registry import is_available
from engine.types import CODEC_HTJ2K, CODEC_JPEG2K, CODEC_JPEGLS, CODEC_ZSTD

_DONE = threading.Event()
_LOCK = threading.Lock()


def warm_up() -> None:
    """Run every available storage codec once on small frames of each sample type; idempotent."""
    if _DONE.is_set():
        return
    with _LOCK:
        if _DONE.is_set():
            return
        ramp = np.arange(96 * 80, dtype=np.int64).reshape(96, 80)
        frames: list[np.ndarray] = [
            (ramp % 251).astype(np.uint8),
            (ramp * 7 - 20000).astype(np.int16),
            (ramp * 5).astype(np.uint16),
            np.stack([(ramp + k) % 256 for k in range(3)], axis=-1).astype(np.uint8),
        ]
        for codec in (CODEC_HTJ2K, CODEC_JPEGLS, CODEC_JPEG2K, CODEC_ZSTD):
            if not is_available(codec):
                continue
            for frame in frames:
                encoded = encode_frame(frame, codec)
                decode_frame(encoded.data, codec, shape=frame.shape, dtype=frame.dtype)
                if codec == CODEC_HTJ2K:
                    decode_frame(encoded.data, codec, shape=frame.shape, dtype=frame.dtype, level=1)
        _DONE.set()
