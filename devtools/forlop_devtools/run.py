"""`forlop run`: the whole thing on one machine, for a first look.

Starts the bundled Kafka broker, then all services in this process (`app.embedded`) on a fresh
SQLite database, feeds a synthetic day of events from both vendors (DIPS through Kafka, eSP
through the HTTP API), answers every e-message with the simulated receiver, waits until
everything is processed and prints what came out.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import TextIO

from sqlalchemy import func, select

from app.bootstrap import Runtime
from app.embedded import EmbeddedServices
from forlop.auth import ALL_SCOPES, mint_dev_token
from forlop.config import Settings
from forlop.kafka import make_producer
from forlop.storage import schema
from forlop_devtools.broker import EmbeddedBroker, free_port
from forlop_devtools.simulated_receiver import SimulatedReceiver, start_for_embedded
from forlop_devtools.synthetic import generate


def run_embedded(
    settings: Settings, *, pathways: int = 24, seed: int = 2026, keep_running: bool = False,
    port: int | None = None, out: TextIO = sys.stdout,
) -> int:
    _stop_on_signals()
    data_dir = settings.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    # A database the user names is theirs; else a fresh one per run, so the summary is this run's.
    if not os.environ.get("FORLOP_DATABASE_URL"):
        db = data_dir / "embedded-run.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        settings = replace(settings, database_url=f"sqlite:///{db}")
    api_port = port or (settings.http_port if os.environ.get("FORLOP_HTTP_PORT") else free_port())
    out.write("forlop: starting the bundled Kafka broker (Tansu) ...\n")
    broker = EmbeddedBroker(log_dir=data_dir / "logs").start()
    settings = replace(settings, kafka_bootstrap=broker.bootstrap, max_poll_interval_ms=3000, http_port=api_port,
                       http_host="127.0.0.1")
    services: EmbeddedServices | None = None
    receiver: SimulatedReceiver | None = None
    try:
        rt = Runtime.from_settings(settings)
        services = EmbeddedServices.start(rt)
        receiver = start_for_embedded(settings)
        out.write(f"forlop: services up (API http://127.0.0.1:{api_port}); waiting for consumer groups ...\n")
        services.wait_joined()

        now = rt.clock()
        dips = generate("dips", pathways, seed, as_of=now)
        esp = generate("esp", pathways, seed + 1, as_of=now)
        producer = make_producer(settings)
        for ev in dips:
            producer.send(settings.topics.dips, key=ev["patient"]["nationalId"].encode(),
                          value=json.dumps(ev, ensure_ascii=False).encode())
        producer.flush()
        producer.close()
        token = mint_dev_token(settings, list(ALL_SCOPES))
        posted = {"accepted": 0, "duplicates": 0}
        for start in range(0, len(esp), settings.http_max_records):  # at most the records one request may carry
            body = "\n".join(json.dumps(ev, ensure_ascii=False) for ev in esp[start:start + settings.http_max_records])
            req = urllib.request.Request(
                f"http://127.0.0.1:{api_port}/ingest/esp", data=body.encode(), method="POST",
                headers={"Content-Type": "application/x-ndjson", "Authorization": f"Bearer {token}"},
            )
            with urllib.request.urlopen(req, timeout=60) as resp:
                answer = json.loads(resp.read())
            posted = {k: posted[k] + answer[k] for k in posted}
        out.write(
            f"forlop: fed {len(dips)} DIPS events through Kafka and {len(esp)} eSP events through "
            f"POST /ingest/esp ({posted['accepted']} accepted, {posted['duplicates']} duplicates)\n"
        )
        idle = services.wait_until_idle()
        _wait_for_receipts(rt, timeout=60)
        services.wait_until_idle(timeout=30)
        print_summary(rt, out, api_port, settings, idle, now)
        if keep_running:
            out.write("forlop: running; Ctrl-C to stop\n")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
        return 0 if idle else 1
    finally:
        if services is not None:
            services.stop()
        if receiver is not None:
            receiver.stop()
        broker.stop()


def _stop_on_signals() -> None:
    """Ctrl-C or SIGTERM (even where the shell ignored SIGINT for a background job) stops the run
    through its `finally`, so the broker and the service threads never outlive it."""
    if threading.current_thread() is not threading.main_thread():
        return

    def stop(*_: object) -> None:
        raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)


def _wait_for_receipts(rt: Runtime, timeout: float) -> None:
    """The simulated receiver answers every message; wait until none is queued or awaiting its AppRec."""
    m = schema.messages
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with rt.store.read() as conn:
            waiting = conn.execute(
                select(func.count()).select_from(m).where(m.c.status.in_(("queued", "sent")))
            ).scalar_one()
        if waiting == 0:
            return
        time.sleep(0.3)


def print_summary(rt: Runtime, out: TextIO, port: int, settings: Settings, idle: bool, now: datetime) -> None:
    p, m, d = schema.pathways, schema.messages, schema.dead_letters
    with rt.store.read() as conn:
        rows = conn.execute(select(p.c.pathway_key, p.c.pathway_id, p.c.pathway_type, p.c.episode_status, p.c.status)
                            .order_by(p.c.source, p.c.pathway_id)).all()
        messages = conn.execute(select(m.c.role, m.c.trigger, m.c.status)).all()
        dead = conn.execute(select(func.count()).select_from(d)).scalar_one()
        resources = conn.execute(
            select(schema.fhir_resources.c.resource_type, func.count()).group_by(schema.fhir_resources.c.resource_type)
        ).all()
        alerts = conn.execute(select(func.count()).select_from(schema.alerts)).scalar_one()
    out.write("\n" + ("all events processed" if idle else "WARNING: not everything was processed in time") + "\n\n")
    out.write(f"{'pathway':<16} {'type':<4} {'episode':<17} {'next milestone':<18} {'deadline':<11} status\n")
    for row in rows:
        nxt = _next_open(row.status)
        out.write(
            f"{row.pathway_id:<16} {row.pathway_type:<4} {row.episode_status:<17} "
            f"{(nxt or {}).get('key', '-'):<18} {(nxt or {}).get('adjusted_deadline') or '-':<11} "
            f"{(nxt or {}).get('deadline_status') or ''}\n"
        )
    episodes = Counter(r.episode_status for r in rows)
    out.write(f"\n{len(rows)} pathways: " + ", ".join(f"{v} {k}" for k, v in sorted(episodes.items())) + "\n")
    out.write("FHIR resources: " + ", ".join(f"{n} {t}" for t, n in sorted(resources)) + "\n")
    out.write(f"deadline alerts emitted: {alerts}; dead letters: {dead}\n")
    by_status = Counter(r.status for r in messages)
    by_kind = Counter(f"{r.role}:{r.trigger}" for r in messages)
    out.write(f"messages: {len(messages)} (" + ", ".join(f"{v} {k}" for k, v in sorted(by_status.items())) + ")\n")
    out.write("  by recipient and trigger: " + ", ".join(f"{k}={v}" for k, v in sorted(by_kind.items())) + "\n")
    db = settings.database_url
    out.write(
        "\nwhere to look next (from a checkout: source .venv/bin/activate):\n"
        f"  database: {db}\n"
        f"  logs:     {settings.data_dir / 'logs' / 'forlop.log'} (JSON, personal data masked)\n"
        f"  export FORLOP_DATABASE_URL={db}\n"
        "  forlop status <pathway id>            one pathway's timeline\n"
        "  forlop messages list                  the e-messages and their receipts\n"
        "  forlop export fhir --out bundle.json  every FHIR resource\n"
        "  forlop run --keep-running             keep the API up, then:\n"
        f"    TOKEN=$(forlop token); curl -H \"Authorization: Bearer $TOKEN\" "
        f"http://127.0.0.1:{port}/fhir/EpisodeOfCare?status=active\n"
    )


def _next_open(status: dict) -> dict | None:
    open_ones = [m for m in status.get("milestones", []) if m.get("state") == "requested" and m.get("deadline")]
    return min(open_ones, key=lambda m: m.get("adjusted_deadline") or m["deadline"], default=None)
