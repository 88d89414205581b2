"""The consumer loop against the bundled broker: a poll is one batch (every partition and topic it
returned), committed only after its handler returns; a failed batch comes back whole."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from dataclasses import replace

from kafka import KafkaConsumer, TopicPartition

from forlop.config import load_settings
from forlop.kafka import ConsumerLoop, Record, client_options, ensure_topics, group_id, make_producer
from tests.e2e.conftest import eventually


def _settings(broker: str, tmp_path):  # noqa: ANN001, ANN202
    return replace(load_settings({"FORLOP_DATA_DIR": str(tmp_path)}), kafka_bootstrap=broker,
                   consumer_group=f"test-{uuid.uuid4().hex[:8]}", max_poll_interval_ms=3000, partitions=3)


def _committed(settings, service: str, topics: Sequence[str]) -> dict[tuple[str, int], int | None]:  # noqa: ANN001
    probe = KafkaConsumer(**client_options(settings), group_id=group_id(settings, service), enable_auto_commit=False)
    try:
        return {(t, p): probe.committed(TopicPartition(t, p)) for t in topics for p in range(settings.partitions)}
    finally:
        probe.close()


def test_a_failed_batch_of_several_partitions_and_topics_comes_back_whole(broker: str, tmp_path) -> None:
    settings = _settings(broker, tmp_path)
    topics = [f"loop-a.{uuid.uuid4().hex[:8]}", f"loop-b.{uuid.uuid4().hex[:8]}"]
    ensure_topics(settings, topics)
    producer = make_producer(settings)
    sent = []
    for i in range(60):
        topic = topics[i % 2]
        key = f"patient-{i % 7}".encode()  # several keys: records land on every partition
        producer.send(topic, key=key, value=f"{topic}:{i}".encode())
        sent.append(f"{topic}:{i}".encode())
    producer.flush()
    producer.close()

    calls: list[list[Record]] = []
    stored: list[Record] = []  # what the "transaction" kept: only batches whose handler returned
    lock = threading.Lock()

    def handler(batch: Sequence[Record]) -> None:
        with lock:
            calls.append(list(batch))
            if len(calls) == 1:
                raise RuntimeError("database unavailable")  # the whole batch is rolled back
            stored.extend(batch)

    loop = ConsumerLoop(settings, "looptest", topics, handler)
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    try:
        eventually(lambda: len(stored) >= len(sent), timeout=60)
        ends = {}
        for r in stored:
            ends[(r.topic, r.partition)] = max(ends.get((r.topic, r.partition), -1), r.offset + 1)

        def committed_at_the_ends() -> bool:
            committed = _committed(settings, "looptest", topics)
            return committed == {k: ends.get(k) for k in committed}

        eventually(committed_at_the_ends, timeout=30)
    finally:
        loop.stop()
        thread.join(15)

    assert loop.last_error == "RuntimeError: database unavailable"
    failed = calls[0]
    # Every record is in the store exactly once: the failed batch's records came back, none was skipped.
    assert sorted(r.value for r in stored) == sorted(sent)
    assert {(r.topic, r.partition, r.offset) for r in failed} <= {(r.topic, r.partition, r.offset) for r in stored}
    # Each partition's records reach the handler in offset order, within a batch and across batches.
    for key in {(r.topic, r.partition) for r in stored}:
        offsets = [r.offset for r in stored if (r.topic, r.partition) == key]
        assert offsets == sorted(offsets) == list(range(offsets[0], offsets[0] + len(offsets)))
    # A poll is one batch: some batch held records of more than one partition.
    assert any(len({(r.topic, r.partition) for r in batch}) > 1 for batch in calls)
