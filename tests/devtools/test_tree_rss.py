"""The replay's peak memory is that of all its processes: the sampler sums a process tree."""

from __future__ import annotations

import subprocess
import sys

import pytest

from forlop_devtools.process_cpu import TreeRss, descendants, rss_kib

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

# A parent holding 80 MiB starts a child holding 60 MiB; both wait for stdin to close.
CHILD = "b = bytearray(60 << 20); b[::4096] = b'x' * len(b[::4096]); print('ready', flush=True); input()"
PARENT = (
    "import subprocess, sys\n"
    "b = bytearray(80 << 20); b[::4096] = b'x' * len(b[::4096])\n"
    f"child = subprocess.Popen([sys.executable, '-c', {CHILD!r}], stdin=sys.stdin, stdout=subprocess.PIPE, text=True)\n"
    "print(child.stdout.readline().strip(), flush=True)\n"
    "child.wait()\n"
)


def test_the_peak_is_the_sum_over_the_process_and_its_children():
    proc = subprocess.Popen([sys.executable, "-c", PARENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    tree = TreeRss(proc.pid, interval=3600)  # sampled by hand below
    try:
        assert proc.stdout.readline().strip() == "ready"
        pids = descendants(proc.pid)
        assert len(pids) == 2 and pids[0] == proc.pid
        now = tree.sample()
        assert now == pytest.approx(sum(rss_kib(p) for p in pids), rel=0.05)
        assert now >= (140 << 10)  # 80 + 60 MiB touched
        assert rss_kib(proc.pid) < now  # the parent alone is not the tree
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
    assert tree.stop() >= (140 << 10)
    assert descendants(proc.pid) == []
