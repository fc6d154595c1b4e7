"""The side-by-side benchmark in small mode, against real pacs-engine, DCMTK storescp and Orthanc servers.

The figures at this size mean nothing; what is checked is that every phase runs against every target
with the same client and lands in results.json, report.md and the plots, with ratios to pacs-engine.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import sys
from pathlib import Path
from typing import Any

import pydicom
import pytest

from bench.compare import ALL_PHASES, BenchOptions, all_targets, applicable_phases, select_targets
from bench.compare.report import PLOTS, summarise
from bench.compare.workload import RADIOGRAPHS, write_radiographs
from engine.cli.main import main
from engine.testing.corpus import pydicom_data_dir
from engine.testing.dcmtk import dcmtk_available

needs_dcmtk = pytest.mark.skipif(not dcmtk_available(), reason="needs DCMTK (apt-get install dcmtk)")
needs_data = pytest.mark.skipif(pydicom_data_dir() is None, reason="needs pydicom-data (pip install pydicom-data)")
ORTHANC_MISSING = next(t for t in all_targets() if t.name == "orthanc").missing()


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    if not dcmtk_available() or pydicom_data_dir() is None:
        pytest.skip("needs DCMTK and pydicom-data")
    out = tmp_path_factory.mktemp("bench") / "out"
    progress = io.StringIO()
    with contextlib.redirect_stderr(progress):
        status = main(["bench", "--small", "--series", "ct300,mr", "--targets", "pacs-engine,orthanc,dcmtk",
                       "--out", str(out), "--work", str(out.parent / "work")])
    (out.parent / "progress.txt").write_text(progress.getvalue())
    assert status == 0, progress.getvalue()[-3000:]
    return out, json.loads((out / "results.json").read_text())


def _target(results: dict[str, Any], name: str) -> dict[str, Any]:
    return next(t for t in results["targets"] if t["name"] == name)


def _check_phases(target: dict[str, Any], expected: list[str]) -> None:
    assert target["status"] == "ok", target["notes"]
    assert list(target["phases"]) == expected
    for phase, entry in target["phases"].items():
        assert "error" not in entry, (phase, entry)
        assert len(entry["runs"]) == 1, phase
        for metric, value in entry["runs"][0].items():
            # CPU time comes in 10 ms clock ticks: a forking storescp's few small stores can take none.
            floor_ok = value >= 0 if metric.startswith("cpu_") else value > 0
            assert math.isfinite(value) and floor_ok, (target["name"], phase, metric, value)


@needs_dcmtk
@needs_data
def test_pacs_engine_and_dcmtk_run_every_phase_that_applies(small_run: tuple[Path, dict[str, Any]]) -> None:
    _, results = small_run
    by_name = {t.name: t for t in all_targets()}
    _check_phases(_target(results, "pacs-engine"), applicable_phases(by_name["pacs-engine"]))
    _check_phases(_target(results, "pacs-engine-jpegls"), applicable_phases(by_name["pacs-engine-jpegls"]))
    _check_phases(_target(results, "dcmtk-storescp"), ["cstore_1", "storage", "memory", "cstore_4"])
    assert len(applicable_phases(by_name["pacs-engine"])) == len(ALL_PHASES)
    # the host is timed before each phase that reads the archive left by the ingest (memory included)
    for name, reads in (("pacs-engine", len(ALL_PHASES) - 4), ("dcmtk-storescp", 1)):
        host = _target(results, name)["host_speed"]
        assert len(host) == reads and all(set(run) == {"python_ms", "decode_ms"} for run in host)
        assert all(value > 0 for run in host for value in run.values())


@needs_dcmtk
@needs_data
def test_targets_take_turns_at_each_phase(small_run: tuple[Path, dict[str, Any]]) -> None:
    out, _ = small_run
    lines = (out.parent / "progress.txt").read_text().splitlines()

    def at(target: str, phase: str) -> int:
        return lines.index(f"bench: {target}: {phase} run 1/1")

    names = ("pacs-engine", "pacs-engine-jpegls", "dcmtk-storescp")
    # every target's first ingest before any read, and the reads before the other ingests
    assert max(at(n, "cstore_1") for n in names) < at("pacs-engine", "cget") < at("pacs-engine", "memory")
    assert max(at(n, "memory") for n in names) < min(at(n, "cstore_4") for n in names)
    # within the reads, one phase at a time across the targets
    frames, first_image = "frame_latency", "first_image"
    assert at("pacs-engine", frames) < at("pacs-engine-jpegls", frames) < at("pacs-engine", first_image)


@needs_dcmtk
@needs_data
@pytest.mark.skipif(ORTHANC_MISSING is not None, reason=str(ORTHANC_MISSING))
def test_orthanc_runs_every_phase_and_a_crash_is_reported(small_run: tuple[Path, dict[str, Any]]) -> None:
    out, results = small_run
    _check_phases(_target(results, "orthanc"), list(ALL_PHASES))
    transcoding = _target(results, "orthanc-jpegls")
    # Debian's Orthanc 1.10.1 aborts in DCMTK's CharLS on signed CT; a fixed build simply runs.
    if transcoding["status"] == "crashed":
        assert any("crashed" in note for note in transcoding["notes"])
        assert "orthanc-jpegls`: **crashed**" in (out / "report.md").read_text()
    else:
        _check_phases(transcoding, list(ALL_PHASES))
    stored = _target(results, "orthanc")["phases"]["cget_stored"]["info"]["syntax"]
    assert stored.startswith("1.2.840.10008.1.2.1 ")  # Orthanc keeps what it received: explicit VR LE


@needs_dcmtk
@needs_data
def test_report_has_ratios_to_pacs_engine_and_plots(small_run: tuple[Path, dict[str, Any]]) -> None:
    out, results = small_run
    summary = results["summary"]
    assert summary == json.loads(json.dumps(summarise(results)))
    for phase, metrics in summary.items():
        for metric, cells in metrics.items():
            assert cells["pacs-engine"]["ratio"] == 1.0, (phase, metric)
            for cell in cells.values():
                assert cell["ratio"] == pytest.approx(cell["median"] / cells["pacs-engine"]["median"])
    engine_syntax = _target(results, "pacs-engine")["phases"]["cget_stored"]["info"]["syntax"]
    assert engine_syntax.startswith("1.2.840.10008.1.2.4.202 ")  # sent as stored: HTJ2K lossless RPCL
    report = (out / "report.md").read_text()
    assert "## Results by phase" in report and "×1.00" in report
    assert "### Host speed" in report and "| python_ms ↓ |" in report and summary["host_speed"]["decode_ms"]
    for group in PLOTS:
        png = out / f"{group}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", group
        assert f"]({group}.png)" in report


def test_target_selection_by_family_and_unknown_names() -> None:
    assert [t.name for t in select_targets(["orthanc"])] == ["pacs-engine", "orthanc", "orthanc-jpegls"]
    assert [t.name for t in select_targets(["dcmtk"])] == ["pacs-engine", "dcmtk-storescp"]
    with pytest.raises(ValueError, match="unknown targets nope"):
        select_targets(["nope"])


def test_cli_refuses_unknown_series_and_targets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--small", "--targets", "nope", "--out", str(tmp_path)]) == 1
    assert "unknown targets nope" in capsys.readouterr().err
    assert main(["bench", "--small", "--series", "xray", "--out", str(tmp_path), "--work", str(tmp_path)]) == 1
    assert "unknown series ['xray']" in capsys.readouterr().err


@needs_data
def test_radiographs_become_one_series_with_their_pixels_untouched(tmp_path: Path) -> None:
    data_dir = pydicom_data_dir()
    assert data_dir is not None
    paths = write_radiographs(tmp_path)
    written = [pydicom.dcmread(p) for p in paths]
    assert len({ds.StudyInstanceUID for ds in written}) == 1 and len({ds.SeriesInstanceUID for ds in written}) == 1
    assert len({ds.SOPInstanceUID for ds in written}) == len(RADIOGRAPHS)
    for ds, name in zip(written, RADIOGRAPHS, strict=True):
        original = pydicom.dcmread(data_dir / name)
        assert ds.PixelData == original.PixelData
        assert ds.SOPInstanceUID != original.SOPInstanceUID
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID


def test_bench_options_default_to_every_family() -> None:
    options = BenchOptions(out=Path("x"))
    assert options.targets == ("pacs-engine", "orthanc", "dcmtk") and options.repeats == 3


def test_cli_says_so_when_the_bench_package_is_not_importable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "bench.compare", None)  # as in an installed wheel without bench/
    assert main(["bench", "--small", "--out", str(tmp_path)]) == 1
    assert "bench.compare cannot be imported" in capsys.readouterr().err
