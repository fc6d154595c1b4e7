"""Every real file of pydicom's test data and pydicom-data: import, export, compare with what was sent."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest

from engine.archive import Archive
from engine.errors import EngineError
from engine.testing.corpus import corpus_files
from engine.types import LOSSLESS_ENCAPSULATED_SYNTAXES, NATIVE_SYNTAXES

FILES = corpus_files()

# Files pydicom reads but the archive refuses, with the reason it must give (a substring of the error).
REFUSED: dict[str, str] = {}


def _dataset_bytes(part10: bytes) -> tuple[str, bytes]:
    """(transfer syntax, data set bytes after the file meta) of a Part-10 file."""
    ds = pydicom.dcmread(io.BytesIO(part10), stop_before_pixels=True)
    meta_end = 132 + 12 + int(ds.file_meta.FileMetaInformationGroupLength)
    return str(ds.file_meta.TransferSyntaxUID), part10[meta_end:]


def _pixels(data: bytes) -> np.ndarray | None:
    ds = pydicom.dcmread(io.BytesIO(data))
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        return None
    return np.asarray(ds.pixel_array)


def _can_decode(data: bytes) -> bool:
    try:
        _pixels(data)
    except Exception:  # noqa: BLE001 - pydicom raises many kinds for what it cannot decode
        return False
    return True


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    with Archive.open(tmp_path_factory.mktemp("corpus") / "archive") as a:
        yield a


def _readable(path: Path) -> bool:
    try:
        pydicom.dcmread(path)
    except Exception:  # noqa: BLE001 - the oracle: whatever pydicom refuses
        return False
    return True


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_import_export_roundtrip(archive: Archive, path: Path) -> None:
    sent = path.read_bytes()
    before = archive.stats()
    if not _readable(path):
        with pytest.raises(EngineError) as info:
            archive.ingest(sent, source=str(path))
        assert str(info.value), "a refusal must say why"
        assert archive.stats() == before
        return
    if path.name in REFUSED:
        with pytest.raises(EngineError, match=REFUSED[path.name]):
            archive.ingest(sent, source=str(path))
        assert archive.stats() == before
        return
    result = archive.ingest(sent, source=str(path))
    assert result.status in ("stored", "duplicate")
    sent_syntax, sent_dataset = _dataset_bytes(sent)
    record = archive.record(result.sop_instance_uid)

    original = archive.read_instance(result.sop_instance_uid, "original")
    got_syntax, got_dataset = _dataset_bytes(original)
    assert got_syntax == sent_syntax
    if result.status == "stored":
        lossless_input = sent_syntax in LOSSLESS_ENCAPSULATED_SYNTAXES
        if not lossless_input:
            assert got_dataset == sent_dataset, "native and lossy input must come back byte for byte"
        elif _can_decode(sent):
            assert np.array_equal(_pixels(original), _pixels(sent)), "lossless input must be pixel-identical"

    explicit = archive.read_instance(result.sop_instance_uid, "explicit")
    stored = archive.read_instance(result.sop_instance_uid, "stored")
    if record.pixel is not None and _can_decode(sent) and sent_syntax in NATIVE_SYNTAXES | LOSSLESS_ENCAPSULATED_SYNTAXES:
        reference = _pixels(sent)
        assert np.array_equal(_pixels(explicit), reference)
        if _can_decode(stored):
            assert np.array_equal(_pixels(stored), reference)


def test_verify_deep_clean_after_corpus(archive: Archive) -> None:
    # Runs after the parametrised imports above (same module-scoped archive).
    assert archive.stats().instances > 0
    assert archive.verify(deep=True) == []
