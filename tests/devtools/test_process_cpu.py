"""CPU time per process group from /proc: what `forlop bench` reports as CPU per event."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from forlop_devtools.process_cpu import CpuMeter, cpu_seconds

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="CPU time is read from /proc (Linux)")


def _burn_until_cpu_moves(pid: int) -> None:
    """Work until the kernel's tick count for this process moves (bounded; no clock involved)."""
    before = cpu_seconds(pid)
    for _ in range(200):
        sum(i * i for i in range(200_000))
        if cpu_seconds(pid) != before:
            return
    raise AssertionError("CPU time did not move")


def test_cpu_seconds_of_a_live_process_and_of_none() -> None:
    first = cpu_seconds(os.getpid())
    _burn_until_cpu_moves(os.getpid())
    assert first is not None and cpu_seconds(os.getpid()) > first
    assert cpu_seconds(os.getpid(), expect="no-such-program") is None  # not the program the group expects
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert cpu_seconds(child.pid) is None  # gone


def test_meter_sums_each_group_between_start_and_stop() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import sys; sum(i for i in range(30_000_000)); sys.stdin.read()"],
                             stdin=subprocess.PIPE)
    try:
        pids = {"this": [os.getpid()]}
        meter = CpuMeter(lambda: pids)
        meter.start()
        _burn_until_cpu_moves(os.getpid())
        pids["child"] = [child.pid]  # first seen at stop: counted whole
        for _ in range(10**6):  # until the child's first tick (it is summing)
            if cpu_seconds(child.pid):
                break
        used = meter.stop()
        assert set(used) == {"this", "child"}
        assert used["this"] > 0 and used["child"] > 0
        assert used["this"] <= cpu_seconds(os.getpid())
    finally:
        child.stdin.close()
        child.wait(30)
