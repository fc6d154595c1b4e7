"""SIGKILL at random moments while instances arrive: every acknowledged instance survives byte-identical.

Three ingest paths: DCMTK storescu into `serve`, STOW-RS into `serve`, and `import`. The kill delays come
from a seeded generator (PACS_CRASH_SEED, default 6) so a failure can be replayed. CI kills each path
a few times; the slow suite (-m slow) at least 20 times.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.testing.crash import CrashHarness
from engine.testing.series import SeriesFiles, write_ct_series, write_mr_series

pytestmark = pytest.mark.dcmtk

SEED = int(os.environ.get("PACS_CRASH_SEED", "6"))
CI_KILLS = 3
SLOW_KILLS = int(os.environ.get("PACS_CRASH_KILLS", "20"))
PATHS = ["storescu", "stow", "import"]
# How long after the transfer starts the kill may come: long enough that some rounds finish the
# transfer and are killed while acknowledged instances wait in the journal to be transcoded.
MAX_DELAY = {"storescu": 1.0, "stow": 1.0, "import": 2.5}


def _run(path: str, archive: Path, files: list[Path] | tuple[Path, ...], kills: int, seed: int) -> None:
    harness = CrashHarness(archive, files, seed=seed, max_delay=MAX_DELAY[path])
    report = getattr(harness, f"run_{path}")(kills)
    harness.check(report)
    print(report.summary())
    assert report.problems == [], "\n".join(report.problems[:20])
    assert report.kills == kills, report.summary()
    assert report.acked, report.summary()
    assert report.verified == len(report.acked)


@pytest.mark.parametrize("path", PATHS)
def test_acknowledged_instances_survive_sigkill(path: str, tmp_path: Path, ct_series: SeriesFiles) -> None:
    _run(path, tmp_path / "archive", ct_series.files, CI_KILLS, SEED + PATHS.index(path))


@pytest.fixture(scope="module")
def big_series(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two series, 300 instances: enough that twenty rounds keep finding instances still to send."""
    root = tmp_path_factory.mktemp("crash-series")
    return [*write_ct_series(root / "ct", 200, rows=256, cols=256, seed=11), *write_mr_series(root / "mr", 100, seed=12)]


@pytest.mark.slow
@pytest.mark.parametrize("path", PATHS)
def test_acknowledged_instances_survive_many_sigkills(path: str, tmp_path: Path, big_series: list[Path]) -> None:
    _run(path, tmp_path / "archive", big_series, SLOW_KILLS, SEED + 10 + PATHS.index(path))
