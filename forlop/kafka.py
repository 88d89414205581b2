"""Kafka wiring: producers, consumers that commit after the transaction, topics, the outbox relay.

At-least-once on the wire, exactly-once in effect: a consumer hands a batch to a
handler that stores the effect (and its outbox records) in one database
transaction, and only then commits the offsets. A crash before the commit means
the batch is delivered again and the idempotent handler changes nothing.

No single record can stop a consumer: a batch that fails is handled again record by record,
and a record that fails the same way twice is dead-lettered and committed past (`ConsumerLoop`).
An unavailable database or broker is not a record's fault: the loop backs off and reports not
ready until it is back (`forlop.failures`). The relay parks a record the broker will never
accept instead of retrying it before every record behind it (`OutboxRelay`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import (
    CommitFailedError,
    InvalidRecordError,
    InvalidTimestampError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    TopicAlreadyExistsError,
)
from kafka.structs import OffsetAndMetadata, TopicPartition
from sqlalchemy import Connection, insert, select, update

from forlop import dead_letters, metrics
from forlop.clock import Clock, system_clock
from forlop.config import Settings, Topics
from forlop.dead_letters import DeadLetter
from forlop.failures import Failure, component, is_infrastructure
from forlop.logging import correlation_id, ctx
from forlop.storage import Store, json_text, schema
from forlop.storage.bulk import among

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Record:
    """A consumed record, detached from kafka-python's types."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None  # None: a tombstone (a record without a value)
    headers: dict[str, str]

    @property
    def origin(self) -> str:
        return f"kafka:{self.topic}/{self.partition}@{self.offset}"


BatchHandler = Callable[[Sequence[Record]], None]
# (conn, records) -> None: a service's handler for one batch of its topics, inside the caller's
# transaction (each service's entrypoints.kafka makes one; the application's consumer runs them).
TxHandler = Callable[[Connection, Sequence[Record]], None]
# (record, the failure it ended with, attempts) -> None: stores the record as a dead letter, in a
# transaction of its own; raises when it cannot (then the record stays where it is).
Quarantine = Callable[[Record, Failure, int], None]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff after infrastructure failures: initial_s, twice that, ... up to max_s."""

    initial_s: float = 0.5
    max_s: float = 30.0

    def delay(self, failures: int) -> float:
        """The wait after the `failures`-th failure in a row (0: the first)."""
        return min(self.max_s, self.initial_s * 2 ** min(failures, 32))


def _record(r: Any) -> Record:
    """A kafka-python ConsumerRecord as a Record (a header without a value becomes "")."""
    headers = {str(k): (v or b"").decode("utf-8", "replace") for k, v in (r.headers or [])}
    return Record(r.topic, r.partition, r.offset, r.key, r.value, headers)


def client_options(settings: Settings) -> dict[str, Any]:
    opts: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap.split(","),
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_sasl_mechanism:
        opts["sasl_mechanism"] = settings.kafka_sasl_mechanism
        opts["sasl_plain_username"] = settings.kafka_sasl_username
        opts["sasl_plain_password"] = settings.kafka_sasl_password
    if settings.kafka_ssl_cafile:
        opts["ssl_cafile"] = settings.kafka_ssl_cafile
    return opts


def ensure_topics(settings: Settings, names: Sequence[str]) -> None:
    admin = KafkaAdminClient(**client_options(settings), client_id="forlop-admin")
    try:
        existing = set(admin.list_topics())
        missing = [NewTopic(n, settings.partitions, 1) for n in names if n not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another replica won the race
                admin.create_topics(missing)
    finally:
        admin.close()


# Records of one partition the producer packs into one batch. kafka-python's default (16 KiB) holds
# two or three status-changed records (~6 KiB each), so a relay page went out as dozens of
# requests one after another (one in flight per connection): 16 % of the pathway process's CPU
# was its sender thread. Well under the broker's default limit on a batch (1 MiB).
PRODUCER_BATCH_BYTES = 256 * 1024


def make_producer(settings: Settings) -> KafkaProducer:
    return KafkaProducer(
        **client_options(settings),
        acks="all",
        linger_ms=5,
        batch_size=PRODUCER_BATCH_BYTES,
        retries=5,
        max_in_flight_requests_per_connection=1,  # keeps per-key order across retries
        max_request_size=settings.kafka_max_request_bytes,  # a larger record is parked (OutboxRelay)
    )


def group_id(settings: Settings, service: str) -> str:
    """One consumer group per service, shared by all its replicas (never per pod)."""
    return f"{settings.consumer_group}.{service}"


class _JoinedListener(ConsumerRebalanceListener):
    """Ready once the group has assigned this member its share, even an empty one (more replicas than
    partitions): such a replica is a warm standby, not a broken pod."""

    def __init__(self, joined: threading.Event) -> None:
        self.joined = joined

    def on_partitions_revoked(self, revoked: Any) -> None:
        pass

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.joined.set()


FETCH_MAX_WAIT_MS = 50
BATCH_MIN_BYTES = 64 * 1024  # what a fetch that may wait for a batch waits for (Settings.ingest_batch_wait_ms)
# A record whose failures differ every time (a message that carries a time or an address) is
# dead-lettered after this many attempts on its own; one that fails the same way twice, at once.
ISOLATION_MAX_ATTEMPTS = 5
# The lag gauge is set at most this often: a position lookup per partition after every poll cost
# the ingest process a measurable share of its CPU (docs/performance.md), for a gauge Prometheus
# reads every 15-30 s.
LAG_REPORT_INTERVAL_S = 1.0


class _Outage(Exception):
    """Raised inside the loop when the database or broker failed while a record was handled."""


class ConsumerLoop:
    """Poll -> handle the batch in one transaction -> commit offsets. Stops on `stop()`.

    When a batch fails, its records are handled again one at a time, each in a transaction of its
    own and in order; a record that fails the same way twice (ISOLATION_MAX_ATTEMPTS if its failures
    differ) goes to `quarantine` (a dead letter) and the loop commits past it. Without a
    `quarantine` a failed batch is rewound and retried whole.

    A failure of the infrastructure (`forlop.failures.is_infrastructure`) blames no record: the
    batch (or the rest of it) is rewound and retried after an exponential `backoff`, while
    `outage` says what is wrong (the service's /readyz reports it). `wait(seconds)` is how the
    loop waits (tests pass one that returns at once).
    """

    def __init__(
        self,
        settings: Settings,
        service: str,
        topics: Sequence[str],
        handler: BatchHandler,
        *,
        max_records: int = 500,
        batch_wait_ms: int = 0,
        quarantine: Quarantine | None = None,
        backoff: Backoff | None = None,
        wait: Callable[[float], object] | None = None,
    ) -> None:
        self.settings = settings
        self.service = service
        self.topics = list(topics)
        self.handler = handler
        self.max_records = max_records
        self.batch_wait_ms = batch_wait_ms
        self.quarantine = quarantine
        self.backoff = backoff or Backoff(max_s=settings.retry_backoff_max_s)
        self._stop = threading.Event()
        self.wait: Callable[[float], object] = wait or self._stop.wait
        self.joined = threading.Event()
        self.consumer: KafkaConsumer | None = None
        self.last_error: str | None = None
        self.outage: str | None = None  # what is unavailable while the loop backs off; None when it works
        self._failures_in_a_row = 0
        self._lag_reported_at: float | None = None

    def _make_consumer(self) -> KafkaConsumer:
        interval = self.settings.max_poll_interval_ms
        consumer = KafkaConsumer(
            **client_options(self.settings),
            group_id=group_id(self.settings, self.service),
            client_id=f"forlop-{self.service}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.max_records,
            max_poll_interval_ms=interval,
            session_timeout_ms=max(6000, min(45000, interval * 3)),
            heartbeat_interval_ms=max(500, min(3000, interval // 4)),
            # A fetch on a quiet partition waits at the broker up to this long for data: with the
            # default 500 ms each hop (vendor topic, events topic) added up to half a second to
            # produce->status latency below capacity (docs/performance.md).
            # `batch_wait_ms` > 0: the fetch waits that long for BATCH_MIN_BYTES unless they are there.
            fetch_max_wait_ms=self.batch_wait_ms or FETCH_MAX_WAIT_MS,
            fetch_min_bytes=BATCH_MIN_BYTES if self.batch_wait_ms else 1,
        )
        consumer.subscribe(self.topics, listener=_JoinedListener(self.joined))
        return consumer

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        self.consumer = consumer = self._make_consumer()
        try:
            while not self._stop.is_set():
                try:
                    polled = consumer.poll(timeout_ms=200)
                except KafkaError as exc:  # the cluster, not a record
                    self._back_off(exc)
                    continue
                self._report_lag(consumer, time.monotonic())
                # The whole poll (every partition and topic it returned) is one batch: one
                # transaction and one offset commit. One per partition, a poll of the two vendor
                # topics (2 x 4 partitions) waited for up to 8 transactions and commits in turn;
                # one per poll roughly halved produce->status latency (docs/performance.md).
                pending = [(tp, [_record(r) for r in raws]) for tp, raws in polled.items() if raws]
                if not pending:
                    continue
                done = self._handle(consumer, pending)
                if done:
                    self._commit(consumer, done)
        finally:
            consumer.close(autocommit=False)

    def _handle(
        self, consumer: KafkaConsumer, pending: list[tuple[TopicPartition, list[Record]]],
    ) -> dict[TopicPartition, int]:
        """Handle a batch; return the next offset to commit of each partition that got anywhere."""
        batch = [r for _, records in pending for r in records]
        started = time.perf_counter()
        try:
            self.handler(batch)
        except Exception as exc:  # the transaction rolled back: nothing of the batch is stored
            self.last_error = Failure.of(exc).summary()
            if is_infrastructure(exc):
                self._rewind(consumer, {tp: records[0].offset for tp, records in pending})
                self._back_off(exc)
                return {}
            if self.quarantine is None:
                log.exception("batch failed; seeking back to retry", extra=ctx(
                    topics=sorted({tp.topic for tp, _ in pending}), records=len(batch)))
                self._rewind(consumer, {tp: records[0].offset for tp, records in pending})
                self.wait(1.0)
                return {}
            # The exception's type only: its message may quote the record.
            log.warning("batch failed; handling its records one at a time", extra=ctx(
                topics=sorted({tp.topic for tp, _ in pending}), records=len(batch), error=type(exc).__name__))
            return self._isolate(consumer, pending, started)
        metrics.processing_seconds.labels(self.service).observe(time.perf_counter() - started)
        self._recovered()
        return {tp: records[-1].offset + 1 for tp, records in pending}

    def _isolate(
        self, consumer: KafkaConsumer, pending: list[tuple[TopicPartition, list[Record]]], started: float,
    ) -> dict[TopicPartition, int]:
        """Each record of a failed batch on its own, in order; poison records are dead-lettered.

        Stops early (rewinding what is left, which the next poll brings back) when the database
        fails, or when half of max.poll.interval.ms has gone, so the group does not evict this
        member for a slow poll loop; a pass always gets at least one record further.
        """
        done: dict[TopicPartition, int] = {}
        budget_s = self.settings.max_poll_interval_ms / 2000

        def rest_from_here() -> dict[TopicPartition, int]:
            return {tp: done.get(tp, records[0].offset) for tp, records in pending}

        for tp, records in pending:
            for record in records:
                if done and time.perf_counter() - started > budget_s:
                    self._rewind(consumer, rest_from_here())
                    return done
                try:
                    self._settle(record)
                except _Outage as outage:
                    self._rewind(consumer, rest_from_here())
                    self._back_off(outage.__cause__ or outage)
                    return done
                done[tp] = record.offset + 1
        self._recovered()
        return done

    def _settle(self, record: Record) -> None:
        """Handle one record in a transaction of its own; dead-letter it when it fails the same way twice."""
        assert self.quarantine is not None
        previous: Failure | None = None
        attempts = 0
        while attempts < ISOLATION_MAX_ATTEMPTS:
            attempts += 1
            try:
                self.handler([record])
                return
            except Exception as exc:
                if is_infrastructure(exc):
                    raise _Outage() from exc
                failure = Failure.of(exc)
                if failure.same_as(previous):
                    break
                previous = failure
        try:
            self.quarantine(record, failure, attempts)
        except Exception as exc:
            if not is_infrastructure(exc):
                # Committing past a record that is not stored anywhere would lose it: stay, say so.
                log.critical("a poison record could not be dead-lettered; it stays and is retried",
                             extra=ctx(origin=record.origin, error=type(exc).__name__))
            raise _Outage() from exc

    def _commit(self, consumer: KafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
        try:
            consumer.commit({tp: OffsetAndMetadata(offset, "", -1) for tp, offset in offsets.items()})
        except CommitFailedError as exc:
            # The group rebalanced while the batch was handled (it took longer than
            # max.poll.interval.ms): the effect is stored, the batch comes back to
            # whoever owns the partitions now and the idempotent handler changes nothing.
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("offset commit failed after a rebalance; the batch will be redelivered",
                        extra=ctx(topics=sorted({tp.topic for tp in offsets})))
        except KafkaError as exc:
            # The effect is stored; the offsets go with the next commit, or the records come back
            # to the idempotent handlers.
            self._back_off(exc)

    def _back_off(self, exc: BaseException) -> None:
        """An infrastructure failure: say so (readiness, metric, log), then wait before the next try."""
        delay = self.backoff.delay(self._failures_in_a_row)
        self._failures_in_a_row += 1
        failure = Failure.of(exc)
        what = component(exc)
        self.last_error = failure.summary()
        first_line = (failure.message.splitlines() or [""])[0][:200]  # an infrastructure error's: no record data
        self.outage = (f"{what} unavailable ({failure.type}: {first_line}); {self._failures_in_a_row} failure(s) "
                       f"in a row, retrying in {delay:.1f} s")
        metrics.consumer_outage.labels(self.service).set(1)
        log.warning("%s unavailable; nothing is dead-lettered, retrying in %.1f s", what, delay,
                    extra=ctx(service=self.service, error=failure.type, failures=self._failures_in_a_row))
        self.wait(delay)

    def _recovered(self) -> None:
        if self.outage is not None:
            log.info("%s consumer working again after %d failure(s)", self.service, self._failures_in_a_row)
            metrics.consumer_outage.labels(self.service).set(0)
        self.outage = None
        self._failures_in_a_row = 0

    @staticmethod
    def _rewind(consumer: KafkaConsumer, positions: dict[TopicPartition, int]) -> None:
        """Seek each partition back to the first record not handled yet.

        poll() has moved their positions past the batch already: without this, the next poll
        would skip the failed batch's records for good.
        """
        for tp, offset in positions.items():
            with contextlib.suppress(Exception):  # no longer assigned: the new owner starts at the commit
                consumer.seek(tp, offset)

    def _report_lag(self, consumer: KafkaConsumer, now: float) -> None:
        """Set the lag gauge of each assigned partition, unless it was set less than LAG_REPORT_INTERVAL_S ago."""
        if self._lag_reported_at is not None and now - self._lag_reported_at < LAG_REPORT_INTERVAL_S:
            return
        assigned = consumer.assignment()
        if not assigned:
            return
        self._lag_reported_at = now
        try:
            for tp in assigned:
                end = consumer.highwater(tp)
                if end is None:
                    continue
                position = consumer.position(tp, timeout_ms=100)
                if position is not None:
                    metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(max(0, end - position))
        except Exception:  # lag is advisory; never let it stop consumption
            pass


RELAY_PAGE = 1000  # outbox rows a relay pass publishes at most

# What the broker refuses for the record itself, however often it is sent (MessageSizeTooLargeError:
# larger than the producer's max_request_size or the broker's message.max.bytes). Retriable errors
# (the broker down, a leader moving) are the broker's state: those rows are sent again, with backoff.
UNPUBLISHABLE = (MessageSizeTooLargeError, RecordListTooLargeError, InvalidRecordError, InvalidTimestampError)


def unpublishable(exc: BaseException) -> bool:
    """The broker will never accept this record: park it. Also a row that cannot even be encoded."""
    return isinstance(exc, UNPUBLISHABLE) or (
        not isinstance(exc, KafkaError) and isinstance(exc, UnicodeError | ValueError | TypeError))


class OutboxRelay:
    """Publishes outbox rows written in the services' transactions, then marks them published.

    A crash between send and mark publishes a row twice: the consumers are idempotent. A row the
    broker will never accept is parked (`parked_at`, `park_reason`) with a dead letter of stage
    `relay`, an alert, a metric and a log line, and the rows behind it go out; `forlop dlq replay`
    queues it again. A retriable failure raises after the rows that did go out are marked, so
    the caller retries the rest (with backoff: `PeriodicWorker`).
    """

    def __init__(
        self, store: Store, producer: KafkaProducer, topics: Topics, *, only: Sequence[str] | None = None,
        clock: Clock = system_clock,
    ) -> None:
        self.store = store
        self.producer = producer
        self.routes = topics  # where parked rows' dead letters and alerts go
        self.topics = list(only) if only else None  # the topics this relay publishes (None: all)
        self.clock = clock

    def run_once(self, limit: int = RELAY_PAGE) -> int:
        o = schema.outbox
        query = select(o).where(o.c.published_at.is_(None), o.c.parked_at.is_(None)).order_by(o.c.id).limit(limit)
        if self.topics:
            query = query.where(o.c.topic.in_(self.topics))
        if self.store.dialect == "postgresql":
            query = query.with_for_update(skip_locked=True)  # several replicas share the work
        failure: BaseException | None = None
        with self.store.transaction() as conn:
            rows = conn.execute(query).all()
            if not rows:
                return 0
            sent, parked = [], []
            for row in rows:
                try:
                    sent.append((row, self.producer.send(
                        row.topic,
                        key=row.record_key.encode() if row.record_key else None,
                        value=row.value.encode(),
                        headers=[(k, str(v).encode()) for k, v in (row.headers or {}).items()],
                    )))
                except Exception as exc:  # raised before sending: too large for the producer, or not encodable
                    if not unpublishable(exc):
                        failure = exc  # e.g. no metadata (the broker is down): the rest waits for the next pass
                        break
                    parked.append((row, exc))
            self.producer.flush()
            published = []
            for row, future in sent:
                try:
                    future.get(timeout=30)
                    published.append(row.id)
                except Exception as exc:
                    if unpublishable(exc):
                        parked.append((row, exc))
                    elif failure is None:
                        failure = exc
            now = self.clock()
            if published:
                # = ANY(array) on PostgreSQL: one statement text whatever the page's size
                conn.execute(update(o).where(among(o.c.id, published, conn.dialect.name)).values(published_at=now))
            for row, exc in parked:
                self._park(conn, row, exc, now)
        if failure is not None:
            raise failure
        return len(rows)

    def _park(self, conn: Connection, row: Any, exc: BaseException, now: Any) -> None:
        o = schema.outbox
        failure = Failure.of(exc)
        reason = failure.summary(1000)
        conn.execute(update(o).where(o.c.id == row.id).values(parked_at=now, park_reason=reason))
        raw = row.value.encode("utf-8", "surrogatepass")
        dl_id = dead_letters.write(conn, DeadLetter(
            stage="relay", source="relay", origin=f"outbox:{row.id}", raw=raw,
            reasons=[{"field": "$", "rule": "unpublishable", "message": f"the broker will not accept it: {reason}"}],
            key=row.record_key, topic=row.topic, headers=dict(row.headers or {}), error=failure, outbox_id=row.id,
        ), now, self.routes.dead_letter)
        if row.topic != self.routes.alerts:  # an alert about an alert that cannot go out would not go out either
            conn.execute(insert(o).values(
                topic=self.routes.alerts, record_key=row.record_key, created_at=now,
                value=json_text({"type": "outbox-record-parked", "outboxId": row.id, "topic": row.topic,
                                 "size": len(raw), "reason": reason, "deadLetterId": dl_id, "at": now.isoformat()}),
                headers={"correlation-id": f"outbox:{row.id}"},
            ))
        metrics.outbox_parked.labels(row.topic).inc()
        log.error("outbox record parked: the broker will not accept it; the records behind it go on", extra=ctx(
            topic=row.topic, outbox_id=row.id, size=len(raw), error=failure.type, dead_letter=dl_id))


def decode_json(record: Record) -> Any:
    return json.loads(record.value)


def with_correlation(record: Record) -> None:
    correlation_id.set(record.headers.get("correlation-id"))
