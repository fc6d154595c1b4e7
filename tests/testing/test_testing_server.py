"""running_server: a real `python -m engine serve` subprocess, its readiness, its failures and its end."""

from __future__ import annotations

import importlib.util
import signal
from pathlib import Path

import pytest

from engine.testing.dcmtk import run_echoscu
from engine.testing.server import running_server


def _cli_built() -> bool:
    try:
        return importlib.util.find_spec("engine.__main__") is not None and (
            importlib.util.find_spec("engine.cli.main") is not None
        )
    except ModuleNotFoundError:
        return False


needs_cli = pytest.mark.skipif(
    not _cli_built(), reason="engine/__main__.py and engine.cli.main are not built yet"
)


def test_a_server_that_exits_before_listening_is_reported_with_its_output(
    tmp_archive: Path,
) -> None:
    with (
        pytest.raises(RuntimeError, match="exited with") as failure,
        running_server(tmp_archive, extra_args=["--no-such-option"], timeout=60),
    ):
        pass
    log = tmp_archive.with_name("archive.serve.log")
    assert log.is_file()
    assert "--no-such-option" in log.read_text()  # the command line is logged first
    assert log.read_text().splitlines()[-1] in str(
        failure.value
    )  # and its output travels in the error


@needs_cli
@pytest.mark.dcmtk
def test_serve_answers_echo_then_stops_on_sigterm(tmp_archive: Path) -> None:
    with running_server(tmp_archive) as server:
        assert server.pid > 0 and server.port > 0
        done = run_echoscu(server.host, server.port, called_ae=server.ae_title)
        assert done.returncode == 0, done.stdout + done.stderr
        code = server.stop()
    assert code == 0, server.log()


@needs_cli
def test_kill_ends_the_server_with_the_signal(tmp_archive: Path) -> None:
    with running_server(tmp_archive) as server:
        assert server.kill(signal.SIGKILL) == -signal.SIGKILL
