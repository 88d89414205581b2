"""CPU time of a bench run's processes, summed per group (pathway, ingest, PostgreSQL, broker, ...).

Read from /proc on Linux, where the bench's reference machine runs; elsewhere there is no figure.
Throughput on a shared machine is CPU per event: this says whose CPU it is, from the same run.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

PidGroups = Callable[[], Mapping[str, Sequence[int]]]


def cpu_seconds(pid: int, expect: str | None = None) -> float | None:
    """User + system CPU seconds of a live process; None if it is gone, unreadable or, with `expect`,
    not that program (a PostgreSQL backend's pid on another machine names some local process)."""
    try:
        if expect is not None and not Path(f"/proc/{pid}/cmdline").read_bytes().startswith(expect.encode()):
            return None
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (man 5 proc)


class CpuMeter:
    """CPU used per group between `start()` and `stop()`. `groups()` names the pids of each group at
    the time; a pid first seen at `stop()` (a backend opened during the run) counts whole."""

    def __init__(self, groups: PidGroups, expect: Mapping[str, str] | None = None) -> None:
        self.groups = groups
        self.expect = dict(expect or {})
        self._start: dict[tuple[str, int], float] = {}

    def _read(self) -> dict[tuple[str, int], float]:
        out: dict[tuple[str, int], float] = {}
        for group, pids in self.groups().items():
            for pid in pids:
                used = cpu_seconds(pid, self.expect.get(group))
                if used is not None:
                    out[(group, pid)] = used
        return out

    def start(self) -> None:
        self._start = self._read()

    def stop(self) -> dict[str, float]:
        used: dict[str, float] = {}
        for (group, pid), now in self._read().items():
            used[group] = used.get(group, 0.0) + max(0.0, now - self._start.get((group, pid), 0.0))
        return used


def descendants(pid: int) -> list[int]:
    """The process and every process below it, from /proc (empty if it is gone)."""
    found, i = [pid], 0
    while i < len(found):
        try:
            tasks = os.listdir(f"/proc/{found[i]}/task")
        except OSError:
            tasks = []
        for task in tasks:
            with contextlib.suppress(OSError):  # the task ended meanwhile
                found += [int(child) for child in Path(f"/proc/{found[i]}/task/{task}/children").read_text().split()]
        i += 1
    return found if Path(f"/proc/{pid}").exists() else []


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, IndexError, ValueError):
        pass
    return 0


class TreeRss:
    """The peak of the summed resident memory of a process and its children (a replay and its
    workers), sampled every `interval` seconds on a thread until `stop()`; 0 where /proc is missing."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.pid, self.interval = pid, interval
        self.peak_kib = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tree-rss", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(self.interval):
            self.sample()

    def sample(self) -> int:
        """Read the tree's resident memory now; returns it (KiB) and keeps the peak."""
        now = sum(rss_kib(p) for p in descendants(self.pid))
        self.peak_kib = max(self.peak_kib, now)
        return now

    def stop(self) -> int:
        self._done.set()
        self._thread.join()
        return self.peak_kib
