"""The allocator tuning `serve` applies: freed buffers of an instance's size are reused, not faulted in again."""

from __future__ import annotations

import subprocess
import sys

import pytest

# Two threads each building and dropping an instance's worth of buffers, as a retrieve's readers do;
# prints the minor page faults it took.
_CHURN = """
import resource, sys, threading
if sys.argv[1] == "keep":
    from engine.cli._malloc import keep_freed_buffers
    assert keep_freed_buffers()
def churn():
    for _ in range(100):
        frame = bytes(600_000); value = frame + b"x"; dataset = b"".join((b"h", value, b"t")); pdus = bytearray(dataset)
        del frame, value, dataset, pdus
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
threads = [threading.Thread(target=churn) for _ in range(2)]
[t.start() for t in threads]
[t.join() for t in threads]
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", _CHURN, mode], capture_output=True, text=True, check=True, timeout=120)
    return int(done.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_instance_buffers_are_reused_instead_of_faulted_in_again() -> None:
    default, kept = _faults("default"), _faults("keep")
    assert kept * 10 < default, (default, kept)
