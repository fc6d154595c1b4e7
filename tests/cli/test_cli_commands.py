"""`pacs-engine` import / export / ls / stats / verify on a real archive, and how errors reach the user."""

from __future__ import annotations

import io
import json
import shutil
import socket
import subprocess
import sys
import unicodedata
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest

from engine.cli._common import print_table
from engine.testing.series import SeriesFiles
from engine.types import EXPLICIT_VR_LE, HTJ2K_LOSSLESS_RPCL


def read_meta(path: Path) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path, stop_before_pixels=True)


def sop_uid(path: Path) -> str:
    return str(read_meta(path).SOPInstanceUID)


def dataset_bytes(part10: bytes) -> tuple[str, bytes]:
    """(transfer syntax UID, the data set bytes after the file meta) of a Part-10 file."""
    meta = pydicom.dcmread(io.BytesIO(part10), stop_before_pixels=True).file_meta
    end = 132 + 12 + int(meta.FileMetaInformationGroupLength)
    return str(meta.TransferSyntaxUID), part10[end:]


def exported_path(out: Path, source: Path) -> Path:
    """Where `export` puts the instance of `source`: OUT/<study>/<series>/<sop>.dcm."""
    meta = read_meta(source)
    return out / str(meta.StudyInstanceUID) / str(meta.SeriesInstanceUID) / f"{meta.SOPInstanceUID}.dcm"


def pixels(path: Path) -> np.ndarray:
    return np.asarray(pydicom.dcmread(path).pixel_array)


def cli_process(archive: Path, *args: str) -> tuple[int, str, str]:
    """Run `python -m engine --archive ARCHIVE ARGS...` as its own process: (exit status, stdout, stderr)."""
    done = subprocess.run(
        [sys.executable, "-m", "engine", "--archive", str(archive), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return done.returncode, done.stdout, done.stderr



@pytest.fixture
def imported(cli: Callable[..., Any], tmp_archive: Path, ct_series: SeriesFiles) -> Path:
    """An archive holding the CT series, imported as a folder."""
    run = cli(tmp_archive, "import", "--quiet", str(ct_series.directory))
    assert run.code == 0, run.err
    return tmp_archive


def _bad_files(ct_series: SeriesFiles, folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    data = ct_series.files[0].read_bytes()
    truncated = folder / "truncated.dcm"
    truncated.write_bytes(data[: len(data) // 2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(ct_series.files[1])
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.9.7777.1"
        ds.Rows = ds.Rows + 1
        short = folder / "short_pixels.dcm"
        ds.save_as(short)
    return truncated, short


def test_import_files_and_folders_summarises_and_fails_on_refusals(
    cli: Callable[..., Any], tmp_archive: Path, tmp_path: Path, ct_series: SeriesFiles
) -> None:
    folder = tmp_path / "incoming"
    shutil.copytree(ct_series.directory, folder / "series")
    (folder / "README").write_text("not an image\n")
    (folder / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM")
    truncated, short = _bad_files(ct_series, folder / "bad")
    named_text = tmp_path / "notes.txt"
    named_text.write_text("named explicitly, so it is tried and refused\n")

    run = cli(tmp_archive, "import", str(folder), str(named_text), str(tmp_path / "missing.dcm"))

    assert run.code == 1
    n = len(ct_series.files)
    assert f"stored {n}, already present 0, replaced 0, refused 4, skipped 2 (not DICOM)" in run.out
    refused = {line.split(": ", 2)[1]: line.split(": ", 2)[2] for line in run.err.splitlines() if line.startswith("refused: ")}
    assert set(refused) == {str(truncated), str(short), str(named_text), str(tmp_path / "missing.dcm")}
    assert all(reason.strip() for reason in refused.values())
    assert "Traceback" not in run.err

    again = cli(tmp_archive, "import", "-q", str(ct_series.directory))
    assert again.code == 0
    assert f"stored 0, already present {n}, replaced 0, refused 0" in again.out
    verify = cli(tmp_archive, "verify")
    assert verify.code == 0 and f"OK: {n} instances verified" in verify.out


@pytest.mark.parametrize("syntax", ["original", "explicit", "stored"])
def test_export_writes_part10_files_per_study_and_series(
    cli: Callable[..., Any], imported: Path, tmp_path: Path, ct_series: SeriesFiles, syntax: str
) -> None:
    out = tmp_path / "out"
    run = cli(imported, "export", "--out", str(out), "--series", ct_series.series_uid, "--syntax", syntax)
    assert run.code == 0, run.err
    assert f"exported {len(ct_series.files)} instances" in run.out
    assert len(list(out.rglob("*.dcm"))) == len(ct_series.files)
    for source in ct_series.files[::7]:
        target = exported_path(out, source)
        got_syntax, got = dataset_bytes(target.read_bytes())
        if syntax == "original":
            assert (got_syntax, got) == dataset_bytes(source.read_bytes())
        else:
            assert got_syntax == (EXPLICIT_VR_LE if syntax == "explicit" else HTJ2K_LOSSLESS_RPCL)
            assert np.array_equal(pixels(target), pixels(source))
        assert read_meta(target).SOPInstanceUID == sop_uid(source)


def test_export_by_study_and_by_sop(
    cli: Callable[..., Any], imported: Path, tmp_path: Path, ct_series: SeriesFiles
) -> None:
    study = cli(imported, "export", "--out", str(tmp_path / "s"), "--study", ct_series.study_uid)
    assert study.code == 0 and len(list((tmp_path / "s").rglob("*.dcm"))) == len(ct_series.files)
    one = ct_series.files[3]
    single = cli(imported, "export", "--out", str(tmp_path / "i"), "--sop", sop_uid(one))
    assert single.code == 0
    assert dataset_bytes(exported_path(tmp_path / "i", one).read_bytes()) == dataset_bytes(one.read_bytes())


def test_ls_levels_as_table_and_json(cli: Callable[..., Any], imported: Path, ct_series: SeriesFiles) -> None:
    meta = read_meta(ct_series.files[0])
    table = cli(imported, "ls")
    assert table.code == 0
    header, row = table.out.splitlines()
    assert header.split()[:3] == ["STUDY", "UID", "PATIENT"]
    assert row.split()[0] == ct_series.study_uid and str(meta.PatientID) in row
    assert row.split()[-1] == str(len(ct_series.files))
    studies = cli(imported, "ls", "studies", "--json").json()
    assert studies == [
        {
            "study_uid": ct_series.study_uid,
            "patient_id": str(meta.PatientID),
            "patient_name": str(meta.PatientName),
            "study_date": str(meta.get("StudyDate", "")),
            "modalities": "CT",
            "series": 1,
            "instances": len(ct_series.files),
        }
    ]
    series = cli(imported, "ls", "series", "--study", ct_series.study_uid, "--json").json()
    assert isinstance(series, list) and [s["series_uid"] for s in series] == [ct_series.series_uid]
    instances = cli(imported, "ls", "instances", "--series", ct_series.series_uid, "--json").json()
    assert isinstance(instances, list)
    assert sorted(i["sop_uid"] for i in instances) == sorted(sop_uid(p) for p in ct_series.files)
    unknown = cli(imported, "ls", "series", "--study", "1.2.3.4")
    assert unknown.code == 1 and unknown.err.count("\n") == 1 and "no study 1.2.3.4" in unknown.err


def test_stats_json_counts_bytes_and_ratio(cli: Callable[..., Any], imported: Path, ct_series: SeriesFiles) -> None:
    stats = cli(imported, "stats", "--json").json()
    assert isinstance(stats, dict)
    received = sum(len(dataset_bytes(p.read_bytes())[1]) for p in ct_series.files)
    assert stats["patients"] == stats["studies"] == stats["series"] == 1
    assert stats["instances"] == len(ct_series.files)
    assert stats["received_bytes"] == received
    assert 0 < stats["stored_bytes"] < received
    assert stats["ratio"] == pytest.approx(received / stats["stored_bytes"], rel=1e-3)
    text = cli(imported, "stats")
    assert text.code == 0 and f"instances  {len(ct_series.files)}" in text.out


def test_verify_names_a_damaged_chunk_and_fails(cli: Callable[..., Any], imported: Path) -> None:
    assert cli(imported, "verify", "--deep").out.startswith("OK: ")
    chunk = max((p for p in (imported / "pixels").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    run = cli(imported, "verify")
    assert run.code == 1
    assert run.out.strip(), "each problem is printed"
    assert "FAILED" in run.err


def test_errors_are_one_line_with_exit_codes(cli: Callable[..., Any], tmp_path: Path) -> None:
    missing = cli(tmp_path / "nowhere", "stats")
    assert missing.code == 1 and missing.err.count("\n") == 1 and "no archive at" in missing.err
    (tmp_path / "bad.toml").write_text("[dicom]\nno_such_setting = 1\n")
    config = cli(tmp_path / "a", "--config", str(tmp_path / "bad.toml"), "stats")
    assert config.code == 2 and "no_such_setting" in config.err and "Traceback" not in config.err
    with pytest.raises(SystemExit) as usage:
        cli(tmp_path / "a", "export", "--study", "1.2.3")  # --out is required
    assert usage.value.code == 2


def test_the_module_entry_point_runs_and_reports_errors_without_traceback(
    tmp_path: Path, ct_series: SeriesFiles
) -> None:
    archive = tmp_path / "archive"
    code, _, err = cli_process(archive, "import", "-q", str(ct_series.files[0]))
    assert code == 0, err
    code, out, err = cli_process(archive, "stats", "--json")
    assert code == 0 and json.loads(out)["instances"] == 1
    code, _, err = cli_process(archive, "export", "--out", str(tmp_path / "o"), "--sop", "1.2.3.4")
    assert code == 1
    assert err.strip().count("\n") == 0 and "1.2.3.4" in err and "Traceback" not in err


def test_serve_on_a_busy_port_fails_with_one_line(cli: Callable[..., Any], tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        run = cli(tmp_path / "archive", "serve", "--host", "127.0.0.1", "--dicom-port", str(port))
    assert run.code == 1
    assert "serve: error:" in run.err and "Traceback" not in run.err
    assert "listening:" not in run.out


def test_tables_align_names_in_wide_characters() -> None:
    """山田 takes four terminal columns, not two: the next column started two columns early on such rows."""
    out = io.StringIO()
    print_table([{"name": "Yamada^Tarou=山田^太郎", "id": "1"}, {"name": "Wang^XiaoDong", "id": "2"}],
                [("name", "PatientName"), ("id", "PatientID")], out)
    header, *rows = out.getvalue().splitlines()
    starts = {_display_columns(line[: line.rindex(" ") + 1]) for line in (header, *rows)}
    assert starts == {_display_columns("Yamada^Tarou=山田^太郎  ")}


def _display_columns(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)
