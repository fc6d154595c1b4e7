"""The ingest phases count a target's CPU until it has gone idle: work after the last answer counts."""

from __future__ import annotations

import subprocess
import sys

from bench.compare.phases import cpu_after_work
from bench.compare.targets import cpu_seconds

# Answers at once (prints), then works on for a while, then idles: what pacs-engine does after an
# acknowledgement. The loop counts CPU time, not wall time, so a busy host only stretches it.
_WORKER = """
import sys, time
print("answered", flush=True)
start = time.process_time()
while time.process_time() - start < 1.0:
    pass
sys.stdin.read()
"""


def test_cpu_after_work_waits_for_the_work_behind_the_answer() -> None:
    worker = subprocess.Popen([sys.executable, "-c", _WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert worker.stdout is not None and worker.stdout.readline() == "answered\n"
        at_answer = cpu_seconds(worker.pid)
        after = cpu_after_work(worker.pid)
        assert after - at_answer >= 0.5  # the 1 s of work behind the answer, less what ran before reading
        assert cpu_after_work(worker.pid) - after < 0.1  # idle: nothing more to count
    finally:
        worker.communicate("", timeout=30)
