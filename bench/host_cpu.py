"""The whole machine's CPU time over a timed run, from /proc/stat: the work it cost, and the time stolen.

A transfer's seconds on this shared virtual machine depend on its neighbours as much as on the code:
"steal" is time the vCPUs were ready to run while the hypervisor ran another machine (measured up to half
of the CPU time in a run here). The busy CPU seconds (user, system, interrupts) are what the transfer
cost both ends and the kernel between them, and move far less with the neighbours than the seconds do.
A bench reports both beside each rate, so a reader sees what a run's host was like. Linux only: elsewhere
`CpuMeter` measures nothing and its figures are None.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

PROC_STAT = Path("/proc/stat")
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
# /proc/stat's "cpu" line, after the label (proc(5)): user nice system idle iowait irq softirq steal ...
_BUSY_FIELDS = (0, 1, 2, 5, 6)
_IDLE_FIELDS = (3, 4)
_STEAL_FIELD = 7


@dataclass(frozen=True, slots=True)
class CpuTimes:
    """Seconds of CPU time summed over all CPUs, by what the CPUs were doing."""

    busy: float
    idle: float
    steal: float

    def __sub__(self, other: CpuTimes) -> CpuTimes:
        return CpuTimes(self.busy - other.busy, self.idle - other.idle, self.steal - other.steal)

    def __add__(self, other: CpuTimes) -> CpuTimes:
        return CpuTimes(self.busy + other.busy, self.idle + other.idle, self.steal + other.steal)

    @property
    def steal_share(self) -> float:
        """Stolen time as a share of all the CPU time that passed (0 when none passed)."""
        total = self.busy + self.idle + self.steal
        return self.steal / total if total > 0 else 0.0


def machine_cpu() -> CpuTimes | None:
    """The machine's CPU times since boot, or None where /proc/stat is not there."""
    try:
        line = PROC_STAT.read_text(encoding="ascii").split("\n", 1)[0]
    except OSError:
        return None
    ticks = [int(v) for v in line.split()[1:]]
    return CpuTimes(
        busy=sum(ticks[k] for k in _BUSY_FIELDS) / _TICKS,
        idle=sum(ticks[k] for k in _IDLE_FIELDS) / _TICKS,
        steal=ticks[_STEAL_FIELD] / _TICKS if len(ticks) > _STEAL_FIELD else 0.0,
    )


class CpuMeter:
    """`with CpuMeter() as meter: ...`; then `meter.used` holds the CPU times that passed inside (or None)."""

    def __init__(self) -> None:
        self._start: CpuTimes | None = None
        self.used: CpuTimes | None = None

    def __enter__(self) -> Self:
        self._start = machine_cpu()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        end = machine_cpu()
        self.used = end - self._start if end is not None and self._start is not None else None


def timed(fn: Callable[[], object]) -> tuple[float, CpuTimes | None]:
    """The seconds `fn` takes, and the machine's CPU times meanwhile (None off Linux)."""
    with CpuMeter() as meter:
        start = time.perf_counter()
        fn()
        seconds = time.perf_counter() - start
    return seconds, meter.used


def steal_share(used: Iterable[CpuTimes]) -> float:
    """The share of all the CPU time in `used` that the host stole (0 when there is none)."""
    return sum(used, CpuTimes(0.0, 0.0, 0.0)).steal_share
