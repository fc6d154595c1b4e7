"""`pacs-engine delete`: refused unless enabled; then gone from ls / stats / export; consistent when killed."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest

from engine.archive import Archive
from engine.testing.series import SeriesFiles, write_mr_series

ENABLE = "[storage]\nallow_delete = true\n"


@dataclass(frozen=True, slots=True)
class Template:
    """A closed archive holding a CT series and an MR series of the same study; SOP UID -> data set bytes."""

    root: Path
    ct: SeriesFiles
    mr: SeriesFiles
    sent: dict[str, bytes]

    def copy(self, to: Path, *, enabled: bool = True) -> Path:
        shutil.copytree(self.root, to)
        if enabled:
            (to / "engine.toml").write_text(ENABLE)
        return to


def dataset_bytes(path: Path) -> tuple[str, bytes]:
    """(SOP Instance UID, the data set bytes after the file meta) of a Part-10 file."""
    data = path.read_bytes()
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return str(ds.SOPInstanceUID), data[132 + 12 + int(ds.file_meta.FileMetaInformationGroupLength) :]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory, ct_series: SeriesFiles) -> Template:
    base = tmp_path_factory.mktemp("cli-delete")
    mr = SeriesFiles.from_files(write_mr_series(base / "mr", 6, seed=5, study_uid=ct_series.study_uid))
    with Archive.open(base / "template") as archive:
        for path in (*ct_series.files, *mr.files):
            archive.ingest_file(path)
    sent = dict(dataset_bytes(p) for p in (*ct_series.files, *mr.files))
    return Template(base / "template", ct_series, mr, sent)


def test_delete_is_refused_unless_enabled(cli: Callable[..., Any], template: Template, tmp_path: Path) -> None:
    archive = template.copy(tmp_path / "a", enabled=False)
    done = cli(archive, "delete", "--series", template.mr.series_uid, "--yes")
    assert done.code == 1
    assert "deletion is disabled" in done.err and "allow_delete = true" in done.err
    assert cli(archive, "stats", "--json").json()["instances"] == len(template.sent)  # type: ignore[index]


def test_delete_asks_for_yes_without_a_terminal(cli: Callable[..., Any], template: Template, tmp_path: Path) -> None:
    archive = template.copy(tmp_path / "a")
    done = cli(archive, "delete", "--study", template.ct.study_uid)
    assert done.code == 2 and "--yes" in done.err
    assert cli(archive, "stats", "--json").json()["instances"] == len(template.sent)  # type: ignore[index]


def test_delete_series_then_ls_stats_verify_export(cli: Callable[..., Any], template: Template, tmp_path: Path) -> None:
    archive = template.copy(tmp_path / "a")
    pixels_before = _tree_bytes(archive / "pixels")
    done = cli(archive, "delete", "--series", template.mr.series_uid, "--yes")
    assert done.code == 0, done.err
    summary = f"deleted series {template.mr.series_uid}: {len(template.mr.files)} instances, 1 series, 0 studies"
    assert summary in done.out
    reclaimed = int(done.out.split("reclaimed")[1].split("(")[1].split(" bytes")[0])
    assert reclaimed > 0 and _tree_bytes(archive / "pixels") == pixels_before - reclaimed

    series = cli(archive, "ls", "series", "--json").json()
    assert [row["series_uid"] for row in series] == [template.ct.series_uid]  # type: ignore[index, union-attr]
    stats = cli(archive, "stats", "--json").json()
    assert (stats["series"], stats["instances"]) == (1, len(template.ct.files))  # type: ignore[index]
    gone = cli(archive, "ls", "instances", "--series", template.mr.series_uid)
    assert gone.code == 1 and "is not in the index" in gone.err
    assert cli(archive, "verify", "--deep").code == 0
    out = tmp_path / "out"
    assert cli(archive, "export", "--study", template.ct.study_uid, "--out", str(out)).code == 0
    exported = sorted(out.rglob("*.dcm"))
    assert len(exported) == len(template.ct.files)
    for path in exported:
        sop, data = dataset_bytes(path)
        assert data == template.sent[sop]


def test_delete_instance_and_study(
    cli: Callable[..., Any], template: Template, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = template.copy(tmp_path / "a", enabled=False)
    monkeypatch.setenv("PACS_ENGINE_STORAGE__ALLOW_DELETE", "1")  # the environment enables it too
    sop = dataset_bytes(template.ct.files[0])[0]
    done = cli(archive, "delete", "--sop", sop, "--yes", "--json")
    assert done.code == 0, done.err
    result = done.json()
    assert result["sop_instance_uids"] == [sop] and result["instances"] == 1  # type: ignore[index]
    assert result["stored_bytes"] > 0 and result["reclaimed_bytes"] > 0  # type: ignore[index]
    again = cli(archive, "delete", "--sop", sop, "--yes")
    assert again.code == 1 and f"instance {sop} is not in the index" in again.err
    assert cli(archive, "delete", "--sop", "not-a-uid", "--yes").code == 1

    done = cli(archive, "delete", "--study", template.ct.study_uid, "--yes")
    assert done.code == 0, done.err
    assert f"{len(template.sent) - 1} instances, 2 series, 1 studies" in done.out
    assert cli(archive, "ls", "--json").json() == []
    assert cli(archive, "stats", "--json").json()["stored_bytes"] == 0  # type: ignore[index]
    assert _tree_bytes(archive / "pixels", groups_only=True) == 0
    assert cli(archive, "verify", "--deep").code == 0


# -- crash safety -----------------------------------------------------------------------------------------


def _tree_bytes(root: Path, *, groups_only: bool = False) -> int:
    """Bytes of the files under `root`; with groups_only, of instance groups only (not the fan-out metadata)."""
    total = 0
    for directory, _, names in os.walk(root):
        depth = len(Path(directory).relative_to(root).parts)
        if groups_only and depth < 2:
            continue
        total += sum(os.path.getsize(os.path.join(directory, name)) for name in names)
    return total


def _kill_while_deleting(archive: Path, study: str, delay: float) -> int | None:
    """Run `pacs-engine delete --study`, SIGKILL it `delay` s after it has opened the archive for writing.

    The archive's lock file names the writer's pid once it is open: the kill races the deletion itself,
    not the interpreter's start-up. Returns the exit status if it finished first, else None.
    """
    lock = archive / ".lock"
    lock.unlink(missing_ok=True)
    process = subprocess.Popen(
        [sys.executable, "-m", "engine", "--archive", str(archive), "delete", "--study", study, "--yes"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:
            if lock.exists() and lock.read_text().strip() == str(process.pid):
                break
            time.sleep(0.001)
        time.sleep(delay)
        if process.poll() is not None:
            return process.returncode
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        return None
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _check_after_crash(archive: Path, template: Template) -> str:
    """Reopen (the sweep runs) and check all-or-nothing; return what the kill hit: before, during or after."""
    with Archive.open(archive, readonly=True) as reader:
        indexed = set(reader.index.iter_instance_uids())
        groups = {sop for sop, _ in reader.pixels.instance_dirs()}
    assert indexed in (set(), set(template.sent)), "a deletion is one transaction: all instances or none"
    if indexed:
        outcome = "before"
    else:
        outcome = "during" if groups or _tree_bytes(archive / "pixels", groups_only=True) else "after"
    with Archive.open(archive) as reopened:  # a writer: sweeps what an interrupted deletion left
        assert set(reopened.index.iter_instance_uids()) == indexed
        assert reopened.verify(deep=True) == []
        for sop in indexed:
            assert reopened.read_dataset(sop)[1] == template.sent[sop]
        stats = reopened.stats()
        assert stats.instances == len(indexed)
        assert (stats.studies, stats.series) == ((1, 2) if indexed else (0, 0))
        assert {sop for sop, _ in reopened.pixels.instance_dirs()} == indexed
        assert reopened.pixels.temp_dirs() == []
    if not indexed:
        assert _tree_bytes(archive / "pixels", groups_only=True) == 0, "no orphan pixel bytes after the sweep"
    return outcome


def _crash_rounds(template: Template, tmp_path: Path, rounds: int, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    outcomes: dict[str, int] = {}
    for i in range(rounds):
        archive = template.copy(tmp_path / f"a{i}")
        finished = _kill_while_deleting(archive, template.ct.study_uid, rng.uniform(0.0, 0.2))
        outcome = _check_after_crash(archive, template)
        if finished is not None:
            assert (finished, outcome) == (0, "after")
            outcome = "finished"
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        shutil.rmtree(archive)
    return outcomes


def test_a_killed_delete_leaves_a_consistent_archive(template: Template, tmp_path: Path) -> None:
    outcomes = _crash_rounds(template, tmp_path, rounds=3, seed=20261128)
    assert sum(outcomes.values()) == 3
    print("outcomes of the kills:", outcomes)


@pytest.mark.slow
def test_a_killed_delete_leaves_a_consistent_archive_many_times(template: Template, tmp_path: Path) -> None:
    outcomes = _crash_rounds(template, tmp_path, rounds=24, seed=7)
    print("outcomes of the kills:", outcomes)
    # 24 kills spread over the deletion's window: some must land before it commits and some after.
    assert outcomes.get("before", 0) and outcomes.get("during", 0) + outcomes.get("after", 0)
    assert outcomes.get("finished", 0) < 24
