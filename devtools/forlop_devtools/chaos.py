"""Chaos (kill -9): the services as separate processes, killed at random while they work, checked
against a replay of the same files.

`python -m forlop_devtools.chaos` (`make chaos`) and the short run in the suite (tests/e2e/test_chaos.py):

1. A fresh PostgreSQL schema, the bundled broker (or one given) with topics of this run's own,
   `forlop serve ingest|pathway|messaging` each as its own process under a supervisor that starts a
   killed one again, and the simulated receiver answering every e-message with an AppRec (Kafka
   transport). Every process runs at the same fixed "now" (FORLOP_CLOCK).
2. Synthetic DIPS and eSP events (`forlop_devtools.synthetic`: withdrawals, consent changes, redeliveries;
   some records produced twice more) are produced to the vendor topics at a steady rate, while
   `kill -9` hits a service process that is ready and using CPU (working), one at a time.
3. When all is quiet (no consumer lag, the outbox published, no message queued or awaiting its
   AppRec), the same files go through `forlop replay` into another fresh schema at the same "now".
4. The figures: events lost (in the replay's history, not the live one), pathways differing (status
   and FHIR resources), MsgIds delivered twice in effect (a registration|trigger|role|recipient that
   reached the receiver as two MsgIds, a MsgId seen with two contents, a MsgId the database does not
   know), sent messages whose registration was withdrawn and whose correction never reached the
   receiver, messages received but recorded as never sent, messages the replay owes that never
   arrived, and deadlocks or unexpected exits in the services' logs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from itertools import zip_longest
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, func, select, text

from app.embedded import consumer_lag
from forlop.config import Settings, Topics, load_settings
from forlop.events import PathwayEvent
from forlop.kafka import ensure_topics, make_producer
from forlop.storage import Store, schema
from forlop_devtools.broker import EmbeddedBroker, free_port
from forlop_devtools.simulated_receiver import SimulatedReceiver
from forlop_devtools.synthetic import generate, write_ndjson
from services.messaging.public import withdrawn_registrations

SERVICES = ("ingest", "pathway", "messaging")
DEFAULT_CLOCK = "2026-03-02T09:30:00+01:00"
DEFAULT_POSTGRES = os.environ.get("FORLOP_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass
class ChaosConfig:
    workdir: Path
    pathways: int = 30  # per vendor
    seed: int = 2126
    kills: int = 4
    postgres_url: str = DEFAULT_POSTGRES
    bootstrap: str | None = None  # None: start the bundled broker
    clock: str = DEFAULT_CLOCK
    feed_seconds: float | None = None  # how long the feed lasts (default: ~8 s per kill)
    redeliver: float = 0.05  # share of records produced once more, later
    late_deletions: float = 0.1  # share of DIPS decisions, evaluations and ends deleted again later
    # processes per service: two messaging replicas race each other (one's handler, the other's relay)
    replicas: dict[str, int] = field(default_factory=lambda: {"messaging": 2})
    partitions: int = 3
    settle_timeout_s: float = 300.0
    keep: bool = False  # keep the schemas


@dataclass
class ChaosReport:
    pathways_per_vendor: int = 0
    records_fed: int = 0
    events: int = 0  # distinct canonical events in the replay
    events_live: int = 0
    events_lost: int = 0
    events_extra: int = 0
    pathways_live: int = 0
    pathways_replay: int = 0
    pathways_differing: list[str] = field(default_factory=list)
    # Resources no pathway owns (a unit's Organization, shared by its pathways): the last pathway derived
    # writes them, so what the two vendors' formats say differently depends on the order of arrival.
    shared_differing: list[str] = field(default_factory=list)
    kills: Counter[str] = field(default_factory=Counter)
    processes: dict[str, int] = field(default_factory=dict)
    restarts: int = 0
    unexpected_exits: list[str] = field(default_factory=list)
    msg_ids_received: int = 0
    deliveries: int = 0
    twice_in_effect: int = 0  # a dedupe key received as two MsgIds
    conflicting_contents: int = 0  # a MsgId received with two contents
    unknown_msg_ids: int = 0
    withdrawn_after_sending: int = 0
    uncorrected: int = 0
    received_but_unsent: int = 0
    owed_by_replay: int = 0
    owed_never_delivered: int = 0
    receipts_duplicated: int = 0  # receipt rows beyond one per AppRec
    unsettled: dict[str, int] = field(default_factory=dict)
    deadlocks: int = 0
    dead_letters_live: int = 0
    dead_letters_replay: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not (self.events_lost or self.events_extra or self.pathways_differing or self.twice_in_effect
                    or self.conflicting_contents or self.unknown_msg_ids or self.uncorrected
                    or self.received_but_unsent or self.owed_never_delivered or self.unsettled
                    or self.receipts_duplicated
                    or self.unexpected_exits or self.deadlocks or self.dead_letters_live != self.dead_letters_replay)

    def lines(self) -> list[str]:
        kills = ", ".join(f"{s} {self.kills[s]}" for s in SERVICES)
        return [
            f"chaos (kill -9): {self.pathways_per_vendor} pathways per vendor, {self.records_fed:,} records fed, "
            f"processes {', '.join(f'{s} x{n}' for s, n in self.processes.items())}, "
            f"{sum(self.kills.values())} kills ({kills}), {self.restarts} restarts, "
            f"{len(self.unexpected_exits)} unexpected exits, {self.seconds:.0f} s",
            f"events: {self.events:,} in the replay, {self.events_live:,} live: {self.events_lost} lost, "
            f"{self.events_extra} extra",
            f"pathways: {self.pathways_live} live, {self.pathways_replay} in the replay, "
            f"{len(self.pathways_differing)} differing (status and FHIR resources); resources no pathway owns "
            f"(a unit's Organization) differing: {len(self.shared_differing)}",
            f"messages: {self.msg_ids_received} MsgIds received ({self.deliveries} deliveries, "
            f"{self.deliveries - self.msg_ids_received} retransmissions of the same MsgId): "
            f"{self.twice_in_effect} delivered twice in effect, {self.conflicting_contents} with two contents, "
            f"{self.unknown_msg_ids} unknown",
            f"withdrawals: {self.withdrawn_after_sending} sent messages withdrawn later, {self.uncorrected} "
            f"uncorrected; {self.received_but_unsent} received but recorded as unsent",
            f"owed: {self.owed_by_replay} messages the replay owes, {self.owed_never_delivered} never delivered; "
            f"receipt rows beyond one per AppRec: {self.receipts_duplicated}; unsettled at the end: "
            f"{self.unsettled or 'none'}",
            f"deadlocks in the logs: {self.deadlocks}; dead letters: {self.dead_letters_live} live, "
            f"{self.dead_letters_replay} in the replay",
        ]


class Supervised:
    """One `forlop serve <service>` process, started again by the supervisor when it dies."""

    def __init__(self, service: str, env: dict[str, str], log: Path) -> None:
        self.service = service
        self.port = free_port()
        self.env = {**env, "FORLOP_HTTP_PORT": str(self.port)}
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.killed: set[int] = set()  # pids this run killed on purpose

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", self.service],
                                         env=self.env, stdout=out, stderr=subprocess.STDOUT)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def cpu_ticks(self) -> int:
        assert self.proc is not None
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0
        return int(fields[11]) + int(fields[12])  # utime + stime

    def kill9(self) -> None:
        assert self.proc is not None
        self.killed.add(self.proc.pid)
        os.kill(self.proc.pid, signal.SIGKILL)

    def stop(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class Chaos:
    def __init__(self, config: ChaosConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.report = ChaosReport(pathways_per_vendor=config.pathways)
        self.workdir = config.workdir
        self.logs = self.workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self._stopping = threading.Event()
        self.services: list[Supervised] = []

    # --- the run ------------------------------------------------------------------------------
    def run(self) -> ChaosReport:
        started = time.monotonic()
        suffix = uuid.uuid4().hex[:8]
        broker = None if self.config.bootstrap else EmbeddedBroker(log_dir=self.logs).start()
        bootstrap = self.config.bootstrap or broker.bootstrap  # type: ignore[union-attr]
        live, replay = f"chaos_live_{suffix}", f"chaos_replay_{suffix}"
        try:
            with self._schemas(live, replay):
                env = self._env(bootstrap, live, suffix)
                settings = load_settings(env)
                Store(settings.database_url).migrate()
                ensure_topics(settings, [getattr(settings.topics, n) for n in Topics.__dataclass_fields__])
                files = self._files()
                receiver = SimulatedReceiver("ok").start_kafka(settings)
                try:
                    self._serve_and_kill(env, settings, files)
                finally:
                    receiver.stop()
                self._replay(env, self._url(replay), files)
                self._compare(Store(self._url(live)), Store(self._url(replay)), receiver)
        finally:
            if broker is not None:
                broker.stop()
        self.report.seconds = time.monotonic() - started
        return self.report

    def _serve_and_kill(self, env: dict[str, str], settings: Settings, files: dict[str, list[bytes]]) -> None:
        self.services = [Supervised(s, env, self.logs / f"{s}-{n}.log") for s in SERVICES
                         for n in range(1, self.config.replicas.get(s, 1) + 1)]
        self.report.processes = dict(Counter(s.service for s in self.services))
        for s in self.services:
            s.start()
        supervisor = threading.Thread(target=self._supervise, name="chaos-supervisor", daemon=True)
        supervisor.start()
        try:
            self._until(lambda: all(s.ready() for s in self.services), 120, "services ready")
            feed_seconds = self.config.feed_seconds or max(10.0, 8.0 * self.config.kills)
            feeder = threading.Thread(target=self._feed, args=(settings, files, feed_seconds), name="chaos-feed",
                                      daemon=True)
            feeder.start()
            self._kill_while_working(feeder)
            feeder.join()
            self._settle(settings)
        finally:
            self._stopping.set()
            supervisor.join(5)
            for s in self.services:
                s.stop()
            self._read_logs()

    def _supervise(self) -> None:
        while not self._stopping.wait(0.1):
            for s in self.services:
                if s.proc is None or s.proc.poll() is None:
                    continue
                pid, code = s.proc.pid, s.proc.returncode
                if pid not in s.killed:
                    self.report.unexpected_exits.append(f"{s.service} (pid {pid}) exited with {code}")
                self.report.restarts += 1
                s.start()

    def _kill_while_working(self, feeder: threading.Thread) -> None:
        """Kill -9 a ready service while it uses CPU (working), one at a time, spaced over the feed.

        Each time the service killed least so far is the target: when it works within the spacing it
        is killed, else whichever works then. After the feed this goes on while one still works
        (none for 20 s: stop)."""
        feed_seconds = self.config.feed_seconds or max(10.0, 8.0 * self.config.kills)
        spacing = feed_seconds / max(1, self.config.kills)
        idle_since: float | None = None
        while sum(self.report.kills.values()) < self.config.kills:
            self._stopping.wait(self.rng.uniform(0.2, 0.6) * spacing)
            fewest = min(self.report.kills[s] for s in SERVICES)
            target = self.rng.choice([s for s in SERVICES if self.report.kills[s] == fewest])
            victim = None
            deadline = time.monotonic() + spacing / 2
            while victim is None and time.monotonic() < deadline:
                victim = self._busy_service(only=target)
            victim = victim or self._busy_service()
            if victim is None:
                if not feeder.is_alive():
                    idle_since = idle_since or time.monotonic()
                    if time.monotonic() - idle_since > 20:
                        return
                continue
            idle_since = None
            victim.kill9()
            self.report.kills[victim.service] += 1
            self._until(lambda v=victim: v.alive() and v.ready(), 120, f"{victim.service} back")

    def _busy_service(self, only: str | None = None) -> Supervised | None:
        """A ready service that used at least 20 ms of CPU in the next 250 ms (`only`: that one or none)."""
        ready = [s for s in self.services if (only is None or s.service == only) and s.alive() and s.ready()]
        before = {s.service: s.cpu_ticks() for s in ready}
        time.sleep(0.25)
        busy = [s for s in ready if s.alive() and s.cpu_ticks() - before[s.service] >= max(1, TICKS // 50)]
        return self.rng.choice(busy) if busy else None

    def _feed(self, settings: Settings, files: dict[str, list[bytes]], seconds: float) -> None:
        """Produce the vendors' records, the two interleaved, at a steady rate over `seconds`."""
        topics = {"dips": settings.topics.dips, "esp": settings.topics.esp}
        records = [(topics[v], line) for pair in zip_longest(files["dips"], files["esp"])
                   for v, line in zip(("dips", "esp"), pair, strict=True) if line is not None]
        producer = make_producer(settings)
        try:
            pause = seconds / max(1, len(records))
            for n, (topic, line) in enumerate(records, start=1):
                producer.send(topic, key=_national_id(json.loads(line)).encode(), value=line)
                if n % 20 == 0:
                    producer.flush()
                    time.sleep(pause * 20)
            producer.flush()
        finally:
            producer.close()
        self.report.records_fed = len(records)

    def _settle(self, settings: Settings) -> None:
        """Wait until nothing is left to do (three calm looks in a row), or report what was left."""
        live = Store(settings.database_url)
        deadline = time.monotonic() + self.config.settle_timeout_s
        calm = 0
        left: dict[str, int] = {}
        try:
            while time.monotonic() < deadline and calm < 3:
                time.sleep(0.5)
                left = self._left(live, settings)
                calm = calm + 1 if not left and all(s.alive() and s.ready() for s in self.services) else 0
        finally:
            live.dispose()
        self.report.unsettled = left

    def _left(self, store: Store, settings: Settings) -> dict[str, int]:
        o, m = schema.outbox, schema.messages
        with store.read() as conn:
            left = {
                "outbox unpublished": conn.execute(select(func.count()).select_from(o)
                                                   .where(o.c.published_at.is_(None))).scalar_one(),
                "messages queued or awaiting AppRec": conn.execute(
                    select(func.count()).select_from(m).where(m.c.status.in_(("queued", "sent")))).scalar_one(),
            }
        try:
            left["consumer lag"] = consumer_lag(settings, SERVICES)
        except Exception:  # the broker busy with a rebalance: look again
            left["consumer lag"] = -1
        return {k: v for k, v in left.items() if v}

    def _replay(self, env: dict[str, str], url: str, files: dict[str, list[bytes]]) -> None:
        for vendor in ("dips", "esp"):
            path = self.workdir / f"{vendor}.ndjson"
            subprocess.run([sys.executable, "-m", "app.cli", "replay", "--source", vendor, str(path), "--quiet",
                            "--workers", "0"], env={**env, "FORLOP_DATABASE_URL": url}, check=True,
                           stdout=subprocess.DEVNULL, stderr=(self.logs / "replay.log").open("ab"))

    # --- the comparison ------------------------------------------------------------------------
    def _compare(self, live: Store, replay: Store, receiver: SimulatedReceiver) -> None:
        try:
            self._compare_events_and_pathways(live, replay)
            self._compare_messages(live, replay, receiver)
        finally:
            live.dispose()
            replay.dispose()

    def _compare_events_and_pathways(self, live: Store, replay: Store) -> None:
        e, d = schema.pathway_events, schema.dead_letters
        ids = {}
        for name, store in (("live", live), ("replay", replay)):
            with store.read() as conn:
                ids[name] = set(conn.execute(select(e.c.event_id)).scalars())
                dead = conn.execute(select(func.count()).select_from(d)).scalar_one()
            setattr(self.report, f"dead_letters_{name}", dead)
        r = self.report
        r.events, r.events_live = len(ids["replay"]), len(ids["live"])
        r.events_lost, r.events_extra = len(ids["replay"] - ids["live"]), len(ids["live"] - ids["replay"])
        a, b = _pathways(live), _pathways(replay)
        r.pathways_live, r.pathways_replay = len(a), len(b)
        ra, rb = _resources(live), _resources(replay)
        differing = {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
        differing_resources = [k for k in ra.keys() | rb.keys() if ra.get(k) != rb.get(k)]
        owner = {k: (ra.get(k) or rb.get(k))[0] for k in differing_resources}  # type: ignore[index]
        differing |= {pathway for pathway in owner.values() if pathway}
        r.pathways_differing = sorted(differing)
        r.shared_differing = sorted("/".join(k) for k, pathway in owner.items() if not pathway)
        if differing or differing_resources:  # what differs, for a person to look at
            (self.workdir / "differences.json").write_text(json.dumps({
                "pathways": {k: {"live": a.get(k), "replay": b.get(k)} for k in sorted(differing)},
                "resources": {"/".join(k): {"live": ra.get(k), "replay": rb.get(k)} for k in differing_resources},
            }, default=str, indent=1))

    def _compare_messages(self, live: Store, replay: Store, receiver: SimulatedReceiver) -> None:
        r, m = self.report, schema.messages
        with live.read() as conn:
            rows = {x.id: x for x in conn.execute(select(m))}
            histories: dict[str, list[PathwayEvent]] = {}
            for key, event in conn.execute(select(schema.pathway_events.c.pathway_key, schema.pathway_events.c.event)):
                histories.setdefault(key, []).append(PathwayEvent.from_dict(event))
            rc = schema.receipts
            r.receipts_duplicated = conn.execute(select(func.count()).select_from(rc)).scalar_one() - len(
                set(conn.execute(select(func.coalesce(rc.c.apprec_msg_id, rc.c.raw)))))
        with replay.read() as conn:
            owed = {x.dedupe_key for x in conn.execute(select(m.c.dedupe_key).where(m.c.status == "queued"))}
        received = set(receiver.deliveries)
        r.msg_ids_received, r.deliveries = len(received), sum(receiver.deliveries.values())
        r.conflicting_contents = len(receiver.conflicting)
        r.unknown_msg_ids = len(received - rows.keys())
        per_key = Counter(rows[i].dedupe_key for i in received if i in rows)
        r.twice_in_effect = sum(1 for n in per_key.values() if n > 1)
        r.received_but_unsent = sum(1 for i in received if i in rows and (
            rows[i].sent_at is None or rows[i].status in ("suppressed", "held")))
        withdrawn = {key: withdrawn_registrations(events) for key, events in histories.items()}
        corrected = {x.corrects for x in rows.values() if x.corrects and x.id in received}
        for i in received & rows.keys():
            row = rows[i]
            if row.trigger != "correction" and row.registration_id in withdrawn.get(row.pathway_key, set()):
                r.withdrawn_after_sending += 1
                r.uncorrected += i not in corrected
        delivered_keys = {rows[i].dedupe_key for i in received if i in rows}
        r.owed_by_replay = len(owed)
        r.owed_never_delivered = len(owed - delivered_keys)
        if owed - delivered_keys:  # for a person to look at: what the live run made of each
            live_rows: dict[str, list[dict[str, object]]] = {}
            for row in rows.values():
                if row.dedupe_key in owed - delivered_keys:
                    live_rows.setdefault(row.dedupe_key, []).append(
                        {"id": row.id, "status": row.status, "trigger": row.trigger, "sent_at": row.sent_at,
                         "received": row.id in received})
            (self.workdir / "owed-undelivered.json").write_text(json.dumps(
                {key: live_rows.get(key, "absent in the live run") for key in sorted(owed - delivered_keys)},
                default=str, indent=1))

    def _read_logs(self) -> None:
        for s in self.services:
            with contextlib.suppress(OSError):
                self.report.deadlocks += s.log.read_text(errors="replace").lower().count("deadlock detected")

    # --- set-up ------------------------------------------------------------------------------
    def _url(self, schema_name: str) -> str:
        sep = "&" if "?" in self.config.postgres_url else "?"
        return f"{self.config.postgres_url}{sep}options=-csearch_path%3D{schema_name}"

    @contextlib.contextmanager
    def _schemas(self, *names: str) -> Iterator[None]:
        admin = create_engine(self.config.postgres_url.replace("postgresql://", "postgresql+psycopg://", 1))
        with admin.begin() as conn:
            for name in names:
                conn.execute(text(f'CREATE SCHEMA "{name}"'))
        try:
            yield
        finally:
            if not self.config.keep:
                with admin.begin() as conn:
                    for name in names:
                        conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
            admin.dispose()

    def _env(self, bootstrap: str, schema_name: str, suffix: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FORLOP_")}
        env.update({
            "FORLOP_DATABASE_URL": self._url(schema_name),
            "FORLOP_KAFKA_BOOTSTRAP": bootstrap,
            "FORLOP_CONSUMER_GROUP": f"chaos-{suffix}",
            "FORLOP_TOPIC_PARTITIONS": str(self.config.partitions),
            "FORLOP_MAX_POLL_INTERVAL_MS": "2000",
            "FORLOP_CLOCK": self.config.clock,
            "FORLOP_DATA_DIR": str(self.workdir / "data"),
            "FORLOP_HTTP_HOST": "127.0.0.1",
            "FORLOP_LOG_LEVEL": "WARNING",
            "FORLOP_LOG_FORMAT": "text",
            "FORLOP_TRANSPORT": "kafka",
        })
        env.update({f"FORLOP_TOPIC_{name.upper()}": f"{getattr(Topics(), name)}.chaos-{suffix}"
                    for name in Topics.__dataclass_fields__})
        return env

    def _files(self) -> dict[str, list[bytes]]:
        """The vendors' records as fed, written as the replay's files: the generated ones, some produced
        once more later, and (DIPS) some deletions of clinical decisions, evaluations and ends delivered
        at a random later point (before or after their message leaves, or while it does)."""
        as_of = datetime.fromisoformat(self.config.clock)
        files: dict[str, list[bytes]] = {}
        for n, vendor in enumerate(("dips", "esp")):
            events = generate(vendor, self.config.pathways, self.config.seed + n, as_of=as_of)
            if vendor == "dips":
                events = self._with_late_deletions(events)
            again = [ev for ev in events if self.rng.random() < self.config.redeliver]
            path = self.workdir / f"{vendor}.ndjson"
            with path.open("w", encoding="utf-8") as fp:
                write_ndjson([*events, *again], fp)
            files[vendor] = [line.encode() for line in path.read_text(encoding="utf-8").splitlines()]
        return files

    def _with_late_deletions(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = list(events)
        triggers = [i for i, ev in enumerate(events) if ev.get("eventType") == "ppr.document.approved"
                    and ev["document"]["code"][3:4] in ("C", "E", "X")]
        for i in sorted(self.rng.sample(triggers, int(len(triggers) * self.config.late_deletions)), reverse=True):
            ev = events[i]
            deletion = {**ev, "eventId": str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
                        "eventType": "ppr.document.deleted", "eventTime": ev["recordedTime"],
                        "document": {"id": ev["document"]["id"], "reason": "feilregistrering"}}
            # half soon after (racing the message's send), half anywhere later
            soon = self.rng.random() < 0.5
            out.insert(self.rng.randint(i + 1, min(len(out), i + 40) if soon else len(out)), deletion)
        return out

    def _until(self, check: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise TimeoutError(f"chaos: {what} not within {timeout:.0f} s (logs in {self.logs})")
            time.sleep(0.2)


def _national_id(record: dict[str, Any]) -> str:
    """The record key the EHRs use: the patient's national id (DIPS `patient.nationalId`, eSP `fodselsnummer`)."""
    return str((record.get("patient") or {}).get("nationalId") or record.get("fodselsnummer") or "")


def _pathways(store: Store) -> dict[str, Any]:
    p = schema.pathways
    with store.read() as conn:
        return {row.pathway_key: (row.episode_status, row.status) for row in conn.execute(
            select(p.c.pathway_key, p.c.episode_status, p.c.status))}


def _resources(store: Store) -> dict[tuple[str, str], tuple[str | None, Any]]:
    """(type, id) -> (pathway, the resource without its version and time of update)."""
    r = schema.fhir_resources
    out = {}
    with store.read() as conn:
        for row in conn.execute(select(r.c.resource_type, r.c.id, r.c.pathway_key, r.c.resource)):
            resource = dict(row.resource)
            meta = {k: v for k, v in (resource.pop("meta", None) or {}).items() if k not in ("versionId", "lastUpdated")}
            out[(row.resource_type, row.id)] = (row.pathway_key, {**resource, "meta": meta})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m forlop_devtools.chaos", description=__doc__.split("\n\n")[0])
    p.add_argument("--pathways", type=int, default=200, help="synthetic pathways per vendor")
    p.add_argument("--kills", type=int, default=30)
    p.add_argument("--seed", type=int, default=2126)
    p.add_argument("--feed-seconds", type=float, default=None, help="default: 8 s per kill")
    p.add_argument("--postgres", default=DEFAULT_POSTGRES, help="a database to make the run's two schemas in")
    p.add_argument("--bootstrap", help="a broker to use (default: start the bundled one)")
    p.add_argument("--workdir", help="files and logs (default: a new directory under the data dir)")
    p.add_argument("--keep", action="store_true", help="keep the two schemas")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    workdir = Path(args.workdir or Path(os.environ.get("FORLOP_DATA_DIR", ".data")) / f"chaos-{int(time.time())}")
    config = ChaosConfig(workdir=workdir, pathways=args.pathways, kills=args.kills, seed=args.seed,
                         postgres_url=args.postgres, bootstrap=args.bootstrap, feed_seconds=args.feed_seconds,
                         keep=args.keep)
    def stop(*_: object) -> None:  # SIGTERM as Ctrl-C: the services and the broker are stopped on the way out
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    report = Chaos(config).run()
    if args.json:
        print(json.dumps({**{k: v for k, v in vars(report).items()}, "ok": report.ok}, default=str))
    else:
        print("\n".join(report.lines()))
        print(f"logs and files: {workdir}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["Chaos", "ChaosConfig", "ChaosReport"]
