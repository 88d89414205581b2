"""`forlop bench`: how fast and how big, end to end, printed as a table and written as JSON.

Sections: ingest through Kafka into each store (throughput and produce-to-status
latency), replay of a large file (throughput, peak RSS), one deadline-scanner
pass and the indicators over many open pathways, FHIR search and worklist under
concurrent load from a separate process, and messaging throughput. `--quick`
runs the same code on small sizes (the test suite runs it; it never asserts timings).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.metadata as md
import json
import logging
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, func, select, text, update

from app.bootstrap import Runtime
from app.replay.workers import default_count
from app.serve import ServiceProcess
from forlop.auth import SCOPE_READ, mint_dev_token
from forlop.clock import FixedClock, system_clock
from forlop.config import Settings, load_settings
from forlop.fhir import ids
from forlop.kafka import make_producer
from forlop.storage import Store, schema
from forlop_devtools.broker import EmbeddedBroker, free_port
from forlop_devtools.messaging_bench import messages_per_second
from forlop_devtools.process_cpu import CpuMeter, TreeRss
from forlop_devtools.synthetic import iter_generate
from services.pathway.public import compute_indicators, scan

POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def _machine() -> dict[str, Any]:
    mem = 0
    try:
        with open("/proc/meminfo") as fp:
            mem = int(fp.readline().split()[1]) // 1024
    except OSError:
        pass
    versions = {}
    for pkg in ("forlop", "kafka-python", "SQLAlchemy", "Flask", "psycopg", "fhir.resources", "lxml"):
        with contextlib.suppress(md.PackageNotFoundError):
            versions[pkg] = md.version(pkg)
    return {
        "cores": os.cpu_count(),
        "memory_mb": mem,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


def _write_events(path: Path, vendor: str, pathways: int, seed: int, as_of: datetime) -> int:
    n = 0
    with path.open("w", encoding="utf-8") as fp:
        for ev in iter_generate(vendor, pathways, seed, as_of=as_of):
            fp.write(json.dumps(ev, ensure_ascii=False))
            fp.write("\n")
            n += 1
    return n


def _fresh_store_url(kind: str, workdir: Path, tag: str) -> tuple[str, Any]:
    """A database for one section; returns (url, cleanup)."""
    if kind == "sqlite":
        db = workdir / f"{tag}.db"
        return f"sqlite:///{db}", lambda: None

    schema_name = f"bench_{tag}_{os.getpid()}"
    admin = create_engine(POSTGRES_URL.replace("postgresql://", "postgresql+psycopg://", 1))
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema_name}" CASCADE'))
        conn.execute(text(f'CREATE SCHEMA "{schema_name}"'))

    def cleanup() -> None:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema_name}" CASCADE'))
        admin.dispose()

    # application_name marks the run's backends: the bench reads their CPU time (`_ingest_cpu`)
    return f"{POSTGRES_URL}?options=-csearch_path%3D{schema_name}&application_name={schema_name}", cleanup


# --- 1. ingest through Kafka ---------------------------------------------------------------------
GENERATOR_TICK_S = 0.01  # at offered load, events due this close together are produced together


def _spawn_services(settings: Settings, url: str, workdir: Path, consumers: int) -> list[subprocess.Popen]:
    """`consumers` replicas each of `forlop serve ingest` and `forlop serve pathway`, as separate OS processes."""

    procs: list[subprocess.Popen] = []
    for service in ("ingest", "pathway"):
        for i in range(consumers):
            port = free_port()
            env = dict(
                os.environ,
                FORLOP_DATABASE_URL=url,
                FORLOP_DATA_DIR=str(workdir),
                FORLOP_KAFKA_BOOTSTRAP=settings.kafka_bootstrap,
                FORLOP_TOPIC_PARTITIONS=str(settings.partitions),
                FORLOP_MAX_POLL_INTERVAL_MS=str(settings.max_poll_interval_ms),
                FORLOP_HTTP_HOST="127.0.0.1",
                FORLOP_HTTP_PORT=str(port),
                FORLOP_LOG_LEVEL="WARNING",
            )
            log = open(workdir / f"serve-{service}-{i}.log", "wb")  # noqa: SIM115 - the child keeps it
            proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", service], env=env,
                                    stdout=log, stderr=subprocess.STDOUT)
            proc.port = port  # type: ignore[attr-defined]
            procs.append(proc)

    deadline = time.time() + 90
    for proc in procs:
        while time.time() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"a bench service exited with {proc.returncode}; see {workdir}/serve-*.log")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{proc.port}/readyz", timeout=2).read()  # type: ignore
                break
            except (OSError, urllib.error.HTTPError):
                time.sleep(0.2)
    return procs


def bench_ingest(
    kind: str, events: list[tuple[str, dict]], rate: float | None, workdir: Path, consumers: int = 0,
    partitions: int = 4,
) -> dict[str, Any]:
    """Produce vendor events to the broker and wait until every event's status is stored.

    consumers=0 runs the ingest and pathway services on threads of this process (one GIL with
    the producer); consumers=N runs N replicas of each as separate `forlop serve` processes.
    """

    url, cleanup = _fresh_store_url(kind, workdir, f"ingest_{kind}_{int(rate or 0)}_{consumers}")
    procs: list[ServiceProcess] = []
    children: list[subprocess.Popen] = []
    with EmbeddedBroker(log_dir=workdir) as broker:
        settings = replace(
            load_settings({"FORLOP_DATA_DIR": str(workdir)}),
            database_url=url,
            kafka_bootstrap=broker.bootstrap,
            # A batch on SQLite can wait for the other service's write lock: a short interval would
            # evict the consumer mid-run and stall the measurement in rebalances.
            max_poll_interval_ms=60_000,
            http_host="127.0.0.1",
            http_port=0,
            partitions=partitions,
        )
        store = Store(url)
        store.migrate()
        rt = Runtime(settings, store)
        rt.ensure_topics()
        try:
            if consumers:
                children = _spawn_services(settings, url, workdir, consumers)
            else:
                for service in ("ingest", "pathway"):
                    procs.append(ServiceProcess(Runtime(settings, store), service, relay_outbox=True).build().start())
            for p in procs:
                for w in p.workers:
                    if hasattr(w, "joined"):
                        w.joined.wait(30)
            producer = make_producer(settings)
            meter = _ingest_cpu(store, broker, children)
            meter.start()
            sent_at: dict[str, float] = {}
            started = time.time()
            for i, (vendor, ev) in enumerate(events):
                if rate:
                    due = started + i / rate
                    pause = due - time.time()
                    # Sleep only when a tick or more ahead: the events due within a tick go out
                    # together (latency counts from each one's send). A sleep per event cost the
                    # generator CPU taken from the services on the same machine (docs/performance.md).
                    if pause > GENERATOR_TICK_S:
                        time.sleep(pause)
                topic = settings.topics.dips if vendor == "dips" else settings.topics.esp
                key = ev["patient"]["nationalId"] if vendor == "dips" else ev["fodselsnummer"]
                eid = f"{vendor}:{ev['eventId'] if vendor == 'dips' else ev['meldingsId']}"
                sent_at.setdefault(eid, time.time())
                producer.send(topic, key=key.encode(), value=json.dumps(ev).encode())
            producer.flush()
            unique = len(sent_at)
            deadline = time.time() + 600
            e = schema.pathway_events
            while time.time() < deadline:
                with store.read() as conn:
                    done = conn.execute(select(func.count()).select_from(e)).scalar_one()
                if done >= unique:
                    break
                # The count reads the whole growing table on the database the services use: polled
                # often, it took a share of a core from them (docs/performance.md). Latencies come
                # from stored_at, so only the end of the run is this coarse.
                time.sleep(0.25)
            finished = time.time()
            cpu = meter.stop()  # empty where there is no /proc
            with store.read() as conn:
                stored = {row.event_id: row.stored_at for row in conn.execute(select(e.c.event_id, e.c.stored_at))}
            latencies = []
            for eid, t0 in sent_at.items():
                at = stored.get(eid)
                if at is not None:
                    at = at if at.tzinfo else at.replace(tzinfo=UTC)
                    latencies.append(max(0.0, (at.timestamp() - t0) * 1000))
            producer.close()
        finally:
            for p in procs:
                p.stop()
            for child in children:
                child.terminate()
            for child in children:
                try:
                    child.wait(15)
                except subprocess.TimeoutExpired:
                    child.kill()
            store.dispose()
            cleanup()
    return {
        "store": kind,
        "consumers": consumers or "in-process",
        "partitions": partitions,
        "events": len(events),
        "offered_per_s": rate,
        "events_per_s": round(len(events) / max(1e-9, finished - started), 1),
        "latency_ms": {
            "p50": round(_pct(latencies, 0.50), 1),
            "p95": round(_pct(latencies, 0.95), 1),
            "p99": round(_pct(latencies, 0.99), 1),
        },
        # CPU per event from the first event produced until the last status stored, per process group
        # (Linux); "all" is their sum. On a shared machine throughput is this figure against the cores.
        "cpu_ms_per_event": {
            group: round(seconds * 1000 / max(1, len(events)), 3)
            for group, seconds in ({**cpu, "all": sum(cpu.values())} if cpu else {}).items()
        },
    }


def _ingest_cpu(store: Any, broker: Any, children: list[subprocess.Popen]) -> Any:
    """A CPU meter over an ingest run's processes: the service replicas (or, with the services on
    threads, this process), the broker, the run's PostgreSQL backends and this process (the load
    generator and its completion poll)."""

    def groups() -> dict[str, list[int]]:
        out: dict[str, list[int]] = {"broker": [broker.pid] if broker.pid else []}
        for child in children:
            service = child.args[-1]  # [python, -m, app.cli, serve, <service>]
            out.setdefault(service, []).append(child.pid)
        out["load_generator" if children else "bench_process"] = [os.getpid()]
        if store.dialect == "postgresql":
            with store.read() as conn:
                out["postgresql"] = list(conn.execute(text(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = current_setting('application_name')"
                )).scalars())
        return out

    return CpuMeter(groups, expect={"postgresql": "postgres"})


# --- 2. replay -----------------------------------------------------------------------------------
def bench_replay(pathways: int, workdir: Path, as_of: datetime, workers: int | None = None) -> tuple[dict[str, Any], str]:
    workers = default_count() if workers is None else workers  # `forlop replay`'s own default
    path = workdir / "replay-dips.ndjson"
    n = _write_events(path, "dips", pathways, 7, as_of)
    db = workdir / "replay.db"
    env = dict(os.environ, FORLOP_DATABASE_URL=f"sqlite:///{db}", FORLOP_DATA_DIR=str(workdir),
               FORLOP_CLOCK=as_of.isoformat(), FORLOP_LOG_LEVEL="WARNING")
    # Every message XSD-validated as in production (the shipped schemas, or FORLOP_XSD_DIR's).
    xsd = load_settings().xsd_dir
    env["FORLOP_XSD_DIR"] = xsd
    out, err = workdir / "replay.out", workdir / "replay.err"
    started = time.perf_counter()
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "replay", "--source", "dips", str(path), "--quiet",
             "--batch-size", "5000", "--workers", str(workers)],
            env=env, stdout=stdout, stderr=stderr,
        )
        # The replay and its worker processes together (`--workers`), sampled; and wait4: the
        # replay process's own exact peak (RUSAGE_CHILDREN would be the largest child so far, e.g.
        # an ingest service of an earlier section)
        tree = TreeRss(proc.pid)
        _, wait_status, usage = os.wait4(proc.pid, 0)
        tree_kib = tree.stop()
        proc.returncode = os.waitstatus_to_exitcode(wait_status)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"replay failed: {err.read_text()[-2000:]}")
    peak_kb = max(usage.ru_maxrss, tree_kib)
    return {
        "events": n,
        "seconds": round(seconds, 2),
        "events_per_s": round(n / seconds, 1),
        "peak_rss_mb": round(peak_kb / 1024, 1),  # all its processes together
        "main_process_peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "workers": workers,
        "xsd_validated": bool(xsd),
        "summary": out.read_text().strip(),
    }, f"sqlite:///{db}"


# --- 3. deadline scan and indicators ---------------------------------------------------------------
OPEN = ("waitlist", "active")


def _clone_open_pathways(store: Any, target: int) -> int:
    """Copy the open pathways (events, status rows, FHIR resources) under new pathway ids until `target` are open.

    The generator finishes most pathways; the scanner is measured over open ones, so the
    replayed database is topped up with copies of its open pathways ("<id>~c<n>"): the same
    histories under their own keys and event ids, the status rows, EpisodeOfCare and Tasks
    (with their search index) and alerts that deriving and mapping those histories would have
    stored (tests/devtools/test_clone.py). SQLite only (the replay database).

    The search index's table has no index of its own to fill copy by copy since migration 8 (its
    two indexes were dropped here while the copies went in: filled copy by copy, nearly every page
    was written again per copy: docs/performance.md).
    """

    p = schema.pathways
    with store.read() as conn:
        open_n = conn.execute(select(func.count()).select_from(p).where(p.c.episode_status.in_(OPEN))).scalar_one()
    copies = 0
    while open_n and open_n * (copies + 1) < target:
        copies += 1
    if not copies:
        return open_n
    with store.engine.connect() as conn:  # one connection: the temporary tables live as long as it
        with conn.begin():
            cache = conn.exec_driver_sql("PRAGMA cache_size").scalar_one()
            conn.exec_driver_sql("PRAGMA cache_size=-1048576")  # 1 GiB while copying; as it was after
            _clone_index_rows(conn)
        try:
            for n in range(1, copies + 1):
                with conn.begin():  # a copy per transaction: SQLite's WAL stays one copy big
                    _clone_pathway_rows(conn, f"~c{n}")
                    _clone_fhir(conn, n)
        finally:
            with conn.begin():
                conn.exec_driver_sql("DROP TABLE temp.clone_index")
                conn.exec_driver_sql(f"PRAGMA cache_size={cache}")
    return open_n * (copies + 1)


# The open pathways the copies are made of (`p`: the pathways table), never a copy.
_ORIGINAL_OPEN = "p.episode_status IN ('waitlist', 'active') AND p.pathway_key NOT LIKE '%~c%'"


def _clone_index_rows(conn: Any) -> None:
    """temp.clone_index: the open originals' search index rows (what `_clone_fhir` copies)."""
    # One pass over the index, each row's resource and pathway by their keys (CROSS JOIN keeps that
    # order): the index has no index by resource, so the other way round reads a type's rows per resource.
    conn.exec_driver_sql(
        "CREATE TEMP TABLE clone_index AS SELECT i.resource_type, i.id, i.param, i.value "
        "FROM fhir_search_index i CROSS JOIN fhir_resources r ON r.resource_type = i.resource_type AND r.id = i.id "
        f"CROSS JOIN pathways p ON p.pathway_key = r.pathway_key WHERE {_ORIGINAL_OPEN}"
    )
    conn.exec_driver_sql("CREATE INDEX temp.ix_clone_index ON clone_index (resource_type, id, param, value)")


def _clone_pathway_rows(conn: Any, suffix: str) -> None:
    """Copy the open originals' events, status rows and alerts under the keys and ids with `suffix`."""

    conn.exec_driver_sql(
        "INSERT INTO pathway_events (event_id, pathway_key, kind, occurred_on, recorded_at, stored_at, event) "
        "SELECT e.event_id || :s, e.pathway_key || :s, e.kind, e.occurred_on, e.recorded_at, e.stored_at, "
        "json_set(e.event, '$.event_id', json_extract(e.event, '$.event_id') || :s, "
        "'$.pathway_id', json_extract(e.event, '$.pathway_id') || :s, "
        "'$.registration_id', json_extract(e.event, '$.registration_id') || :s, "
        "'$.withdraws', CASE WHEN json_extract(e.event, '$.withdraws') IS NULL THEN NULL "
        "ELSE json_extract(e.event, '$.withdraws') || :s END) "
        f"FROM pathway_events e JOIN pathways p ON p.pathway_key = e.pathway_key WHERE {_ORIGINAL_OPEN}",
        {"s": suffix},
    )
    _clone_statuses(conn, suffix)
    cols = [c.name for c in schema.pathways.columns
            if c.name not in ("pathway_key", "pathway_id", "status", "history_hash")]
    conn.exec_driver_sql(
        f"INSERT INTO pathways (pathway_key, pathway_id, status, history_hash, {', '.join(cols)}) "
        f"SELECT p.pathway_key || :s, p.pathway_id || :s, c.status, c.history_hash, "
        f"{', '.join('p.' + c for c in cols)} FROM pathways p JOIN temp.clone_status c "
        f"ON c.pathway_key = p.pathway_key WHERE {_ORIGINAL_OPEN}",
        {"s": suffix},
    )
    conn.exec_driver_sql("DROP TABLE temp.clone_status")
    conn.exec_driver_sql(
        "INSERT INTO alerts (alert_key, pathway_key, milestone_key, to_status, emitted_at) "
        "SELECT a.pathway_key || :s || substr(a.alert_key, length(a.pathway_key) + 1), "
        "a.pathway_key || :s, a.milestone_key, a.to_status, a.emitted_at "
        f"FROM alerts a JOIN pathways p ON p.pathway_key = a.pathway_key WHERE {_ORIGINAL_OPEN}",
        {"s": suffix},
    )


def _clone_statuses(conn: Any, suffix: str) -> None:
    """temp.clone_status: each original's stored status with its pathway key, pathway id and event ids
    suffixed (whole JSON strings, in the stored text), and the history hash of the suffixed event ids."""

    events: dict[str, list[str]] = {}
    for key, event_id in conn.exec_driver_sql(
        f"SELECT e.pathway_key, e.event_id FROM pathway_events e JOIN pathways p ON p.pathway_key = e.pathway_key "
        f"WHERE {_ORIGINAL_OPEN}"
    ):
        events.setdefault(key, []).append(event_id)
    rows = []
    for key, pathway_id, status in conn.exec_driver_sql(
        f"SELECT p.pathway_key, p.pathway_id, p.status FROM pathways p WHERE {_ORIGINAL_OPEN}"
    ):
        mine = events.get(key, [])
        for old in (key, pathway_id, *mine):
            status = status.replace(f'"{old}"', f'"{old}{suffix}"')
        history_hash = hashlib.sha256("\n".join(sorted(e + suffix for e in mine)).encode()).hexdigest()
        rows.append((key, status, history_hash))
    conn.exec_driver_sql("CREATE TEMP TABLE clone_status (pathway_key TEXT PRIMARY KEY, status TEXT, history_hash TEXT)")
    conn.exec_driver_sql("INSERT INTO temp.clone_status VALUES (?, ?, ?)", rows)


def _clone_fhir(conn: Any, n: int) -> None:
    """Copy n's EpisodeOfCare and Tasks, in SQL: the originals' rows with the pathway's ids and keys replaced.

    The rows mapping the copy would store, as the per-resource Python copy this replaced made them
    (tests/devtools/test_clone.py holds the two side by side): the new ids come from `forlop.fhir.ids` for
    the new key (computed here, into a temporary table, like the old ids they replace); the JSON text is
    the original's with replace() of the EpisodeOfCare id, the pathway id (a whole JSON string), the
    "<key>/" of the milestone identifier and the resource's own id (no resource names another Task of
    its pathway); the search index rows are the original's (temp.clone_index, `_clone_index_rows`) with
    the values that hold those ids replaced alike (EpisodeOfCare identifier: the pathway id alone and
    after its system; Task focus: the EpisodeOfCare id).

    The resources go in in new-id order (the temporary table's rowid), one walk over the table's
    key index; CROSS JOIN keeps SQLite reading the originals by key from the temporary table.
    """

    s = f"~c{n}"
    rows, episode = [], {}
    for rtype, rid, key, pathway_id, identifier in conn.exec_driver_sql(
        "SELECT r.resource_type, r.id, r.pathway_key, p.pathway_id, json_extract(r.resource, '$.identifier[0].value') "
        f"FROM fhir_resources r JOIN pathways p ON p.pathway_key = r.pathway_key WHERE {_ORIGINAL_OPEN}"
    ):
        new_key = key + s
        if key not in episode:
            episode[key] = (ids.episode_id(key), ids.episode_id(new_key))
        old_ep, new_ep = episode[key]
        new_id = (ids.task_id(new_key, identifier.rsplit("/", 1)[1]) if rtype == "Task"
                  else rid.replace(old_ep, new_ep))
        rows.append((rtype, rid, new_id, new_key, old_ep, new_ep, f'"{pathway_id}"', f'"{pathway_id}{s}"',
                     f'"{key}/', f'"{new_key}/', pathway_id, pathway_id + s))
    rows.sort(key=lambda row: (row[0], row[2]))
    conn.exec_driver_sql(
        "CREATE TEMP TABLE clone_ids (resource_type TEXT, old_id TEXT, new_id TEXT, new_key TEXT, old_ep TEXT, "
        "new_ep TEXT, old_pid_q TEXT, new_pid_q TEXT, old_key_q TEXT, new_key_q TEXT, old_pid TEXT, new_pid TEXT, "
        "PRIMARY KEY (resource_type, old_id))"
    )
    conn.exec_driver_sql("INSERT INTO temp.clone_ids VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    conn.exec_driver_sql(
        "INSERT INTO fhir_resources (resource_type, id, pathway_key, version_id, last_updated, resource) "
        "SELECT r.resource_type, m.new_id, m.new_key, r.version_id, r.last_updated, "
        "replace(replace(replace(replace(r.resource, m.old_ep, m.new_ep), m.old_pid_q, m.new_pid_q), "
        "m.old_key_q, m.new_key_q), m.old_id, m.new_id) "
        "FROM temp.clone_ids m CROSS JOIN fhir_resources r ON r.resource_type = m.resource_type AND r.id = m.old_id "
        "ORDER BY m.rowid"
    )
    conn.exec_driver_sql(
        "INSERT INTO fhir_search_index (resource_type, id, param, value) "
        "SELECT i.resource_type, m.new_id, i.param, substr(CASE "
        "WHEN i.value = m.old_pid THEN m.new_pid "
        "WHEN substr(i.value, -length(m.old_pid) - 1) = '|' || m.old_pid "
        "THEN substr(i.value, 1, length(i.value) - length(m.old_pid)) || m.new_pid "
        "ELSE replace(i.value, m.old_ep, m.new_ep) END, 1, 300) "
        "FROM temp.clone_ids m CROSS JOIN temp.clone_index i ON i.resource_type = m.resource_type AND i.id = m.old_id"
    )
    conn.exec_driver_sql("DROP TABLE temp.clone_ids")


def bench_scan(url: str, as_of: datetime, open_target: int = 0) -> dict[str, Any]:
    """Deadline-scanner passes over the open pathways, then the indicators over all pathways.

    Two passes: the daily one (the clock one day on, the pathways whose next threshold came
    are due: the scanner's everyday work) and a worst case in which every open pathway is due
    at once, 30 days on (e.g. after the scanner was down for a month).
    """

    store = Store(url)
    settings = replace(load_settings(), database_url=url)
    rt = Runtime(settings, store, FixedClock(as_of + timedelta(days=31)))  # the indicators' clock
    p = schema.pathways
    replayed_open = clone_seconds = None
    if open_target:
        with store.read() as conn:
            replayed_open = conn.execute(
                select(func.count()).select_from(p).where(p.c.episode_status.in_(OPEN))
            ).scalar_one()
        clone_started = time.perf_counter()
        _clone_open_pathways(store, open_target)
        clone_seconds = round(time.perf_counter() - clone_started, 2)
    with store.read() as conn:
        open_n = conn.execute(select(func.count()).select_from(p).where(p.c.episode_status.in_(OPEN))).scalar_one()

    def one_pass(now: datetime) -> tuple[float, int, int]:
        started, refreshed, changed = time.perf_counter(), 0, 0
        while True:
            with store.transaction() as conn:
                result = scan(conn, now, rt.pathway_deps, limit=5000)
            refreshed += len(result.refreshed)
            changed += result.status_changes
            if not result.refreshed:
                return time.perf_counter() - started, refreshed, changed

    daily_s, daily_n, daily_changed = one_pass(as_of + timedelta(days=1))
    with store.transaction() as conn:
        conn.execute(update(p).where(p.c.episode_status.in_(OPEN)).values(next_check_on=as_of.date()))
    seconds, refreshed, changed = one_pass(as_of + timedelta(days=31))
    ind_started = time.perf_counter()
    indicator_rows = _indicators(rt)
    ind_seconds = time.perf_counter() - ind_started
    store.dispose()
    return {
        "pathways": open_n,
        "replayed_open": replayed_open,
        "clone_seconds": clone_seconds,  # copying the replayed open pathways up to open_target
        "refreshed": refreshed,
        "status_changes": changed,
        "seconds": round(seconds, 2),
        "daily": {"due": daily_n, "status_changes": daily_changed, "seconds": round(daily_s, 2)},
        "indicators_seconds": round(ind_seconds, 2),
        "indicator_rows": indicator_rows,
    }


def _indicators(rt: Runtime) -> int:
    return len(compute_indicators(rt.store, rt.clock(), None, None, "pathwayType"))


# --- 4. API under load -------------------------------------------------------------------------
_LOAD_CLIENT = r"""
import json, selectors, socket, sys, time
port, token, clients, per_client = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
paths = json.loads(sys.argv[5])
# One thread, one selector, `clients` keep-alive connections each with one request outstanding
# (closed loop), a latency from the request's send to its response's last byte. No client threads
# competing for a GIL (http.client on threads took CPU per request the server needed, on the same
# cores: docs/performance.md), so a latency is the server's rather than the client's scheduling.
REQUESTS = [(p, f"GET {p} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept-Encoding: identity\r\n"
                f"Authorization: Bearer {token}\r\n\r\n".encode()) for p in paths]
TIMEOUT = 30.0
sel = selectors.DefaultSelector()
lat, errors = [], []

class Client:
    def __init__(self, i):
        self.i, self.j, self.sock = i, 0, None

    def connect(self):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        sel.register(self.sock, selectors.EVENT_READ, self)

    def drop(self):
        if self.sock is not None:
            sel.unregister(self.sock)
            self.sock.close()
            self.sock = None

    def send(self):
        # the next request, or done; a failed request is counted and the next goes on a new connection
        while self.j < per_client:
            self.path, request = REQUESTS[(self.i + self.j) % len(REQUESTS)]
            self.j += 1
            self.buf, self.head, self.length = bytearray(), None, None
            try:
                if self.sock is None:
                    self.connect()
                self.t0 = time.perf_counter()
                self.deadline = self.t0 + TIMEOUT
                self.sock.sendall(request)  # small: fits the socket buffer
                return True
            except OSError as exc:
                self.fail(exc)
        return False

    def fail(self, exc):
        errors.append(f"{self.path}: {exc!r}"[:300])
        self.drop()

    def readable(self):
        try:
            data = self.sock.recv(262144)
            if not data:
                raise ConnectionError("connection closed by the server")
            self.buf += data
            if self.head is None:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return False
                head = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
                self.status = int(head[0].split(" ", 2)[1])
                fields = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:])}
                if "content-length" not in fields:
                    raise RuntimeError("response without Content-Length")
                self.head, self.length = end + 4, int(fields["content-length"])
                self.close = fields.get("connection", "").lower() == "close"
            if len(self.buf) < self.head + self.length:
                return False
            if len(self.buf) > self.head + self.length:
                raise RuntimeError("more bytes than the response's Content-Length")
            elapsed = (time.perf_counter() - self.t0) * 1000
            if self.status != 200:
                raise RuntimeError(f"HTTP {self.status}")
            lat.append(elapsed)
            if self.close:
                self.drop()
        except Exception as exc:
            self.fail(exc)
        return True

start = time.perf_counter()
active = {}
for i in range(clients):
    c = Client(i)
    if c.send():
        active[c] = True
while active:
    events = sel.select(1.0)
    for key, _ in events:
        c = key.data
        if c in active and c.readable():
            if not c.send():
                del active[c]
    now = time.perf_counter()
    for c in [c for c in active if now > c.deadline]:
        c.fail(TimeoutError("timed out"))
        if not c.send():
            del active[c]
print(json.dumps({"seconds": time.perf_counter() - start, "latencies": lat, "errors": errors}))
"""


def bench_api(url: str, workdir: Path, clients: int, per_client: int, processes: int = 1) -> dict[str, Any]:
    """`clients` closed-loop clients (keep-alive connections of one load process, one request outstanding
    on each, `per_client` requests each) against the API as `processes` processes (FORLOP_HTTP_WORKERS)."""

    port = free_port()
    settings = load_settings({"FORLOP_DATA_DIR": str(workdir)})
    token = mint_dev_token(settings, [SCOPE_READ], ttl_s=3600)
    env = dict(os.environ, FORLOP_DATABASE_URL=url, FORLOP_DATA_DIR=str(workdir), FORLOP_HTTP_PORT=str(port),
               FORLOP_HTTP_HOST="127.0.0.1", FORLOP_LOG_LEVEL="WARNING", FORLOP_HTTP_WORKERS=str(processes))
    # The API as production runs it (`forlop serve api`: FORLOP_HTTP_WORKERS processes, each its HTTP
    # server, worker threads and metrics worker) less the topics check and the outbox relay, which
    # need a broker; stopped by SIGTERM.
    code = (
        "import sys; from forlop.config import load_settings; from app.bootstrap import Runtime; "
        "from app.serve import serve_forever; "
        "sys.exit(serve_forever(Runtime.from_settings(load_settings()), 'api', ensure_topics=False, "
        "relay_outbox=False))"
    )
    server_log = open(workdir / "api-server.log", "wb")  # noqa: SIM115 - closed below; a pipe nobody reads could fill
    server = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=server_log, stderr=subprocess.STDOUT)
    try:
        # Every process up before the load starts: each scrape lands on one of them (a new connection
        # each time, spread by the kernel), and names it.
        deadline, seen = time.time() + 60, set()
        while len(seen) < processes:
            if server.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"the bench's API did not start {processes} process(es) (up: {sorted(seen)}); "
                                   f"see {workdir / 'api-server.log'}")
            try:
                scrape = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1).read().decode()
                seen |= set(re.findall(r'^forlop_http_worker\{[^}]*worker="(\d+)"', scrape, re.M))
            except OSError:
                time.sleep(0.1)
        paths = [
            "/fhir/EpisodeOfCare?status=active&_count=20",
            "/fhir/Task?business-status=overdue&_count=20",
            "/fhir/EpisodeOfCare?type=D11&status=waitlist&_count=20",
            "/worklist?unit=8140712",
        ]
        out = subprocess.run(
            [sys.executable, "-c", _LOAD_CLIENT, str(port), token, str(clients), str(per_client), json.dumps(paths)],
            capture_output=True, text=True, timeout=900,
        )
        if out.returncode != 0:
            raise RuntimeError(f"load client failed: {out.stderr[-2000:]} {out.stdout[-500:]}")
        result = json.loads(out.stdout)
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        server_log.close()
    lat = result["latencies"]
    return {
        "clients": clients,
        "processes": processes,
        "requests": len(lat),
        "errors": len(result["errors"]),
        "requests_per_s": round(len(lat) / result["seconds"], 1),
        "p50_ms": round(_pct(lat, 0.5), 2),
        "p99_ms": round(_pct(lat, 0.99), 2),
    }


# --- 5. messaging ---------------------------------------------------------------------------------
def bench_messaging(workdir: Path, count: int) -> dict[str, Any]:
    return messages_per_second(workdir, count)


# --- the command ---------------------------------------------------------------------------------
def run_bench(quick: bool, stores: list[str], out_json: Path | None, consumers: int = 1,
              scaling: bool = False, api_processes: int = 2) -> dict[str, Any]:
    as_of = system_clock()
    sizes = (
        {"ingest_pathways": 20, "latency_rate": 200.0, "latency_pathways": 10, "replay_pathways": 150,
         "api_clients": 8, "api_per_client": 10, "messages": 50, "scan_open": 200,
         "calm_rate": 50.0, "calm_pathways": 5}
        if quick
        else {"ingest_pathways": 2500, "latency_rate": 500.0, "latency_pathways": 1000, "replay_pathways": 150_000,
              "api_clients": 32, "api_per_client": 150, "messages": 2000, "scan_open": 200_000,
              "calm_rate": 100.0, "calm_pathways": 150}
    )

    def mix(pathways: int) -> list[tuple[str, dict]]:
        evs = [("dips", e) for e in iter_generate("dips", pathways, 11, as_of=as_of)]
        evs += [("esp", e) for e in iter_generate("esp", pathways, 12, as_of=as_of)]
        evs.sort(key=lambda pair: pair[1].get("recordedTime") or pair[1].get("registrertTid") or "")
        return evs

    report: dict[str, Any] = {"quick": quick, "machine": _machine(), "ingest": {}}
    with tempfile.TemporaryDirectory(prefix="forlop-bench-") as tmp:
        workdir = Path(tmp)
        for kind in stores:
            report["ingest"][kind] = bench_ingest(kind, mix(sizes["ingest_pathways"]), None, workdir, consumers)
            report["ingest"][kind]["at_offered_load"] = bench_ingest(
                kind, mix(sizes["latency_pathways"]), sizes["latency_rate"], workdir, consumers
            )
            # The same pipeline below its capacity: latency without a queue in front of it.
            report["ingest"][kind]["below_capacity"] = bench_ingest(
                kind, mix(sizes["calm_pathways"]), sizes["calm_rate"], workdir, consumers
            )
        if scaling:  # throughput with 1, 2 and 4 replicas of each consumer service (PostgreSQL, 4 partitions)
            report["scaling"] = [
                {k: v for k, v in bench_ingest("postgresql", mix(sizes["ingest_pathways"]), None, workdir, n).items()
                 if k in ("consumers", "partitions", "events", "events_per_s")}
                for n in (1, 2, 4)
            ]
        replay, url = bench_replay(sizes["replay_pathways"], workdir, as_of)
        report["replay"] = replay
        report["scan"] = bench_scan(url, as_of, sizes["scan_open"])
        report["search"] = bench_api(url, workdir, sizes["api_clients"], sizes["api_per_client"], api_processes)
        report["messaging"] = bench_messaging(workdir, sizes["messages"])
    if out_json:
        out_json.write_text(json.dumps(report, indent=2))
    return report


def print_table(report: dict[str, Any], out=sys.stdout) -> None:  # noqa: ANN001
    out.write(f"{'section':<34} {'figure':>14}  unit\n")
    for kind, r in report["ingest"].items():
        out.write(f"{'ingest via Kafka, ' + kind:<34} {r['events_per_s']:>14,.0f}  events/s ({r['events']} events)\n")
        cpu = r.get("cpu_ms_per_event") or {}
        if cpu:
            parts = ", ".join(f"{group} {ms:.2f}" for group, ms in cpu.items() if group != "all")
            out.write(f"{'  CPU per event, all processes':<34} {cpu['all']:>14,.2f}  ms ({parts})\n")
        for lo in (r["at_offered_load"], r["below_capacity"]):
            for q in ("p50", "p95", "p99"):
                out.write(f"{'  latency at ' + str(int(lo['offered_per_s'])) + '/s ' + q:<34} "
                          f"{lo['latency_ms'][q]:>14,.1f}  ms produce->status\n")
    rp = report["replay"]
    out.write(f"{'replay':<34} {rp['events_per_s']:>14,.0f}  events/s ({rp['events']} events, "
              f"{rp['workers']} worker processes)\n")
    out.write(f"{'replay peak RSS':<34} {rp['peak_rss_mb']:>14,.1f}  MiB (all its processes; the replay "
              f"process alone {rp['main_process_peak_rss_mb']:,.1f})\n")
    sc = report["scan"]
    out.write(f"{'deadline scan, daily pass':<34} {sc['daily']['seconds']:>14,.2f}  s for {sc['daily']['due']} due of "
              f"{sc['pathways']} open pathways\n")
    out.write(f"{'deadline scan, all due':<34} {sc['seconds']:>14,.2f}  s for {sc['pathways']} open pathways\n")
    out.write(f"{'indicators':<34} {sc['indicators_seconds']:>14,.2f}  s\n")
    se = report["search"]
    procs = se.get("processes", 1)
    api = f"API, {se['clients']} clients, {procs} process{'es' if procs != 1 else ''}"
    out.write(f"{api:<34} {se['requests_per_s']:>14,.0f}  requests/s\n")
    out.write(f"{'  p50 / p99':<34} {se['p50_ms']:>7,.1f}/{se['p99_ms']:<6,.1f}  ms\n")
    for sc in report.get("scaling", []):
        out.write(f"{'  ' + str(sc['consumers']) + ' consumer process(es) each':<34} {sc['events_per_s']:>14,.0f}  events/s\n")
    ms = report["messaging"]
    out.write(f"{'messaging':<34} {ms['messages_per_s']:>14,.0f}  messages/s built, validated, sent\n")


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    stores = ["sqlite", "postgresql"] if args.store == "both" else [args.store]
    if settings.log_level == "INFO":
        # the in-process sections (scanner, indicators) would log an INFO line per alert: measure the work

        logging.getLogger().setLevel(logging.WARNING)
    report = run_bench(args.quick, stores, Path(args.out) if args.out else None, args.consumers, args.scaling,
                       args.api_processes)
    if args.json:
        print(json.dumps(report))
    else:
        print_table(report)
    return 0


def add_commands(sub: Any) -> None:
    b = sub.add_parser("bench", help="measure throughput, latency, memory; prints a table and writes JSON")
    b.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    b.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    b.add_argument("--out", default="bench-results.json", help="where to write the JSON (default bench-results.json)")
    b.add_argument("--store", choices=("sqlite", "postgresql", "both"), default="both")
    b.add_argument("--consumers", type=int, default=1,
                   help="replicas of each consumer service as separate processes (0: threads of the bench process)")
    b.add_argument("--scaling", action="store_true", help="also measure 1, 2 and 4 consumer processes (PostgreSQL)")
    b.add_argument("--api-processes", type=int, default=2,
                   help="processes of the API under load (FORLOP_HTTP_WORKERS; default 2, one per core of the "
                        "reference machine)")
    b.set_defaults(func=cmd_bench)


