"""The one error tree of the engine; each edge maps it to its protocol's statuses in one table."""

from __future__ import annotations


class EngineError(Exception):
    """Base of every error the engine raises on purpose."""


class InvalidDicomError(EngineError, ValueError):
    """The bytes are not a DICOM data set we can read (truncated, malformed, missing elements)."""


class InvalidUIDError(InvalidDicomError):
    """A UID is missing, malformed, or unsafe to use as a key."""


class IdentityMismatchError(InvalidDicomError):
    """A data set is not the instance its request names: another SOP Class or SOP Instance UID."""


class PixelDataError(InvalidDicomError):
    """Pixel attributes and pixel data disagree (wrong length, impossible size, corrupt frame)."""


class UnsupportedTransferSyntaxError(EngineError, ValueError):
    """A transfer syntax the engine does not know how to read or write."""


class CodecUnavailableError(EngineError, RuntimeError):
    """A codec the operation needs is not installed or cannot handle this pixel format."""


class VerificationError(EngineError, RuntimeError):
    """A lossless transcode did not decode back to the source pixels; nothing was committed."""


class CorruptDataError(EngineError, RuntimeError):
    """Stored bytes fail their recorded length or checksum."""


class NotFoundError(EngineError, KeyError):
    """No such study, series, instance, frame or level."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0]) if self.args else ""


class DuplicateInstanceError(EngineError):
    """A different instance with the same SOP Instance UID is already stored."""


class StorageFullError(EngineError, OSError):
    """The pixel store or the index ran out of space."""


class ConfigError(EngineError, ValueError):
    """The configuration file or environment holds an invalid setting."""


class ClosedError(EngineError, RuntimeError):
    """The archive was closed while an operation was pending."""


class NotStoredYetError(EngineError, RuntimeError):
    """The instance was acknowledged and is visible to queries, but its pixel data is not stored yet."""
