"""Scaled out: replicas of one service share one consumer group (and its partitions); nothing is
processed twice in effect, and a replica without partitions is still ready (a warm standby)."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace

import pytest
from sqlalchemy import func, select

from app.bootstrap import Runtime
from app.serve import ServiceProcess
from forlop.config import Topics, load_settings
from forlop.kafka import ConsumerLoop, make_producer
from forlop.storage import schema
from forlop_devtools.synthetic import generate
from tests.e2e.conftest import eventually

pytestmark = pytest.mark.broker


def test_replicas_share_the_work_and_spares_are_ready(broker, store, tmp_path):
    suffix = uuid.uuid4().hex[:8]
    topics = Topics(**{k: f"{getattr(Topics(), k)}.{suffix}" for k in Topics.__dataclass_fields__})
    settings = replace(load_settings({"FORLOP_DATA_DIR": str(tmp_path)}), kafka_bootstrap=broker, topics=topics,
                       consumer_group=f"replicas-{suffix}", max_poll_interval_ms=3000, http_host="127.0.0.1",
                       http_port=0, partitions=2)
    Runtime(settings, store).ensure_topics()
    # three ingest replicas for two partitions, two pathway replicas
    procs = [ServiceProcess(Runtime(settings, store), s).build().start()
             for s in ("ingest", "ingest", "ingest", "pathway", "pathway")]
    try:
        loops = [w for p in procs for w in p.workers if isinstance(w, ConsumerLoop)]
        assert all(loop.joined.wait(30) for loop in loops), "every replica, spare or not, joins and is ready"
        assert {loop.consumer.config["group_id"] for loop in loops if loop.service == "ingest"} == {
            f"replicas-{suffix}.ingest"}
        events = generate("dips", 30, 5)
        producer = make_producer(settings)
        for ev in events + events[:40]:  # redeliveries too
            producer.send(topics.dips, key=ev["patient"]["nationalId"].encode(), value=json.dumps(ev).encode())
        producer.flush()
        producer.close()
        unique = len({ev["eventId"] for ev in events})

        def count(table) -> int:
            with store.read() as conn:
                return conn.execute(select(func.count()).select_from(table)).scalar_one()

        eventually(lambda: count(schema.pathway_events) == unique, 60)
        eventually(lambda: count(schema.pathways) == 30, 30)
        assert count(schema.inbound_events) == unique
        with store.read() as conn:
            per_topic = dict(conn.execute(select(schema.outbox.c.topic, func.count())
                                          .group_by(schema.outbox.c.topic)).all())
        assert per_topic[topics.events] == unique  # one canonical event per vendor event, however many replicas
        assert sum(1 for loop in loops if loop.service == "ingest" and loop.consumer.assignment()) <= 2
    finally:
        for p in procs:
            p.stop()
