"""bench/host_cpu.py reads the machine's CPU times right: fields by name, and a meter that sees work done."""

from __future__ import annotations

from pathlib import Path

import pytest

import host_cpu  # bench/ is on sys.path: pytest's rootdir-relative import of this folder


def test_fields_are_read_by_their_place_in_proc_stat(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # user nice system idle iowait irq softirq steal guest guest_nice, in clock ticks (proc(5))
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 20 30 400 50 6 7 80 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n", encoding="ascii")
    monkeypatch.setattr(host_cpu, "PROC_STAT", stat)
    monkeypatch.setattr(host_cpu, "_TICKS", 100)
    times = host_cpu.machine_cpu()
    assert times == host_cpu.CpuTimes(busy=(100 + 20 + 30 + 6 + 7) / 100, idle=(400 + 50) / 100, steal=0.8)
    assert times.steal_share == pytest.approx(80 / 693)


def test_steal_share_pools_the_runs_it_is_given() -> None:
    # one run of 1 s stolen out of 2, one of 3 out of 8: 4 of 10 s in all, not the mean of 0.5 and 0.375
    runs = [host_cpu.CpuTimes(busy=1.0, idle=0.0, steal=1.0), host_cpu.CpuTimes(busy=4.0, idle=1.0, steal=3.0)]
    assert host_cpu.steal_share(runs) == pytest.approx(0.4)
    assert host_cpu.steal_share([]) == 0.0


def test_no_proc_stat_means_no_figures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host_cpu, "PROC_STAT", tmp_path / "missing")
    with host_cpu.CpuMeter() as meter:
        pass
    assert meter.used is None
    seconds, used = host_cpu.timed(lambda: None)
    assert used is None
    assert seconds >= 0


@pytest.mark.skipif(not host_cpu.PROC_STAT.exists(), reason="needs Linux's /proc/stat")
def test_meter_counts_the_work_done_inside() -> None:
    with host_cpu.CpuMeter() as meter:
        start = host_cpu.machine_cpu()
        assert start is not None
        total = 0
        while host_cpu.machine_cpu().busy <= start.busy:  # type: ignore[union-attr]  # spin until a tick lands
            total += sum(range(10_000))
    assert meter.used is not None
    assert meter.used.busy > 0
    assert 0.0 <= meter.used.steal_share <= 1.0
