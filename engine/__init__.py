"""pacs-engine: a lossless, fast medical image archive (Zarr pixel store + LMDB index)."""

from __future__ import annotations

__version__ = "0.1.0"
