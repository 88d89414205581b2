"""Bootstrap: wires settings, store, clock, Kafka and the service handlers into runnable workers.

The same handlers serve the Kafka consumers, the HTTP intake and `forlop replay`
(which drains the outbox in-process instead of through a broker).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

import orjson
from sqlalchemy import Connection, select, update

from forlop import dead_letters
from forlop.clock import Clock, FixedClock, system_clock
from forlop.config import Settings
from forlop.dead_letters import DeadLetter, exception_reason
from forlop.events import PathwayEvent
from forlop.failures import Failure
from forlop.kafka import Backoff, ConsumerLoop, OutboxRelay, Quarantine, Record, ensure_topics, make_producer
from forlop.logging import correlation_id
from forlop.storage import Store, schema

log = logging.getLogger(__name__)

# (conn, records) -> None: a service's handler for one batch, inside the caller's transaction.
TxHandler = Callable[[Connection, Sequence[Record]], None]


def pathway_deps_from(settings: Settings) -> Any:
    """The pathway service's rules and options (also a replay worker's, which has no Runtime)."""
    from services.pathway.domain.rules import RuleBook
    from services.pathway.service import PathwayDeps

    return PathwayDeps(RuleBook.load(settings.due_soon_days), settings.topics, validate_fhir=settings.fhir_validate)


@dataclass
class Runtime:
    settings: Settings
    store: Store
    clock: Clock = field(default=system_clock)

    def __post_init__(self) -> None:
        from forlop.fhir.ids import set_patient_id_key

        set_patient_id_key(self.settings.patient_id_key)
        if self.settings.production and not self.settings.patient_id_key:
            log.warning("FORLOP_PATIENT_ID_KEY not set: Patient ids use the development key and could be "
                        "reversed to fødselsnummer by anyone who sees them")

    @classmethod
    def from_settings(cls, settings: Settings, *, sqlite_cache_mb: int | None = None) -> Runtime:
        clock: Clock = FixedClock(settings.clock) if settings.clock else system_clock
        return cls(settings, Store(settings.database_url, sqlite_cache_mb=sqlite_cache_mb), clock)

    # --- the services' handlers -------------------------------------------------------------
    @cached_property
    def pathway_deps(self) -> Any:
        return pathway_deps_from(self.settings)

    def ingest_handler(self, source: str) -> TxHandler:
        from services.ingest.service import InboundRecord, ingest

        def handle(conn: Connection, records: Sequence[Record]) -> None:
            inbound = [
                InboundRecord(r.value, r.origin, r.key.decode("utf-8", "replace") if r.key else None,
                              r.topic, r.partition, r.offset, r.headers)
                for r in records
            ]
            ingest(conn, source, inbound, self.clock(), self.settings.topics)

        return handle

    def pathway_handler(self, defer: bool = False) -> TxHandler:
        """`defer`: store the events and queue their pathways for one derivation later (replay)."""
        from services.pathway.service import handle_events

        def handle(conn: Connection, records: Sequence[Record]) -> None:
            events = [PathwayEvent.from_dict(orjson.loads(r.value)) for r in records]
            handle_events(conn, events, self.clock(), self.pathway_deps, defer=defer)

        return handle

    @cached_property
    def messaging(self) -> Any:
        from services.messaging.service import build_messaging

        return build_messaging(self.settings, self.store, self.clock)

    def message_replanner(self) -> Any:
        """Asks for a re-plan of pathways whose messages were stored under earlier trigger rules
        (`services.messaging.replan`), through the pathway's status-changed records."""
        from services.messaging.replan import CAUSE, Replanner
        from services.pathway.service import republish

        topics = self.settings.topics
        return Replanner(self.store, self.messaging.deps.triggers,
                         lambda conn, keys, now: republish(conn, keys, now, topics, CAUSE), self.clock)

    def messaging_handler(self) -> TxHandler:
        from services.messaging.handler import Inbound, handle_batch

        apprec_topic = self.settings.topics.apprec

        def handle(conn: Connection, records: Sequence[Record]) -> None:
            # A record without a value (a tombstone) carries no receipt and no status: the consumer's
            # isolation dead-letters it rather than letting it pass unseen.
            if empty := [r for r in records if r.value is None]:
                raise ValueError(f"a record without a value on {empty[0].topic} (offset {empty[0].offset})")
            # In order, with every lock the batch needs taken first (services.messaging.handler).
            handle_batch(conn, [
                Inbound(apprec=r.value, correlation=r.headers.get("correlation-id")) if r.topic == apprec_topic
                else Inbound(payload=orjson.loads(r.value), correlation=r.headers.get("correlation-id"))
                for r in records
            ], self.clock(), self.messaging.deps)

        return handle

    def hand_to_messaging(
        self, conn: Connection, handed_over: Sequence[tuple[dict[str, Any], str, list[PathwayEvent]]],
        now: datetime | None = None, prebuilt: dict[str, Any] | None = None,
    ) -> None:
        """Status changes handed over in the caller's transaction (replay), as the consumer would get them."""
        from services.messaging.handler import handle_parsed_status_changes

        correlations = {id(payload): correlation for payload, correlation, _ in handed_over}
        handle_parsed_status_changes(
            conn, [(payload, events) for payload, _, events in handed_over], now or self.clock(),
            self.messaging.deps, on_each=lambda p: correlation_id.set(correlations[id(p)]), prebuilt=prebuilt)

    def topic_handlers(self, services: Sequence[str]) -> dict[str, TxHandler]:
        """Which topic feeds which handler, for the given services."""
        t = self.settings.topics
        handlers: dict[str, TxHandler] = {}
        if "ingest" in services:
            handlers[t.dips] = self.ingest_handler("dips")
            handlers[t.esp] = self.ingest_handler("esp")
        if "pathway" in services:
            handlers[t.events] = self.pathway_handler()
        if "messaging" in services:
            handlers[t.status_changed] = self.messaging_handler()
            handlers[t.apprec] = handlers[t.status_changed]
        return handlers

    # --- Kafka workers ------------------------------------------------------------------------
    def ensure_topics(self) -> None:
        t = self.settings.topics
        ensure_topics(self.settings, [getattr(t, name) for name in t.__dataclass_fields__])

    def stage_of(self, topic: str) -> tuple[str, str]:
        """(stage, source) of a dead letter of a record consumed from `topic`."""
        t = self.settings.topics
        return {t.dips: ("ingest", "dips"), t.esp: ("ingest", "esp"), t.events: ("pathway", "pathway"),
                t.status_changed: ("messaging", "messaging"), t.apprec: ("receipts", "receipts")}[topic]

    def topic_of(self, stage: str, source: str) -> str:
        """The topic (as configured now) whose consumer handles a dead letter's record again."""
        t = self.settings.topics
        return {("ingest", "dips"): t.dips, ("ingest", "esp"): t.esp}.get((stage, source)) or {
            "pathway": t.events, "messaging": t.status_changed, "receipts": t.apprec}[stage]

    def quarantine(self) -> Quarantine:
        """Where a consumer puts a poison record: a dead letter, in a transaction of its own."""

        def dead_letter(record: Record, failure: Failure, attempts: int) -> None:
            stage, source = self.stage_of(record.topic)
            letter = DeadLetter(
                stage=stage, source=source, origin=record.origin, raw=record.value,
                reasons=[exception_reason(failure, attempts)],
                key=record.key.decode("utf-8", "replace") if record.key is not None else None,
                topic=record.topic, partition=record.partition, offset=record.offset, headers=record.headers,
                error=failure,
            )
            with self.store.transaction() as conn:
                dead_letters.write(conn, letter, self.clock(), self.settings.topics.dead_letter)

        return dead_letter

    def consumer(
        self, service: str, after_commit: Callable[[], None] | None = None,
        wait: Callable[[float], object] | None = None,
    ) -> ConsumerLoop:
        """The service's consumer: each poll's records, of every topic, in one transaction; `after_commit`
        runs after it (wakes the outbox relay). A poison record becomes a dead letter (`quarantine`);
        `wait` is how it waits out a database or broker outage (tests pass one that returns at once)."""
        handlers = self.topic_handlers([service])

        def on_batch(batch: Sequence[Record]) -> None:
            # One call per handler (messaging's serves two topics): a handler takes the locks of its
            # whole batch first, in one order (services.messaging.handler). A partition's records keep
            # their order within their topic.
            by_handler: dict[TxHandler, list[Record]] = {}
            for record in batch:
                by_handler.setdefault(handlers[record.topic], []).append(record)
            correlation_id.set(batch[0].headers.get("correlation-id"))
            with self.store.transaction() as conn:
                for handler, records in by_handler.items():
                    handler(conn, records)
            if after_commit is not None:
                after_commit()

        # Only the vendor topics' consumer waits for a batch: its work per event is small beside a
        # batch's fixed cost. The pathway consumer's is not, and under load its polls are full anyway.
        return ConsumerLoop(self.settings, service, list(handlers), on_batch,
                            batch_wait_ms=self.settings.ingest_batch_wait_ms if service == "ingest" else 0,
                            quarantine=self.quarantine(), wait=wait)

    def outbox_topics(self, service: str) -> list[str]:
        """The topics a service writes to the outbox: its relay publishes only those (least privilege).

        Every service writes dead letters (a poison record, a parked outbox row) and alerts (a parked row).
        """
        t = self.settings.topics
        return {
            "ingest": [t.events, t.dead_letter, t.alerts],
            "api": [t.events, t.dead_letter, t.alerts],  # POST /ingest writes what the ingest consumer writes
            "pathway": [t.status_changed, t.alerts, t.dead_letter],
            "messaging": [t.alerts, t.dead_letter],
        }[service]

    def outbox_relay(self, service: str | None = None) -> OutboxRelay:
        topics = self.outbox_topics(service) if service else None
        return OutboxRelay(self.store, make_producer(self.settings), self.settings.topics, only=topics)

    def backoff(self) -> Backoff:
        return Backoff(max_s=self.settings.retry_backoff_max_s)

    # --- in-process delivery (replay) -----------------------------------------------------------
    def drain_outbox(self, handlers: dict[str, TxHandler], batch_size: int = 2000) -> int:
        """Deliver unpublished outbox rows of the handled topics in-process, in order, until none are left.

        Each batch is handled and marked published in one transaction: the same
        exactly-once-in-effect contract as a Kafka consumer committing after its transaction.
        """
        o = schema.outbox
        delivered = 0
        while True:
            with self.store.transaction() as conn:
                rows = conn.execute(
                    select(o)
                    .where(o.c.published_at.is_(None), o.c.parked_at.is_(None), o.c.topic.in_(list(handlers)))
                    .order_by(o.c.id)
                    .limit(batch_size)
                ).all()
                if not rows:
                    return delivered
                by_topic: dict[str, list[Record]] = {}
                for row in rows:
                    by_topic.setdefault(row.topic, []).append(
                        Record(
                            row.topic,
                            0,
                            row.id,
                            row.record_key.encode() if row.record_key else None,
                            row.value.encode(),
                            dict(row.headers or {}),
                        )
                    )
                for topic, records in by_topic.items():
                    handlers[topic](conn, records)
                conn.execute(
                    update(o).where(o.c.id.in_([r.id for r in rows])).values(published_at=self.clock())
                )
                delivered += len(rows)


class PeriodicWorker:
    """Runs `step()` every `interval` seconds on a thread until stopped; errors are logged, not fatal.

    `wake()` runs the next step at once instead of at the end of the interval (the outbox relay
    is woken by its consumer's commit, so an event does not wait out the polling interval). After
    a failed step it waits `backoff` (doubling with each failure in a row, capped) instead, and a
    wake() does not cut that short: a broker that is down is not asked again at every commit.
    """

    def __init__(self, name: str, step: Callable[[], Any], interval: float, backoff: Backoff | None = None) -> None:
        self.name = name
        self.step = step
        self.interval = interval
        self.backoff = backoff or Backoff(initial_s=interval, max_s=max(interval, 30.0))
        self._stop = threading.Event()
        self.wait: Callable[[float], object] = self._stop.wait  # how it waits out a backoff (tests replace it)
        self._wake = threading.Event()
        self.last_error: str | None = None
        self.last_run: datetime | None = None
        self.failures_in_a_row = 0

    def run(self) -> None:
        while not self._stop.is_set():
            # Cleared before the step, not after the wait: a wake() while the step runs (a commit
            # of rows the step did not see) runs the next step at once instead of being lost.
            self._wake.clear()
            try:
                busy = self.step()
                self.last_error = None
                self.failures_in_a_row = 0
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                delay = self.backoff.delay(self.failures_in_a_row)
                self.failures_in_a_row += 1
                log.exception("%s failed (%d in a row); next try in %.1f s", self.name, self.failures_in_a_row, delay)
                self.wait(delay)
                continue
            if not busy and not self._stop.is_set():
                self._wake.wait(self.interval)

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()


def start_thread(target: Callable[[], None], name: str) -> threading.Thread:
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread
