"""The composition root: every process kind of forlop built from `Settings`, and nowhere else.

`Runtime.from_settings(settings)` holds the platform's parts (the store, the clock, the Kafka
settings) and wires the services to them: each service's Kafka entrypoint to the consumer of its
topics, the outbox relay of the topics it writes, its background workers (the deadline scanner,
the message relay and re-planner, the metrics), and the API with the services' blueprints. A
process kind takes what it needs from it: `forlop serve <service>` (`service_parts`), the API's
worker processes (`app.serve.ApiWorkers`), the embedded run (`app.embedded`), `forlop replay` and
its workers (`app.replay`), `forlop dlq` (`app.dlq`), export and the commands.

The same handlers serve the Kafka consumers and the HTTP intake; `forlop replay` (`app.replay`)
composes the same decisions with the pathway service's bulk unit of work, and delivers what is
left in the outbox in-process (`drain_outbox`) instead of through a broker.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path

from flask import Flask
from sqlalchemy import Connection, select, update

from forlop import audit, dead_letters
from forlop.auth import SCOPE_ADMIN, SCOPE_READ, TokenVerifier
from forlop.clock import Clock, FixedClock, system_clock
from forlop.config import ConfigError, Settings
from forlop.dead_letters import DeadLetter, exception_reason
from forlop.failures import Failure
from forlop.fhir.ids import set_patient_id_key
from forlop.kafka import (
    RELAY_PAGE,
    Backoff,
    ConsumerLoop,
    OutboxRelay,
    Quarantine,
    Record,
    TxHandler,
    ensure_topics,
    make_producer,
)
from forlop.logging import correlation_id
from forlop.metrics import refresh_gauges
from forlop.storage import Store, schema
from forlop.tenants import load_tenants
from forlop.workers import PeriodicWorker
from services.api.public import ApiDeps, create_app
from services.ingest.public import ingest_handler
from services.messaging.public import (
    REPLAN_CAUSE,
    MessagingDeps,
    PrebuiltMessage,
    Relay,
    Replanner,
    Sender,
    Transport,
    directories_from,
    handle_parsed_status_changes,
    make_transport,
    messages_bp,
    messaging_handler,
    prebuilt_builder,
    schema_set,
)
from services.messaging.public import CliContext as MessagingCommands
from services.pathway.public import CliContext as PathwayCommands
from services.pathway.public import (
    PathwayDeps,
    RuleBook,
    SqlUnitOfWork,
    StatusChange,
    pathway_bp,
    pathway_handler,
    refresh_queued,
    republish,
    scan,
)

log = logging.getLogger(__name__)

SERVICES = ("ingest", "pathway", "messaging", "api")

# --- the services' dependencies, from the settings ------------------------------------------------
def pathway_deps_from(settings: Settings) -> PathwayDeps:
    """The pathway service's rules and options (also a replay worker's, which has no Runtime)."""
    return PathwayDeps(RuleBook.load(settings.due_soon_days), settings.topics, validate_fhir=settings.fhir_validate,
                       trust_names={settings.sender_org_number: settings.sender_org_name})


def sender_from(settings: Settings) -> Sender:
    """The sending organisation of every MsgHead (FORLOP_SENDER_*); the unit comes from each message's event."""
    return Sender(org_name=settings.sender_org_name, org_her_id=settings.sender_her_id,
                  org_number=settings.sender_org_number, unit_name="", unit_her_id="")


def messaging_deps_from(settings: Settings, clock: Clock) -> MessagingDeps:
    """Messaging's schemas, address registers, sender and limits (also a replay worker's)."""
    if not Path(settings.xsd_dir).is_dir():
        raise ConfigError(f"FORLOP_XSD_DIR={settings.xsd_dir!r} is not a directory")
    municipal, gps = directories_from(settings)
    return MessagingDeps(
        topics=settings.topics,
        schemas=schema_set(settings.xsd_dir),
        municipal=municipal,
        gps=gps,
        sender=sender_from(settings),
        clock=clock,
        apprec_timeout_s=settings.apprec_timeout_s,
        max_attempts=settings.max_send_attempts,
        transport_name=settings.transport,
    )


@dataclass
class Messaging:
    """The messaging service as a process runs it: its deps, and the relay sending through its transport."""

    deps: MessagingDeps
    relay: Relay
    transport: Transport

    def poll_receipts(self) -> int:
        return self.relay.poll_receipts()


def build_messaging(settings: Settings, store: Store, clock: Clock) -> Messaging:
    deps = messaging_deps_from(settings, clock)
    transport = make_transport(settings)
    return Messaging(deps, Relay(store, transport, deps), transport)


@dataclass
class ServiceParts:
    """One service process, built but not started: its background workers, its HTTP app (the whole
    API for `api`; None for a consumer service, whose process serves only probes) and what to close
    once the workers have stopped."""

    workers: list[ConsumerLoop | PeriodicWorker]
    app: Flask | None
    closers: list[Callable[[], object]] = field(default_factory=list)


# --- the runtime -----------------------------------------------------------------------------------
@dataclass
class Runtime:
    settings: Settings
    store: Store
    clock: Clock = field(default=system_clock)

    def __post_init__(self) -> None:
        set_patient_id_key(self.settings.patient_id_key)
        if self.settings.production and not self.settings.patient_id_key:
            # every command that writes or shows Patient ids; `forlop serve` names the other gaps too
            raise ConfigError("FORLOP_MODE=production needs FORLOP_PATIENT_ID_KEY: with the development key "
                              "Patient ids could be reversed to fødselsnummer by anyone who sees them")

    @classmethod
    def from_settings(cls, settings: Settings, *, sqlite_cache_mb: int | None = None) -> Runtime:
        clock: Clock = FixedClock(settings.clock) if settings.clock else system_clock
        return cls(settings, Store(settings.database_url, sqlite_cache_mb=sqlite_cache_mb), clock)

    def now(self) -> datetime:
        """The runtime's clock, read when called: a clock set on the runtime later counts."""
        return self.clock()

    # --- the services' handlers -------------------------------------------------------------
    @cached_property
    def pathway_deps(self) -> PathwayDeps:
        return pathway_deps_from(self.settings)

    @cached_property
    def messaging(self) -> Messaging:
        return build_messaging(self.settings, self.store, self.clock)

    def ingest_handler(self, source: str) -> TxHandler:
        return ingest_handler(source, self.now, self.settings.topics)

    def pathway_handler(self) -> TxHandler:
        return pathway_handler(self.now, self.pathway_deps)

    def messaging_handler(self) -> TxHandler:
        return messaging_handler(self.now, self.messaging.deps, self.settings.topics.apprec)

    def message_replanner(self) -> Replanner:
        """Asks for a re-plan of pathways whose messages were stored under earlier trigger rules
        (`services.messaging.replan`), through the pathway's status-changed records."""
        topics = self.settings.topics
        return Replanner(self.store, self.messaging.deps.triggers,
                         lambda conn, keys, now: republish(SqlUnitOfWork(conn), keys, now, topics, REPLAN_CAUSE),
                         self.clock)

    def hand_to_messaging(self, conn: Connection, changes: Sequence[StatusChange], now: datetime) -> None:
        """Status changes handed over in the caller's transaction (replay), as the consumer would get
        them, with the messages the replay's workers built for them."""
        correlations = {id(c.payload): c.correlation for c in changes}
        prebuilt: dict[str, PrebuiltMessage] = {}
        for c in changes:
            prebuilt.update(c.messages)
        handle_parsed_status_changes(
            conn, [(c.payload, c.events) for c in changes], now, self.messaging.deps,
            on_each=lambda p: correlation_id.set(correlations[id(p)]), build_new=prebuilt_builder(prebuilt))

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
            # whole batch first, in one order (services.messaging.handlers). A partition's records keep
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

    # --- one service process (`forlop serve <service>`) -------------------------------------------
    def service_parts(self, service: str, *, relay_outbox: bool = True) -> ServiceParts:
        """The workers of one service and, for the API, its app; `relay_outbox`: False where there
        is no broker (the bench's API)."""
        parts = ServiceParts([], None)
        relay = None
        if relay_outbox:  # each process publishes the outbox rows of its own service's topics
            outbox = self.outbox_relay(service)
            parts.closers.append(outbox.producer.close)
            # Busy (run again at once) only after a full page: a partial one left nothing behind, and
            # the next commit wakes the relay. Running again after every page cost an empty
            # transaction per wake-up.
            relay = PeriodicWorker("outbox-relay", lambda: outbox.run_once() >= RELAY_PAGE, 0.2, self.backoff())
        if service in ("ingest", "pathway", "messaging"):
            parts.workers.append(self.consumer(service, after_commit=relay.wake if relay else None))
        if service == "pathway":
            parts.workers.append(PeriodicWorker("deadline-scanner", self.scan_step, self.settings.scan_interval_s))
        if service == "messaging":
            parts.workers.append(PeriodicWorker("message-relay", self.messaging.relay.run_once, 1.0))
            # at start, then now and again: rows a rolling update's old replicas wrote are found too
            parts.workers.append(PeriodicWorker("message-replan", self.message_replanner().run_once, 600.0))
            parts.workers.append(PeriodicWorker("apprec-inbox", self.messaging.poll_receipts, 1.0))
        if relay is not None:
            parts.workers.append(relay)
        parts.workers.append(PeriodicWorker("metrics", lambda: refresh_gauges(self.store, self.clock()), 15.0))
        if service == "api":
            parts.app = self.api_app(parts.closers)
            if self.settings.audit_retention_days > 0:  # every API replica may run it: the pass takes the chain's lock
                parts.workers.append(PeriodicWorker("audit-retention", self.audit_retention_step, 3600.0))
        return parts

    def audit_retention_step(self) -> int:
        """One retention pass of the audit trail (FORLOP_AUDIT_RETENTION_DAYS); the records removed."""
        return audit.prune(self.store, self.clock(), self.settings.audit_retention_days)

    def scan_step(self) -> int:
        """One pass of the deadline scanner: first the pathways a replay stored but did not derive (it
        was stopped before the end), then those whose next threshold has come."""
        with SqlUnitOfWork.begin(self.store) as uow:
            queued = len(refresh_queued(uow, self.clock(), self.pathway_deps).refreshed)
        with SqlUnitOfWork.begin(self.store) as uow:
            return queued + len(scan(uow, self.clock(), self.pathway_deps).refreshed)

    def api_app(self, closers: list[Callable[[], object]]) -> Flask:
        """The API with every service's blueprint; what must be closed with it goes to `closers`."""
        blueprints = [(messages_bp, SCOPE_ADMIN),  # operators only (services.api.app.KINDS_BY_SCOPE)
                      (pathway_bp(self.store, self.now, self.settings.due_soon_days), SCOPE_READ)]
        # The requests' own connections: on PostgreSQL each statement of theirs ends at the API's
        # statement timeout (the relay and metrics of this process keep the runtime's store).
        store = self.store.with_statement_timeout(self.settings.api_statement_timeout_ms)
        if store is not self.store:
            closers.append(store.dispose)
        deps = ApiDeps(self.settings, store, self.clock, TokenVerifier(self.settings), readiness=[],
                       blueprints=blueprints, tenants=load_tenants(self.settings))
        return create_app(deps)

    # --- the commands' contexts ---------------------------------------------------------------
    def messaging_commands(self) -> MessagingCommands:
        return MessagingCommands(self.store, self.clock, self.messaging.deps, self.messaging.relay)

    def pathway_commands(self) -> PathwayCommands:
        return PathwayCommands(self.store, self.clock)

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


def open_runtime(settings: Settings, *, migrate: bool = True, sqlite_cache_mb: int | None = None) -> Runtime:
    """A runtime for a command: the settings' store (migrated first, unless `migrate` is False) and clock."""
    rt = Runtime.from_settings(settings, sqlite_cache_mb=sqlite_cache_mb)
    if migrate:
        rt.store.migrate()
    return rt
