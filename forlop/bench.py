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
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from forlop.config import Settings, load_settings

POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def _machine() -> dict[str, Any]:
    import importlib.metadata as md

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
    from forlop.synthetic import iter_generate

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
    from sqlalchemy import create_engine, text

    schema_name = f"bench_{tag}_{os.getpid()}"
    admin = create_engine(POSTGRES_URL.replace("postgresql://", "postgresql+psycopg://", 1))
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema_name}" CASCADE'))
        conn.execute(text(f'CREATE SCHEMA "{schema_name}"'))

    def cleanup() -> None:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema_name}" CASCADE'))
        admin.dispose()

    return f"{POSTGRES_URL}?options=-csearch_path%3D{schema_name}", cleanup


# --- 1. ingest through Kafka ---------------------------------------------------------------------
def _spawn_services(settings: Settings, url: str, workdir: Path, consumers: int) -> list[subprocess.Popen]:
    """`consumers` replicas each of `forlop serve ingest` and `forlop serve pathway`, as separate OS processes."""
    from forlop.broker import free_port

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
            proc = subprocess.Popen([sys.executable, "-m", "forlop.cli", "serve", service], env=env,
                                    stdout=log, stderr=subprocess.STDOUT)
            proc.port = port  # type: ignore[attr-defined]
            procs.append(proc)
    import urllib.error
    import urllib.request

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
    from sqlalchemy import func, select

    from forlop.broker import EmbeddedBroker
    from forlop.kafka import make_producer
    from forlop.runtime import Runtime
    from forlop.serve import ServiceProcess
    from forlop.storage import Store, schema

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
            sent_at: dict[str, float] = {}
            started = time.time()
            for i, (vendor, ev) in enumerate(events):
                if rate:
                    due = started + i / rate
                    pause = due - time.time()
                    if pause > 0:
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
                time.sleep(0.05)
            finished = time.time()
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
    }


# --- 2. replay -----------------------------------------------------------------------------------
def bench_replay(pathways: int, workdir: Path, as_of: datetime) -> tuple[dict[str, Any], str]:
    path = workdir / "replay-dips.ndjson"
    n = _write_events(path, "dips", pathways, 7, as_of)
    db = workdir / "replay.db"
    env = dict(os.environ, FORLOP_DATABASE_URL=f"sqlite:///{db}", FORLOP_DATA_DIR=str(workdir),
               FORLOP_CLOCK=as_of.isoformat(), FORLOP_LOG_LEVEL="WARNING")
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "forlop.cli", "replay", "--source", "dips", str(path), "--quiet", "--batch-size", "5000"],
        env=env, capture_output=True, text=True,
    )
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"replay failed: {proc.stderr[-2000:]}")
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {
        "events": n,
        "seconds": round(seconds, 2),
        "events_per_s": round(n / seconds, 1),
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "summary": proc.stdout.strip(),
    }, f"sqlite:///{db}"


# --- 3. deadline scan and indicators ---------------------------------------------------------------
OPEN = ("waitlist", "active")


def _clone_open_pathways(store: Any, target: int) -> int:
    """Copy the open pathways (events, status rows, FHIR resources) under new pathway ids until `target` are open.

    The generator finishes most pathways; the scanner is measured over open ones, so the
    replayed database is topped up with copies of its open pathways ("<id>~c<n>"): the same
    histories, their own keys, FHIR ids (EpisodeOfCare and Tasks, with their search index)
    and alerts. SQLite only (the replay database).
    """
    from sqlalchemy import func, select, text

    from forlop.storage import schema

    p = schema.pathways
    with store.read() as conn:
        open_n = conn.execute(select(func.count()).select_from(p).where(p.c.episode_status.in_(OPEN))).scalar_one()
    copies = 0
    while open_n and open_n * (copies + 1) < target:
        copies += 1
        suffix = f"~c{copies}"
        with store.transaction() as conn:  # a copy per transaction: SQLite's WAL stays one copy big
            conn.execute(text(
                "INSERT INTO pathway_events (event_id, pathway_key, kind, occurred_on, recorded_at, stored_at, event) "
                "SELECT e.event_id || :s, e.pathway_key || :s, e.kind, e.occurred_on, e.recorded_at, e.stored_at, "
                "json_set(e.event, '$.event_id', json_extract(e.event, '$.event_id') || :s, "
                "'$.pathway_id', json_extract(e.event, '$.pathway_id') || :s, "
                "'$.registration_id', json_extract(e.event, '$.registration_id') || :s, "
                "'$.withdraws', CASE WHEN json_extract(e.event, '$.withdraws') IS NULL THEN NULL "
                "ELSE json_extract(e.event, '$.withdraws') || :s END) "
                "FROM pathway_events e JOIN pathways p ON p.pathway_key = e.pathway_key "
                "WHERE p.episode_status IN ('waitlist', 'active') AND p.pathway_key NOT LIKE '%~c%'"
            ), {"s": suffix})
            cols = [c.name for c in p.columns if c.name not in ("pathway_key", "pathway_id")]
            conn.execute(text(
                f"INSERT INTO pathways (pathway_key, pathway_id, {', '.join(cols)}) "
                f"SELECT pathway_key || :s, pathway_id || :s, {', '.join(cols)} FROM pathways "
                "WHERE episode_status IN ('waitlist', 'active') AND pathway_key NOT LIKE '%~c%'"
            ), {"s": suffix})
            _clone_fhir(conn, copies)
    return open_n * (copies + 1)


def _clone_fhir(conn: Any, n: int) -> None:
    """Copy n's EpisodeOfCare and Tasks: the originals' JSON with the pathway's ids and keys replaced."""
    from sqlalchemy import insert, select

    from forlop.fhir import ids
    from forlop.storage import schema
    from services.pathway.fhir_store import index_values

    p, r = schema.pathways, schema.fhir_resources
    originals = select(p.c.pathway_key).where(p.c.episode_status.in_(OPEN), p.c.pathway_key.not_like("%~c%"))
    ids_of = dict(conn.execute(select(p.c.pathway_key, p.c.pathway_id).where(p.c.pathway_key.in_(originals))).all())
    owned: dict[str, list[Any]] = {}
    for row in conn.execute(select(r).where(r.c.pathway_key.in_(originals))):
        owned.setdefault(row.pathway_key, []).append(row)
    patients = {f"Patient/{res['id']}": res for res in conn.execute(
        select(r.c.resource).where(r.c.resource_type == "Patient")).scalars()}
    resources, index = [], []
    for key, rows in owned.items():
        new_key = f"{key}~c{n}"
        swap = {ids.episode_id(key): ids.episode_id(new_key), f'"{ids_of[key]}"': f'"{ids_of[key]}~c{n}"',
                f'"{key}/': f'"{new_key}/'}
        for row in rows:
            if row.resource_type == "Task":
                swap[row.id] = ids.task_id(new_key, row.resource["identifier"][0]["value"].rsplit("/", 1)[1])
        for row in rows:
            body = json.dumps(row.resource, ensure_ascii=False)
            for old, new in swap.items():
                body = body.replace(old, new)
            res = json.loads(body)
            resources.append({"resource_type": row.resource_type, "id": res["id"], "pathway_key": new_key,
                              "version_id": row.version_id, "last_updated": row.last_updated, "resource": res})
            index += [{"resource_type": row.resource_type, "id": res["id"], "param": k, "value": v[:300]}
                      for k, v in index_values(res, patients)]
    if resources:
        conn.execute(insert(r), resources)
        conn.execute(insert(schema.fhir_search_index), index)


def bench_scan(url: str, as_of: datetime, open_target: int = 0) -> dict[str, Any]:
    """Deadline-scanner passes over the open pathways, then the indicators over all pathways.

    Two passes: the daily one (the clock one day on, the pathways whose next threshold came
    are due: the scanner's everyday work) and a worst case in which every open pathway is due
    at once, 30 days on (e.g. after the scanner was down for a month).
    """
    from datetime import timedelta

    from sqlalchemy import func, select, update

    from forlop.clock import FixedClock
    from forlop.runtime import Runtime
    from forlop.storage import Store, schema
    from services.pathway.service import scan

    store = Store(url)
    settings = replace(load_settings(), database_url=url)
    rt = Runtime(settings, store, FixedClock(as_of + timedelta(days=31)))  # the indicators' clock
    p = schema.pathways
    replayed_open = None
    if open_target:
        with store.read() as conn:
            replayed_open = conn.execute(
                select(func.count()).select_from(p).where(p.c.episode_status.in_(OPEN))
            ).scalar_one()
        _clone_open_pathways(store, open_target)
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
        "refreshed": refreshed,
        "status_changes": changed,
        "seconds": round(seconds, 2),
        "daily": {"due": daily_n, "status_changes": daily_changed, "seconds": round(daily_s, 2)},
        "indicators_seconds": round(ind_seconds, 2),
        "indicator_rows": indicator_rows,
    }


def _indicators(rt: Any) -> int:
    from services.pathway.reports import compute_indicators

    return len(compute_indicators(rt, None, None, "pathwayType"))


# --- 4. API under load -------------------------------------------------------------------------
_LOAD_CLIENT = r"""
import http.client, json, sys, threading, time
port, token, clients, per_client = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
paths = json.loads(sys.argv[5])
lat = []
lock = threading.Lock()
errors = []
def worker(i):
    # A failed request (timeout, non-200) is counted and the client goes on with a new connection:
    # a thread that died on its first failure would drop all its latencies from the figures.
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    mine = []
    for j in range(per_client):
        path = paths[(i + j) % len(paths)]
        t0 = time.perf_counter()
        try:
            conn.request("GET", path, headers={"Authorization": "Bearer " + token})
            resp = conn.getresponse(); resp.read()
            if resp.status != 200:
                raise RuntimeError(f"{path}: HTTP {resp.status}")
        except Exception as exc:
            with lock:
                errors.append(f"{path}: {exc!r}"[:300])
            conn.close(); conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            continue
        mine.append((time.perf_counter() - t0) * 1000)
    with lock:
        lat.extend(mine)
start = time.perf_counter()
threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
[t.start() for t in threads]; [t.join() for t in threads]
print(json.dumps({"seconds": time.perf_counter() - start, "latencies": lat, "errors": errors}))
"""


def bench_api(url: str, workdir: Path, clients: int, per_client: int) -> dict[str, Any]:
    from forlop.auth import SCOPE_READ, mint_dev_token
    from forlop.broker import free_port

    port = free_port()
    settings = load_settings({"FORLOP_DATA_DIR": str(workdir)})
    token = mint_dev_token(settings, [SCOPE_READ], ttl_s=3600)
    env = dict(os.environ, FORLOP_DATABASE_URL=url, FORLOP_DATA_DIR=str(workdir), FORLOP_HTTP_PORT=str(port),
               FORLOP_HTTP_HOST="127.0.0.1", FORLOP_LOG_LEVEL="WARNING")
    # The API process as production runs it (`forlop serve api`: its HTTP server, worker threads and
    # metrics worker) less the outbox relay, which needs a broker; stopped by SIGTERM.
    code = (
        "import signal, threading; from forlop.config import load_settings; from forlop.runtime import Runtime; "
        "from forlop.serve import ServiceProcess, freeze_startup_heap; "
        "rt = Runtime.from_settings(load_settings()); "
        "p = ServiceProcess(rt, 'api', relay_outbox=False).build(); freeze_startup_heap(); p.start(); "
        "done = threading.Event(); signal.signal(signal.SIGTERM, lambda *_: done.set()); done.wait(); p.stop()"
    )
    server_log = open(workdir / "api-server.log", "wb")  # noqa: SIM115 - closed below; a pipe nobody reads could fill
    server = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=server_log, stderr=subprocess.STDOUT)
    try:
        import urllib.request

        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
                break
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
        "requests": len(lat),
        "errors": len(result["errors"]),
        "requests_per_s": round(len(lat) / result["seconds"], 1),
        "p50_ms": round(_pct(lat, 0.5), 2),
        "p99_ms": round(_pct(lat, 0.99), 2),
    }


# --- 5. messaging ---------------------------------------------------------------------------------
def bench_messaging(workdir: Path, count: int) -> dict[str, Any]:
    from services.messaging.bench import messages_per_second

    return messages_per_second(workdir, count)


# --- the command ---------------------------------------------------------------------------------
def run_bench(quick: bool, stores: list[str], out_json: Path | None, consumers: int = 1,
              scaling: bool = False) -> dict[str, Any]:
    from forlop.clock import system_clock

    as_of = system_clock()
    sizes = (
        {"ingest_pathways": 20, "latency_rate": 200.0, "latency_pathways": 10, "replay_pathways": 150,
         "api_clients": 8, "api_per_client": 10, "messages": 50, "scan_open": 200}
        if quick
        else {"ingest_pathways": 2500, "latency_rate": 500.0, "latency_pathways": 1000, "replay_pathways": 150_000,
              "api_clients": 32, "api_per_client": 150, "messages": 2000, "scan_open": 200_000}
    )
    from forlop.synthetic import iter_generate

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
        if scaling:  # throughput with 1, 2 and 4 replicas of each consumer service (PostgreSQL, 4 partitions)
            report["scaling"] = [
                {k: v for k, v in bench_ingest("postgresql", mix(sizes["ingest_pathways"]), None, workdir, n).items()
                 if k in ("consumers", "partitions", "events", "events_per_s")}
                for n in (1, 2, 4)
            ]
        replay, url = bench_replay(sizes["replay_pathways"], workdir, as_of)
        report["replay"] = replay
        report["scan"] = bench_scan(url, as_of, sizes["scan_open"])
        report["search"] = bench_api(url, workdir, sizes["api_clients"], sizes["api_per_client"])
        report["messaging"] = bench_messaging(workdir, sizes["messages"])
    if out_json:
        out_json.write_text(json.dumps(report, indent=2))
    return report


def print_table(report: dict[str, Any], out=sys.stdout) -> None:  # noqa: ANN001
    out.write(f"{'section':<34} {'figure':>14}  unit\n")
    for kind, r in report["ingest"].items():
        out.write(f"{'ingest via Kafka, ' + kind:<34} {r['events_per_s']:>14,.0f}  events/s ({r['events']} events)\n")
        lo = r["at_offered_load"]
        for q in ("p50", "p95", "p99"):
            out.write(f"{'  latency at ' + str(int(lo['offered_per_s'])) + '/s ' + q:<34} "
                      f"{lo['latency_ms'][q]:>14,.1f}  ms produce->status\n")
    rp = report["replay"]
    out.write(f"{'replay':<34} {rp['events_per_s']:>14,.0f}  events/s ({rp['events']} events)\n")
    out.write(f"{'replay peak RSS':<34} {rp['peak_rss_mb']:>14,.1f}  MiB\n")
    sc = report["scan"]
    out.write(f"{'deadline scan, daily pass':<34} {sc['daily']['seconds']:>14,.2f}  s for {sc['daily']['due']} due of "
              f"{sc['pathways']} open pathways\n")
    out.write(f"{'deadline scan, all due':<34} {sc['seconds']:>14,.2f}  s for {sc['pathways']} open pathways\n")
    out.write(f"{'indicators':<34} {sc['indicators_seconds']:>14,.2f}  s\n")
    se = report["search"]
    out.write(f"{'API, ' + str(se['clients']) + ' clients':<34} {se['requests_per_s']:>14,.0f}  requests/s\n")
    out.write(f"{'  p50 / p99':<34} {se['p50_ms']:>7,.1f}/{se['p99_ms']:<6,.1f}  ms\n")
    for sc in report.get("scaling", []):
        out.write(f"{'  ' + str(sc['consumers']) + ' consumer process(es) each':<34} {sc['events_per_s']:>14,.0f}  events/s\n")
    ms = report["messaging"]
    out.write(f"{'messaging':<34} {ms['messages_per_s']:>14,.0f}  messages/s built, validated, sent\n")


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    stores = ["sqlite", "postgresql"] if args.store == "both" else [args.store]
    if settings.log_level == "INFO":
        # the in-process sections (scanner, indicators) would log an INFO line per alert: measure the work
        import logging

        logging.getLogger().setLevel(logging.WARNING)
    report = run_bench(args.quick, stores, Path(args.out) if args.out else None, args.consumers, args.scaling)
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
    b.set_defaults(func=cmd_bench)


