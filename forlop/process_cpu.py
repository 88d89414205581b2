"""CPU time of a bench run's processes, summed per group (pathway, ingest, PostgreSQL, broker, ...).

Read from /proc on Linux, where the bench's reference machine runs; elsewhere there is no figure.
Throughput on a shared machine is CPU per event: this says whose CPU it is, from the same run.
"""

from __future__ import annotations

import os
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
