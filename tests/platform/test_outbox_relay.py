"""The outbox relay against the bundled broker: a record the broker will never accept is parked with an
alert and a dead letter, the records behind it go out; a broker that is down is waited for, not blamed.

The 2 MB record is refused for real: kafka-python's producer will not send a request above its
max_request_size (FORLOP_KAFKA_MAX_REQUEST_BYTES, 1 MiB by default).
"""

from __future__ import annotations

import json
import os
import signal
import uuid
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaTimeoutError
from prometheus_client import REGISTRY
from sqlalchemy import insert, select

from app import cli
from app.bootstrap import PeriodicWorker, Runtime
from app.dlq import replay
from forlop.clock import FixedClock
from forlop.config import Topics, load_settings
from forlop.kafka import Backoff, OutboxRelay, client_options, make_producer
from forlop.storage import Store, schema
from forlop_devtools.broker import EmbeddedBroker

pytestmark = pytest.mark.broker

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def _settings(broker: str, tmp_path):  # noqa: ANN001, ANN202
    suffix = uuid.uuid4().hex[:8]
    topics = Topics(**{k: f"{getattr(Topics(), k)}.{suffix}" for k in Topics.__dataclass_fields__})
    return replace(load_settings({"FORLOP_DATA_DIR": str(tmp_path)}), kafka_bootstrap=broker, topics=topics,
                   partitions=1)


def _queue(store: Store, topic: str, values: list[str]) -> list[int]:
    with store.transaction() as conn:
        return [conn.execute(insert(schema.outbox).values(
            topic=topic, record_key="13837033319", value=v, headers={"correlation-id": f"c{i}"}, created_at=NOW,
        )).inserted_primary_key[0] for i, v in enumerate(values)]


def _read(settings, topic: str) -> list[bytes]:  # noqa: ANN001
    """Every record of the topic's one partition, up to its end now."""
    consumer = KafkaConsumer(**client_options(settings), enable_auto_commit=False)
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    try:
        end = consumer.end_offsets([tp])[tp]
        consumer.seek_to_beginning(tp)
        values: list[bytes] = []
        while consumer.position(tp) < end:
            for records in consumer.poll(timeout_ms=500).values():
                values += [r.value for r in records]
        return values
    finally:
        consumer.close()


def _outbox(store: Store, row_id: int):  # noqa: ANN202
    with store.read() as conn:
        return conn.execute(select(schema.outbox).where(schema.outbox.c.id == row_id)).one()


def _relay_letters(store: Store) -> list:
    with store.read() as conn:
        return conn.execute(select(schema.dead_letters).where(schema.dead_letters.c.stage == "relay")).all()


def test_a_record_too_large_for_the_broker_is_parked_and_the_records_behind_it_go_out(
    broker, store, tmp_path, monkeypatch, capsys
):
    settings = _settings(broker, tmp_path)
    rt = Runtime(settings, store, FixedClock(NOW))
    rt.ensure_topics()
    t = settings.topics
    big = json.dumps({"unit": {"name": "x" * 2_000_000}})  # 2 MB: above the producer's 1 MiB limit
    first, too_large, after = _queue(store, t.events, ['{"n": 1}', big, '{"n": 2}'])
    parked_before = REGISTRY.get_sample_value("forlop_outbox_parked_total", {"topic": t.events}) or 0
    relay = rt.outbox_relay("ingest")
    try:
        assert relay.run_once() == 3
        assert _read(settings, t.events) == [b'{"n": 1}', b'{"n": 2}']  # the one behind it went out
        assert _outbox(store, first).published_at and _outbox(store, after).published_at
        parked = _outbox(store, too_large)
        assert parked.published_at is None and parked.parked_at is not None
        assert parked.park_reason.startswith("MessageSizeTooLargeError")
        assert REGISTRY.get_sample_value("forlop_outbox_parked_total", {"topic": t.events}) == parked_before + 1
        [letter] = _relay_letters(store)
        assert (letter.outbox_id, letter.topic, letter.status) == (too_large, t.events, "open")
        assert letter.raw_bytes == big.encode() and letter.reasons[0]["rule"] == "unpublishable"
        assert letter.error["type"] == "MessageSizeTooLargeError"
        monkeypatch.setenv("FORLOP_DATABASE_URL", store.url.render_as_string(hide_password=False))
        monkeypatch.setenv("FORLOP_DATA_DIR", str(tmp_path))
        capsys.readouterr()
        assert cli.main(["dlq", "list", "--stage", "relay"]) == 0
        assert f"outbox:{too_large}" in capsys.readouterr().out

        assert relay.run_once() == 2  # the alert and the dead letter's record, which are small
        [alert] = [json.loads(v) for v in _read(settings, t.alerts)]
        assert alert["type"] == "outbox-record-parked" and alert["outboxId"] == too_large
        assert alert["topic"] == t.events and alert["size"] == len(big) and alert["deadLetterId"] == letter.id
        [published_letter] = [json.loads(v) for v in _read(settings, t.dead_letter)]
        assert published_letter["stage"] == "relay" and published_letter["raw"] is None  # too large to carry
        assert published_letter["size"] == len(big)
        assert relay.run_once() == 0  # parked: not tried again and again

        # Replayed before the limit was raised: parked again, the same dead letter reopened.
        assert replay(rt, letter.id).status == "requeued"
        assert relay.run_once() == 1
        assert _outbox(store, too_large).parked_at is not None
        [letter] = _relay_letters(store)
        assert letter.status == "still-failing"
    finally:
        relay.producer.close()

    # The operator raised the limit (FORLOP_KAFKA_MAX_REQUEST_BYTES, and the broker's): replay publishes it.
    raised = Runtime(replace(settings, kafka_max_request_bytes=3_000_000), store, FixedClock(NOW))
    assert replay(raised, letter.id).status == "requeued"
    relay = raised.outbox_relay("ingest")
    try:
        assert relay.run_once() >= 1
    finally:
        relay.producer.close()
    assert _outbox(store, too_large).published_at is not None
    assert _read(settings, t.events)[-1] == big.encode()
    assert _relay_letters(store)[0].status == "replayed"


def test_a_broker_that_is_down_is_waited_for_not_blamed(broker, store, tmp_path):
    settings = _settings(broker, tmp_path)
    Runtime(settings, store).ensure_topics()
    [row] = _queue(store, settings.topics.events, ['{"n": 1}'])
    gone = EmbeddedBroker().start()
    producer = KafkaProducer(bootstrap_servers=[gone.bootstrap], max_block_ms=500)
    os.kill(gone.pid, signal.SIGKILL)  # the producer knew a broker; it crashed
    gone.stop()
    relay = OutboxRelay(store, producer, settings.topics)
    try:
        with pytest.raises(KafkaTimeoutError):
            relay.run_once()
    finally:
        producer.close(timeout=1)
    assert _outbox(store, row).parked_at is None and _relay_letters(store) == []  # retriable: nobody's fault
    relay = OutboxRelay(store, make_producer(settings), settings.topics)
    try:
        assert relay.run_once() == 1
    finally:
        relay.producer.close()
    assert _outbox(store, row).published_at is not None


def test_a_failing_periodic_worker_backs_off_exponentially_up_to_the_cap() -> None:
    outcomes = iter([RuntimeError("broker down")] * 6 + [0] + [RuntimeError("broker down")])

    def step() -> int:
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    worker = PeriodicWorker("relay", step, 0.2, Backoff(initial_s=0.5, max_s=4))
    waits: list[float] = []

    def wait(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 7:
            worker.stop()

    worker.wait = wait
    worker.run()
    assert waits == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 0.5]  # doubling, capped; after a success from the start
