"""Kafka wiring: producers, consumers that commit after the transaction, topics, the outbox relay.

At-least-once on the wire, exactly-once in effect: a consumer hands a batch to a
handler that stores the effect (and its outbox records) in one database
transaction, and only then commits the offsets. A crash before the commit means
the batch is delivered again and the idempotent handler changes nothing.
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
from kafka.errors import CommitFailedError, TopicAlreadyExistsError
from kafka.structs import OffsetAndMetadata
from sqlalchemy import select, update

from forlop import metrics
from forlop.config import Settings
from forlop.logging import correlation_id, ctx
from forlop.storage import Store, schema
from forlop.storage.bulk import among

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Record:
    """A consumed record, detached from kafka-python's types."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: dict[str, str]

    @property
    def origin(self) -> str:
        return f"kafka:{self.topic}/{self.partition}@{self.offset}"


BatchHandler = Callable[[Sequence[Record]], None]


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
# The lag gauge is set at most this often: a position lookup per partition after every poll (8
# partitions, ~50 polls/s at 350 events/s offered) was 3 % of the ingest process's CPU, for a
# gauge Prometheus reads every 15-30 s.
LAG_REPORT_INTERVAL_S = 1.0


class ConsumerLoop:
    """Poll -> handle the batch in one transaction -> commit offsets. Stops on `stop()`."""

    def __init__(
        self,
        settings: Settings,
        service: str,
        topics: Sequence[str],
        handler: BatchHandler,
        *,
        max_records: int = 500,
        batch_wait_ms: int = 0,
    ) -> None:
        self.settings = settings
        self.service = service
        self.topics = list(topics)
        self.handler = handler
        self.max_records = max_records
        self.batch_wait_ms = batch_wait_ms
        self._stop = threading.Event()
        self.joined = threading.Event()
        self.consumer: KafkaConsumer | None = None
        self.last_error: str | None = None
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
            # produce->status latency below capacity (p50 275 ms, p99 547 ms at 100 events/s).
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
                polled = consumer.poll(timeout_ms=200)
                self._report_lag(consumer, time.monotonic())
                if not polled:
                    continue
                # The whole poll (every partition and topic it returned) is one batch: one
                # transaction and one offset commit. One per partition, a poll of the two vendor
                # topics (2 x 4 partitions) waited for up to 8 transactions and commits in turn:
                # one per poll took produce->status at 100 events/s from p50 ~85 to ~47 ms.
                pending = [(tp, raws) for tp, raws in polled.items() if raws]
                if not pending:
                    continue
                batch = [
                    Record(
                        r.topic,
                        r.partition,
                        r.offset,
                        r.key,
                        r.value,
                        {k: v.decode("utf-8", "replace") for k, v in (r.headers or [])},
                    )
                    for _, raws in pending
                    for r in raws
                ]
                started = time.perf_counter()
                try:
                    self.handler(batch)
                except Exception as exc:  # nothing of the batch is committed: it all comes back
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    log.exception("batch failed; seeking back to retry", extra=ctx(
                        topics=sorted({tp.topic for tp, _ in pending}), records=len(batch)))
                    self._rewind(consumer, pending)
                    self._stop.wait(1.0)
                    continue
                metrics.processing_seconds.labels(self.service).observe(time.perf_counter() - started)
                try:
                    consumer.commit({tp: OffsetAndMetadata(raws[-1].offset + 1, "", -1) for tp, raws in pending})
                except CommitFailedError as exc:
                    # The group rebalanced while the batch was handled (it took longer than
                    # max.poll.interval.ms): the effect is stored, the batch comes back to
                    # whoever owns the partitions now and the idempotent handler changes nothing.
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    log.warning("offset commit failed after a rebalance; the batch will be redelivered",
                                extra=ctx(topics=sorted({tp.topic for tp, _ in pending}), records=len(batch)))
        finally:
            consumer.close(autocommit=False)

    @staticmethod
    def _rewind(consumer: KafkaConsumer, unhandled: list[tuple[Any, list[Any]]]) -> None:
        """Seek every partition of a batch that failed back to its first record.

        poll() has moved their positions past the batch already: without this, the next poll
        would skip the failed batch's records for good.
        """
        for tp, records in unhandled:
            if records:
                with contextlib.suppress(Exception):  # no longer assigned: the new owner starts at the commit
                    consumer.seek(tp, records[0].offset)

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


class OutboxRelay:
    """Publishes outbox rows written in the services' transactions, then marks them published.

    A crash between send and mark publishes a row twice: the consumers are idempotent.
    """

    def __init__(self, store: Store, producer: KafkaProducer, *, topics: Sequence[str] | None = None) -> None:
        self.store = store
        self.producer = producer
        self.topics = list(topics) if topics else None

    def run_once(self, limit: int = RELAY_PAGE) -> int:
        o = schema.outbox
        query = select(o).where(o.c.published_at.is_(None)).order_by(o.c.id).limit(limit)
        if self.topics:
            query = query.where(o.c.topic.in_(self.topics))
        if self.store.dialect == "postgresql":
            query = query.with_for_update(skip_locked=True)  # several replicas share the work
        with self.store.transaction() as conn:
            rows = conn.execute(query).all()
            if not rows:
                return 0
            futures = [
                self.producer.send(
                    row.topic,
                    key=row.record_key.encode() if row.record_key else None,
                    value=row.value.encode(),
                    headers=[(k, str(v).encode()) for k, v in (row.headers or {}).items()],
                )
                for row in rows
            ]
            self.producer.flush()
            for f in futures:
                f.get(timeout=30)
            from forlop.clock import system_clock

            # = ANY(array) on PostgreSQL: one statement text whatever the page's size
            conn.execute(update(o).where(among(o.c.id, [r.id for r in rows], conn.dialect.name))
                         .values(published_at=system_clock()))
        return len(rows)


def decode_json(record: Record) -> Any:
    return json.loads(record.value)


def with_correlation(record: Record) -> None:
    correlation_id.set(record.headers.get("correlation-id"))
