"""`forlop bench --quick` runs end to end and reports every figure the issue asks for (never timings)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from numbers import Number
from pathlib import Path

import pytest

from forlop_devtools.broker import broker_available

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.broker
@pytest.mark.postgres
@pytest.mark.skipif(not broker_available(), reason="the bundled broker is not installed")
def test_bench_quick_reports_every_section(tmp_path: Path) -> None:
    env = dict(os.environ, FORLOP_DATA_DIR=str(tmp_path), FORLOP_LOG_LEVEL="WARNING")
    env.pop("FORLOP_FHIR_VALIDATE", None)  # the bench measures the production setting
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "app.cli", "bench", "--quick", "--json", "--store", "both", "--out", str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=480,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert json.loads(out.read_text()) == report

    def number(value: object) -> None:
        assert isinstance(value, Number) and not isinstance(value, bool), value

    for store in ("sqlite", "postgresql"):
        ingest = report["ingest"][store]
        number(ingest["events_per_s"])
        for q in ("p50", "p95", "p99"):
            number(ingest["latency_ms"][q])
            number(ingest["at_offered_load"]["latency_ms"][q])
            number(ingest["below_capacity"]["latency_ms"][q])
        # whose CPU an event costs, per process (the services run as separate processes by default)
        cpu = ingest["cpu_ms_per_event"]
        expected = {"pathway", "ingest", "broker", "load_generator", "all"} | ({"postgresql"} if store == "postgresql" else set())
        assert set(cpu) == expected, cpu
        for ms in cpu.values():
            number(ms)
        assert cpu["pathway"] > 0 and cpu["all"] == pytest.approx(sum(v for g, v in cpu.items() if g != "all"), abs=0.01)
    for key in ("events", "events_per_s", "peak_rss_mb", "main_process_peak_rss_mb"):
        number(report["replay"][key])
    assert report["replay"]["peak_rss_mb"] >= report["replay"]["main_process_peak_rss_mb"] > 0
    assert isinstance(report["replay"]["workers"], int)
    assert isinstance(report["replay"]["xsd_validated"], bool)
    for key in ("pathways", "seconds"):
        number(report["scan"][key])
    assert report["scan"]["pathways"] >= 200  # open pathways, topped up to the quick target
    for key in ("clients", "requests_per_s", "p50_ms", "p99_ms"):
        number(report["search"][key])
    assert report["search"]["processes"] == 2 and report["search"]["errors"] == 0  # the API as 2 processes
    number(report["messaging"]["messages_per_s"])
    machine = report["machine"]
    number(machine["cores"])
    number(machine["memory_mb"])
    assert machine["versions"]["forlop"]
