"""Every readable corpus file through DCMTK storescu into the listener: same verdict as a file import, same bytes back.

Two oracles per file: a direct `Archive.ingest_file` of the same file (what the archive decides: store it,
or refuse it with an EngineError whose DIMSE status the listener must send), and DCMTK storescp in
bit-preserving mode (the exact data set storescu puts on the wire, which DCMTK may re-encode).
"""

from __future__ import annotations

import io
import re
import warnings
import zlib
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest

from engine.archive import Archive
from engine.config import load_settings
from engine.errors import EngineError
from engine.net import store_status
from engine.testing.corpus import corpus_files, corpus_problem
from engine.testing.dcmtk import StoreSCP, run_storescu
from engine.types import DEFLATED_EXPLICIT_VR_LE, LOSSLESS_ENCAPSULATED_SYNTAXES

pytestmark = [pytest.mark.dcmtk]

_SENDING = re.compile(r"I: Sending file: (.*)")
_STATUS = re.compile(r"DIMSE Status\s*:\s*0x([0-9a-fA-F]{4})")


def dataset_bytes(part10: bytes) -> tuple[str, bytes]:
    """(transfer syntax UID, the data set after the file meta, inflated for the deflated syntax)."""
    meta = pydicom.dcmread(io.BytesIO(part10), stop_before_pixels=True).file_meta
    end = 132 + 12 + int(meta.FileMetaInformationGroupLength)
    syntax, body = str(meta.TransferSyntaxUID), part10[end:]
    # Deflate streams of the same data set differ between compressors; what must match is inside.
    return syntax, zlib.decompress(body, -15) if syntax == DEFLATED_EXPLICIT_VR_LE else body


def pixels(part10: bytes) -> np.ndarray | None:
    """The decoded pixel array of a Part-10 file, None without pixel data."""
    ds = pydicom.dcmread(io.BytesIO(part10))
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        return None
    return np.asarray(ds.pixel_array)


def _sop_uid(path: Path) -> str | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    # A C-STORE cannot carry an instance without SOP Class and Instance UIDs.
    return str(ds.SOPInstanceUID) if "SOPClassUID" in ds and "SOPInstanceUID" in ds else None


def _rounds() -> list[list[Path]]:
    """Readable corpus files split so that no SOP Instance UID occurs twice in a round.

    Many corpus files share a SOP Instance UID with different content (the same image in several
    syntaxes); each round goes to fresh archives so no file meets another with its UID.
    """
    by_uid: dict[str, list[Path]] = defaultdict(list)
    for path in corpus_files():
        if corpus_problem(path) is None and (uid := _sop_uid(path)) is not None:
            by_uid[uid].append(path)
    rounds: dict[int, list[Path]] = defaultdict(list)
    for paths in by_uid.values():
        for k, path in enumerate(paths):
            rounds[k].append(path)
    return [rounds[k] for k in sorted(rounds)]


def _statuses_by_file(storescu_stderr: str) -> dict[str, int]:
    result: dict[str, int] = {}
    current = ""
    for line in storescu_stderr.splitlines():
        if sending := _SENDING.match(line):
            current = sending.group(1)
        elif status := _STATUS.search(line):
            result[current] = int(status.group(1), 16)
    return result


def _sent_by_dcmtk(files: list[Path], work: Path) -> dict[str, bytes]:
    """What storescu puts on the wire for each file, by SOP Instance UID, as storescp +B wrote it."""
    with StoreSCP(work / "dcmtk") as scp:
        run_storescu(scp.host, scp.port, files, called_ae=scp.ae_title, extra=["-nh"])
    return {uid: path.read_bytes() for path in scp.files() if (uid := _sop_uid(path)) is not None}


def _verdicts(files: list[Path], work: Path) -> dict[Path, int | str]:
    """The status the listener owes each file: 0 if a file import stores it, else that refusal's code.

    A file import failing with anything but an EngineError is a bug: its verdict is the error's text,
    which no status matches, so the file is reported.
    """
    verdicts: dict[Path, int | str] = {}
    with Archive(load_settings(archive=work / "direct")) as direct:
        for path in files:
            try:
                direct.ingest_file(path)
            except EngineError as exc:
                verdicts[path] = store_status(exc).code
            except Exception as exc:  # noqa: BLE001 - any failure of the archive is a finding here
                verdicts[path] = f"internal error {type(exc).__name__}: {exc}"
            else:
                verdicts[path] = 0
    return verdicts


def _round_problems(files: list[Path], work: Path, start_listener: Callable[..., Any]) -> tuple[int, list[str]]:
    """Send one round to the listener and compare with both oracles; (files compared, problems)."""
    sent = _sent_by_dcmtk(files, work)
    files = [path for path in files if _sop_uid(path) in sent]  # DCMTK refuses to read a few files
    verdicts = _verdicts(files, work)
    listener = start_listener(work / "archive")
    done = run_storescu(listener.host, listener.port, files, called_ae=listener.ae_title, extra=["-nh", "-v", "-d"])
    statuses = _statuses_by_file(done.stderr)
    problems = []
    for path in files:
        status = statuses.get(str(path))
        if status != verdicts[path]:
            expected = verdicts[path]
            said = f"{expected:#06x}" if isinstance(expected, int) else expected
            problems.append(f"{path.name}: status {status if status is None else hex(status)}, file import: {said}")
        elif status == 0:
            problems += _export_problems(listener.archive, path, sent)
    return len(files), problems + listener.archive.verify(deep=True)


def _export_problems(archive: Archive, path: Path, sent: dict[str, bytes]) -> list[str]:
    uid = _sop_uid(path)
    assert uid is not None
    syntax, received = dataset_bytes(sent[uid])
    got_syntax, got = dataset_bytes(archive.read_instance(uid, "original"))
    if got_syntax != syntax:
        return [f"{path.name}: exported in {got_syntax}, sent in {syntax}"]
    if syntax in LOSSLESS_ENCAPSULATED_SYNTAXES:
        same = np.array_equal(pixels(archive.read_instance(uid, "original")), pixels(path.read_bytes()))
        return [] if same else [f"{path.name}: pixels differ from the lossless original"]
    return [] if got == received else [f"{path.name}: data set differs from what storescu sent"]


def test_every_readable_corpus_file_over_dimse_gets_the_file_verdict_and_comes_back_as_sent(
    tmp_path: Path, start_listener: Callable[..., Any]
) -> None:
    compared = 0
    problems: list[str] = []
    for k, files in enumerate(_rounds()):
        n, found = _round_problems(files, tmp_path / f"round{k}", start_listener)
        compared += n
        problems += found
    assert compared > 100
    assert not problems, "\n".join(problems)
