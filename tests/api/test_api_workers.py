"""`forlop serve api` with FORLOP_HTTP_WORKERS=2: two API processes on one port, under one parent.

The API runs as `serve_forever` runs it in production, in a child process (less the topics
check and the outbox relay, which need a broker: the bench's API runs the same way).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from forlop.auth import SCOPE_READ, mint_dev_token
from forlop.config import load_settings
from forlop.storage import Store
from forlop_devtools.broker import free_port

SERVE = (
    "import sys; from forlop.config import load_settings; from app.bootstrap import Runtime; "
    "import app.serve as serve; {patch}"
    "sys.exit(serve.serve_forever(Runtime.from_settings(load_settings()), 'api', ensure_topics=False, "
    "relay_outbox=False))"
)
WORKER = re.compile(r'^forlop_http_worker\{(?=[^}]*pid="(\d+)")(?=[^}]*worker="(\d+)")', re.M)


def start(store: Store, tmp_path: Path, workers: int, patch: str = "") -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = dict(os.environ, FORLOP_DATABASE_URL=store.url.render_as_string(hide_password=False),
               FORLOP_DATA_DIR=str(tmp_path), FORLOP_HTTP_HOST="127.0.0.1", FORLOP_HTTP_PORT=str(port),
               FORLOP_HTTP_WORKERS=str(workers), FORLOP_LOG_LEVEL="INFO", FORLOP_LOG_FORMAT="text")
    proc = subprocess.Popen([sys.executable, "-c", SERVE.format(patch=patch)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return proc, port


def workers_seen(proc: subprocess.Popen, port: int, want: int, timeout: float = 30) -> dict[str, int]:
    """worker index -> pid, from /metrics scraped on new connections until `want` workers answered."""
    seen: dict[str, int] = {}
    deadline = time.monotonic() + timeout
    while len(seen) < want:
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, f"only workers {seen} answered"
        try:
            scrape = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
        except OSError:
            time.sleep(0.05)
            continue
        ((pid, index),) = WORKER.findall(scrape)  # each scrape names the one process that answered it
        seen[index] = int(pid)
    return seen


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def stop(proc: subprocess.Popen) -> tuple[int, str]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=30)[0]
    return proc.returncode, out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT spreading and /proc are Linux'")
def test_two_api_processes_share_the_port_and_sigterm_stops_both(sqlite_store, tmp_path):
    proc, port = start(sqlite_store, tmp_path, 2)
    try:
        pids = workers_seen(proc, port, 2)
        assert sorted(pids) == ["0", "1"] and len(set(pids.values())) == 2
        assert all(parent_of(pid) == proc.pid for pid in pids.values())  # forked by the one parent
        token = mint_dev_token(load_settings({"FORLOP_DATA_DIR": str(tmp_path)}), [SCOPE_READ])
        for _ in range(8):  # each process is a whole API: auth, the store, FHIR search
            request = urllib.request.Request(f"http://127.0.0.1:{port}/fhir/EpisodeOfCare?status=active",
                                             headers={"Authorization": f"Bearer {token}"})
            with urllib.request.urlopen(request, timeout=5) as resp:
                assert resp.status == 200
                assert resp.read().startswith(b'{"resourceType":"Bundle"')
    finally:
        started = time.monotonic()
        code, out = stop(proc)
    assert code == 0, out
    assert time.monotonic() - started < 15
    assert all(gone(pid) for pid in pids.values()), out
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT spreading and /proc are Linux'")
def test_a_dead_worker_is_started_again_and_the_parent_s_death_ends_the_workers(sqlite_store, tmp_path):
    proc, port = start(sqlite_store, tmp_path, 2)
    try:
        before = workers_seen(proc, port, 2)
        os.kill(before["0"], signal.SIGKILL)
        deadline = time.monotonic() + 20
        while (after := workers_seen(proc, port, 2)) == before:  # until the new worker 0 answers
            assert time.monotonic() < deadline
        assert after["0"] != before["0"] and after["1"] == before["1"]
        assert parent_of(after["0"]) == proc.pid
        # The parent killed outright: the workers get SIGTERM from the kernel and stop (no orphan on the port)
        proc.kill()
        proc.wait(10)
        deadline = time.monotonic() + 15
        while not all(gone(pid) for pid in after.values()):
            assert time.monotonic() < deadline, "a worker outlived its parent"
            time.sleep(0.05)
    finally:
        out = stop(proc)[1]
    assert f"API worker 0 (pid {before['0']}) exited with -9; starting it again" in out


def test_workers_that_keep_dying_stop_the_parent_with_an_error(sqlite_store, tmp_path):
    patch = "serve.ServiceProcess.build = lambda self: 1 / 0; "  # every worker fails at start
    proc, _ = start(sqlite_store, tmp_path, 2, patch)
    code, out = stop_when_done(proc, 30)
    assert code == 1, out
    assert "workers died within 60 s; stopping all of them" in out
    assert "ZeroDivisionError" in out  # the worker's own failure is logged


def stop_when_done(proc: subprocess.Popen, timeout: float) -> tuple[int, str]:
    try:
        out = proc.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        return stop(proc)
    return proc.returncode, out
