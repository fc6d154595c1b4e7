"""Run `pacs-engine serve` as a real subprocess on a loopback port, for integration tests and benches.

A helper layer on top of the engine (not part of the core): it starts the CLI the way an operator would
and talks to it only over the network and through signals.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from engine.testing.dcmtk import LOOPBACK, free_port, port_bound

READY = re.compile(r"listening: dicom=(?P<host>[^\s:]+):(?P<port>\d+) ae=(?P<ae>\S+)")
HTTP_READY = re.compile(r"listening: http=(?P<host>[^\s:]+):(?P<port>\d+)")
AE_TITLE = "PACS_ENGINE"


class ServerHandle:
    """A running `python -m engine serve`: its port, pid, log, and ways to stop or kill it."""

    def __init__(
        self, process: subprocess.Popen[bytes], port: int, ae_title: str, log_path: Path
    ) -> None:
        self.process = process
        self.host = LOOPBACK
        self.port = port
        self.ae_title = ae_title
        self.log_path = log_path
        self.ready = threading.Event()
        # DICOMweb starts after the DICOM listener: with --http-port, ready means both are listening.
        self.wants_http = False
        self.http_port: int | None = None  # from the server's own readiness line (it may be ephemeral)
        self.http_ready = threading.Event()
        self._reader: threading.Thread | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def _pump(self, stream: IO[bytes]) -> None:
        """Copy the server's output into the log file line by line, noticing the readiness line."""
        with self.log_path.open("ab") as log:
            for line in iter(stream.readline, b""):
                log.write(line)
                log.flush()
                text = line.decode("utf-8", "replace")
                match = READY.search(text)
                if match and int(match["port"]) == self.port:
                    self.ready.set()
                http = HTTP_READY.search(text)
                if http:
                    self.http_port = int(http["port"])
                    self.http_ready.set()

    def start_reader(self) -> None:
        assert self.process.stdout is not None
        self._reader = threading.Thread(
            target=self._pump, args=(self.process.stdout,), daemon=True
        )
        self._reader.start()

    def log(self) -> str:
        """Everything the server printed so far (stdout and stderr interleaved)."""
        return (
            self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        )

    def wait_ready(self, timeout: float) -> None:
        """Wait for the readiness line and the bound port; RuntimeError with the log if it dies or hangs.

        The port is checked by binding, not connecting: a probe connection would hold an association
        thread in the server until its ACSE timeout.
        """
        deadline = time.monotonic() + timeout
        while not (self.ready.is_set() and port_bound(self.host, self.port)
                   and (self.http_ready.is_set() or not self.wants_http)):
            if self.process.poll() is not None:
                self._join_reader()
                raise RuntimeError(
                    f"pacs-engine serve exited with {self.process.returncode} before listening:\n{self.log()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"pacs-engine serve not ready on port {self.port} after {timeout:.0f} s:\n{self.log()}"
                )
            (self.http_ready if self.ready.is_set() else self.ready).wait(0.05)

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 30.0) -> int:
        """Send `sig` and wait for the process to end; return its exit code (negative: killed by signal)."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout=timeout)
        self._join_reader()
        return code

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait up to `timeout` for a clean exit; SIGKILL if it does not come."""
        try:
            return self.kill(signal.SIGTERM, timeout)
        except subprocess.TimeoutExpired:
            return self.kill(signal.SIGKILL, timeout)

    def _join_reader(self) -> None:
        if self._reader is not None:
            self._reader.join(timeout=5)


@contextmanager
def running_server(
    archive_dir: Path,
    *,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    ae_title: str = AE_TITLE,
    timeout: float = 60.0,
) -> Iterator[ServerHandle]:
    """Start `python -m engine serve --archive DIR` on a free loopback port; stop it on exit.

    Waits for the `listening: dicom=HOST:PORT ae=TITLE` line and for the port to accept connections, and
    with `--http-port` in `extra_args` also for `listening: http=HOST:PORT` (its port: `handle.http_port`).
    All output goes to `<archive_dir>.serve.log` beside the archive (appended, kept for debugging).
    Raises RuntimeError, with the server's output, if it exits or is not ready within `timeout`.
    """
    archive_dir = Path(archive_dir)
    port = free_port()
    log_path = archive_dir.with_name(archive_dir.name + ".serve.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "engine", "serve", "--archive", str(archive_dir),
        "--dicom-port", str(port), "--host", LOOPBACK, "--ae-title", ae_title, *extra_args,
    ]  # fmt: skip
    full_env = {
        **os.environ,
        **(env or {}),
        "PYTHONUNBUFFERED": "1",
    }  # the readiness line must not sit in a buffer
    with log_path.open("ab") as log:
        log.write(f"$ {' '.join(command)}\n".encode())
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=full_env
    )
    handle = ServerHandle(process, port, ae_title, log_path)
    handle.wants_http = "--http-port" in extra_args
    handle.start_reader()
    try:
        handle.wait_ready(timeout)
        yield handle
    finally:
        if process.poll() is None:
            handle.stop()
        handle._join_reader()
        if process.stdout is not None:
            process.stdout.close()
