"""The Kafka transport against the bundled broker: out on messages.outbound, AppRecs back on messages.apprec."""

from __future__ import annotations

import time
import uuid
from dataclasses import replace

import pytest
from kafka import KafkaConsumer
from msgkit import NOW, payload

from forlop.config import Topics, load_settings
from forlop.kafka import client_options, ensure_topics
from forlop_devtools.simulated_receiver import SimulatedReceiver
from services.messaging.adapters import repository
from services.messaging.adapters.transport import KafkaTransport
from services.messaging.handlers import handle_apprec, handle_status_changed
from services.messaging.relay import Relay


@pytest.mark.broker
@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
def test_kafka_round_trip_with_apprecs(broker, store, deps, examples, tmp_path) -> None:
    suffix = uuid.uuid4().hex[:8]
    topics = Topics(**{k: f"{getattr(Topics(), k)}.{suffix}" for k in Topics.__dataclass_fields__})
    settings = replace(load_settings({"FORLOP_DATA_DIR": str(tmp_path)}), kafka_bootstrap=broker, topics=topics,
                       consumer_group=f"t-{suffix}", partitions=1)
    ensure_topics(settings, [topics.outbound, topics.apprec])
    events = examples["dips"]["PPR-1810111"]
    with store.transaction() as conn:
        handle_status_changed(conn, payload(events), NOW, deps)
    receiver = SimulatedReceiver("ok").start_kafka(settings)
    transport = KafkaTransport(settings)
    try:
        assert Relay(store, transport, deps).run_once() == 5
        consumer = KafkaConsumer(topics.apprec, **client_options(settings), group_id=f"t-{suffix}.apprec",
                                 auto_offset_reset="earliest")
        got: list[bytes] = []
        deadline = time.monotonic() + 60
        while len(got) < 5 and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                got += [r.value for r in records]
        consumer.close()
    finally:
        receiver.stop()
        transport.close()
    assert len(got) == 5
    with store.transaction() as conn:
        for raw in got:
            handle_apprec(conn, raw, NOW, deps)
        rows = repository.rows_for_pathway(conn, events[0].pathway_key)
    assert {r["status"] for r in rows} == {"acknowledged"}
    assert receiver.duplicates == 0 and len(receiver.effects) == 5
