"""Every readable file of the real corpus through DCMTK storescu into the listener, and back out identical."""

from __future__ import annotations

import io
import re
import warnings
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest

from engine.testing.corpus import corpus_files, corpus_problem
from engine.testing.dcmtk import StoreSCP, run_storescu
from engine.types import LOSSLESS_ENCAPSULATED_SYNTAXES

pytestmark = [pytest.mark.dcmtk, pytest.mark.slow]

_SENDING = re.compile(r"I: Sending file: (.*)")
_STATUS = re.compile(r"DIMSE Status\s*:\s*0x([0-9a-fA-F]{4})")


def dataset_bytes(part10: bytes) -> tuple[str, bytes]:
    """(transfer syntax UID, the data set bytes after the file meta) of a Part-10 file."""
    meta = pydicom.dcmread(io.BytesIO(part10), stop_before_pixels=True).file_meta
    end = 132 + 12 + int(meta.FileMetaInformationGroupLength)
    return str(meta.TransferSyntaxUID), part10[end:]


def pixels(part10: bytes) -> np.ndarray | None:
    """The decoded pixel array of a Part-10 file, None without pixel data."""
    ds = pydicom.dcmread(io.BytesIO(part10))
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        return None
    return np.asarray(ds.pixel_array)


def _rounds() -> list[list[Path]]:
    """Readable corpus files split so that no SOP Instance UID occurs twice in a round.

    Many corpus files share a SOP Instance UID with different content (the same image in several
    syntaxes); each round goes to a fresh archive so every file is stored, not refused as a duplicate.
    """
    by_uid: dict[str, list[Path]] = defaultdict(list)
    for path in corpus_files():
        if corpus_problem(path) is not None:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        if "SOPClassUID" in ds and "SOPInstanceUID" in ds:  # a C-STORE cannot carry an instance without them
            by_uid[str(ds.SOPInstanceUID)].append(path)
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


def _received_by_dcmtk(scp: StoreSCP) -> dict[str, bytes]:
    """What DCMTK storescp (bit-preserving) received, by SOP Instance UID: the oracle of 'as sent'."""
    out = {}
    for path in scp.files():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sop = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        out[sop] = path.read_bytes()
    return out


def _sop_uid(path: Path) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def _round_problems(files: list[Path], work: Path, start_listener: Callable[..., Any]) -> tuple[int, list[str]]:
    """Send one round to DCMTK storescp (the oracle of what storescu sends) and to the listener.

    Returns how many files were compared and what did not come back as sent. Files DCMTK itself cannot
    send (it refuses to read some of the corpus) are left out: they never reach a listener.
    """
    with StoreSCP(work / "dcmtk") as scp:
        run_storescu(scp.host, scp.port, files, called_ae=scp.ae_title, extra=["-nh"])
    sent = _received_by_dcmtk(scp)
    files = [path for path in files if _sop_uid(path) in sent]
    listener = start_listener(work / "archive")
    archive = listener.archive
    done = run_storescu(listener.host, listener.port, files, called_ae=listener.ae_title, extra=["-nh", "-v", "-d"])
    statuses = _statuses_by_file(done.stderr)
    problems = [f"{Path(f).name}: status 0x{s:04X}" for f, s in statuses.items() if s != 0]
    problems += [f"{path.name}: no C-STORE response" for path in files if str(path) not in statuses]
    for path in files:
        if statuses.get(str(path)) != 0:
            continue
        sop = _sop_uid(path)
        original = archive.read_instance(sop, "original")
        syntax, received = dataset_bytes(sent[sop])
        if dataset_bytes(original)[0] != syntax:
            problems.append(f"{path.name}: exported in {dataset_bytes(original)[0]}, sent in {syntax}")
        elif syntax in LOSSLESS_ENCAPSULATED_SYNTAXES:
            if not np.array_equal(pixels(original), pixels(path.read_bytes())):
                problems.append(f"{path.name}: pixels differ from the lossless original")
        elif dataset_bytes(original)[1] != received:
            problems.append(f"{path.name}: data set differs from what storescu sent")
    problems.extend(archive.verify(deep=True))
    return len(files), problems


def test_every_readable_corpus_file_over_dimse_comes_back_as_sent(
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
