"""`pacs-engine serve --http-port 0` as a real process: both readiness lines, STOW and QIDO, clean SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from pydicom.data import get_testdata_file
from web_helpers import multipart_body

from engine.testing.dcmtk import LOOPBACK

DICOM_READY = re.compile(r"^listening: dicom=\S+:(\d+) ae=\S+ archive=\S+$")
HTTP_READY = re.compile(r"^listening: http=(\S+):(\d+)$")


@pytest.mark.timeout(120)
def test_serve_with_http_port(tmp_path: Path) -> None:
    command = [
        sys.executable, "-m", "engine", "serve", "--archive", str(tmp_path / "archive"),
        "--dicom-port", "0", "--http-port", "0", "--host", LOOPBACK,
    ]  # fmt: skip
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert process.stdout is not None
        first = process.stdout.readline().decode().strip()
        second = process.stdout.readline().decode().strip()
        assert DICOM_READY.match(first), (first, (tmp_path / "serve.log").read_text())
        match = HTTP_READY.match(second)
        assert match, second
        base = f"http://{match[1]}:{match[2]}"
        data = Path(get_testdata_file("CT_small.dcm")).read_bytes()
        boundary = uuid.uuid4().hex
        with httpx.Client(base_url=base, timeout=60) as http:
            assert http.get("/studies").json() == []
            stored = http.post(
                "/studies",
                content=multipart_body([data], boundary),
                headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'},
            )
            assert stored.status_code == 200
            assert len(http.get("/instances").json()) == 1
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
        log.close()
