"""Access to imagecodecs: the one import of it, availability checks and the install hint."""

from __future__ import annotations

import importlib
import logging
from types import ModuleType

from engine.errors import CodecUnavailableError

LOGGER = logging.getLogger(__name__)

INSTALL_HINT = "install it with: pip install 'imagecodecs>=2025.3'"

# imagecodecs feature -> the constants class whose `available` flag says whether it was built in.
_FEATURE_CLASS = {
    "htj2k": "HTJ2K",
    "jpegls": "JPEGLS",
    "jpeg2k": "JPEG2K",
    "jpeg8": "JPEG8",
    "ljpeg": "LJPEG",
    "jpegsof3": "JPEGSOF3",
    "zstd": "ZSTD",
    "packbits": "PACKBITS",
    "deflate": "DEFLATE",  # libdeflate: only its CRC-32 is used (engine.codecs._checksum)
}

# Errors imagecodecs and numpy raise on a codestream they cannot read; translated to CorruptDataError.
DECODE_ERRORS: tuple[type[BaseException], ...] = (
    RuntimeError,
    ValueError,
    TypeError,
    IndexError,
    OverflowError,
    MemoryError,
)


def _module() -> ModuleType:
    try:
        return importlib.import_module("imagecodecs")
    except ImportError as exc:
        raise CodecUnavailableError(f"imagecodecs is not installed; {INSTALL_HINT}") from exc


def is_available(feature: str) -> bool:
    """Whether the imagecodecs feature (e.g. 'htj2k') is installed and built in."""
    try:
        module = _module()
    except CodecUnavailableError:
        return False
    constants = getattr(module, _FEATURE_CLASS[feature], None)
    return bool(getattr(constants, "available", False))


def require(feature: str) -> ModuleType:
    """Return the imagecodecs module if `feature` is usable; raises CodecUnavailableError otherwise."""
    module = _module()
    if not is_available(feature):
        raise CodecUnavailableError(
            f"imagecodecs was built without the {feature} codec; {INSTALL_HINT} from a full wheel"
        )
    return module
