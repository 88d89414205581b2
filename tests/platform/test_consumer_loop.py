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


def _batches_of_a_trickle(broker: str, tmp_path, batch_wait_ms: int) -> list[int]:  # noqa: ANN001
    """Batch sizes a loop hands over while 24 records arrive one every 20 ms (about half a second)."""
    settings = _settings(broker, tmp_path)
    topic = f"loop-trickle.{uuid.uuid4().hex[:8]}"
    ensure_topics(settings, [topic])
    sizes: list[int] = []
    loop = ConsumerLoop(settings, "trickle", [topic], lambda batch: sizes.append(len(batch)),
                        batch_wait_ms=batch_wait_ms)
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    producer = make_producer(settings)
    try:
        assert loop.joined.wait(60)
        for i in range(24):
            producer.send(topic, key=b"patient-1", value=str(i).encode())
            producer.flush()
            threading.Event().wait(0.02)  # the trickle's pace, not a wait for a result
        eventually(lambda: sum(sizes) >= 24, timeout=30)
    finally:
        producer.close()
        loop.stop()
        thread.join(15)
    assert sum(sizes) == 24
    return sizes


def test_a_loop_that_may_wait_for_a_batch_takes_a_trickle_in_a_few_polls(broker: str, tmp_path) -> None:
    # The broker holds the fetch up to batch_wait_ms for BATCH_MIN_BYTES: half a second of
    # records comes in one or two batches instead of one poll per record or two.
    waiting = _batches_of_a_trickle(broker, tmp_path, batch_wait_ms=1500)
    assert len(waiting) <= 3, waiting
    eager = _batches_of_a_trickle(broker, tmp_path, batch_wait_ms=0)
    assert len(eager) >= 8, eager


def test_only_the_vendor_topics_consumer_waits_for_a_batch(tmp_path) -> None:
    from app.bootstrap import Runtime
    from forlop.storage import Store

    settings = load_settings({"FORLOP_DATA_DIR": str(tmp_path), "FORLOP_INGEST_BATCH_WAIT_MS": "25"})
    rt = Runtime(settings, Store(f"sqlite:///{tmp_path}/w.db"))
    assert rt.consumer("ingest").batch_wait_ms == 25
    assert rt.consumer("pathway").batch_wait_ms == 0
    assert rt.consumer("messaging").batch_wait_ms == 0
    assert load_settings({"FORLOP_DATA_DIR": str(tmp_path)}).ingest_batch_wait_ms == 20


def test_the_lag_gauge_is_set_at_most_once_a_second_not_after_every_poll(broker: str, tmp_path) -> None:
    from prometheus_client import REGISTRY

    from forlop.kafka import LAG_REPORT_INTERVAL_S

    settings = _settings(broker, tmp_path)
    topic = f"lag.{uuid.uuid4().hex[:8]}"
    ensure_topics(settings, [topic])
    producer = make_producer(settings)
    for i in range(10):
        producer.send(topic, key=b"patient-1", value=str(i).encode(), partition=0)
    producer.flush()
    producer.close()
    consumer = KafkaConsumer(**client_options(settings), enable_auto_commit=False, max_poll_records=4)
    partitions = [TopicPartition(topic, p) for p in range(settings.partitions)]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    lookups = 0
    real_position = consumer.position

    def counted_position(tp, timeout_ms=None):  # noqa: ANN001, ANN202
        nonlocal lookups
        lookups += 1
        return real_position(tp, timeout_ms=timeout_ms)

    consumer.position = counted_position
    loop = ConsumerLoop(settings, "lagtest", [topic], lambda batch: None)
    try:
        # the first poll returns 4 records and learns partition 0's end (10); the others stay unknown
        eventually(lambda: bool(consumer.poll(timeout_ms=500)), timeout=30)
        eventually(lambda: consumer.highwater(partitions[0]) is not None, timeout=30)
        for step in range(50):  # 50 polls within one interval
            loop._report_lag(consumer, 100.0 + step * LAG_REPORT_INTERVAL_S / 100)
        known = sum(1 for tp in partitions if consumer.highwater(tp) is not None)
        assert lookups == known  # once per partition whose end is known, not 50 times
        assert REGISTRY.get_sample_value("forlop_consumer_lag", {"topic": topic, "partition": "0"}) == 6
        loop._report_lag(consumer, 100.0 + LAG_REPORT_INTERVAL_S)
        assert lookups == 2 * known
    finally:
        consumer.close()


def test_a_poison_record_is_quarantined_and_the_records_after_it_are_handled_in_order(broker: str, tmp_path) -> None:
    """A batch that fails is handled again record by record: a record that fails the same way twice is
    quarantined (once), one whose failures differ every time after ISOLATION_MAX_ATTEMPTS, one that fails
    once (a deadlock, say) is handled on the retry; every other record once, each partition in order;
    the offsets are committed past all of them and a restarted loop does not see them again."""
    from forlop.failures import Failure
    from forlop.kafka import ISOLATION_MAX_ATTEMPTS

    settings = replace(_settings(broker, tmp_path), max_poll_interval_ms=1000)
    topic = f"poison.{uuid.uuid4().hex[:8]}"
    ensure_topics(settings, [topic])
    special = {7: b"poison", 19: b"varying", 23: b"flaky"}
    producer = make_producer(settings)
    for i in range(40):
        producer.send(topic, key=f"patient-{i % 5}".encode(), value=special.get(i, f"ok-{i}".encode()))
    producer.flush()

    handled: list[Record] = []
    quarantined: list[tuple[Record, Failure, int]] = []
    attempts = {"varying": 0, "flaky-alone": 0}

    def handler(batch: Sequence[Record]) -> None:
        kept = []
        for r in batch:  # as a transaction: all of the batch or nothing
            if r.value == b"poison":
                raise ValueError("year 1 is out of range")
            if r.value == b"varying":
                attempts["varying"] += 1
                raise ValueError(f"failed at attempt {attempts['varying']}")
            if r.value == b"flaky" and (len(batch) > 1 or attempts["flaky-alone"] == 0):
                attempts["flaky-alone"] += len(batch) == 1
                raise RuntimeError("deadlock detected")
            kept.append(r)
        handled.extend(kept)

    def run(loop: ConsumerLoop) -> threading.Thread:
        thread = threading.Thread(target=loop.run, daemon=True)
        thread.start()
        return thread

    waits: list[float] = []
    loop = ConsumerLoop(settings, "poisontest", [topic], handler, wait=waits.append,
                        quarantine=lambda r, f, n: quarantined.append((r, f, n)))
    thread = run(loop)
    try:
        eventually(lambda: len(handled) == 38 and len(quarantined) == 2, timeout=60)

        def committed_at_the_end() -> bool:
            ends = {}
            for r in handled + [q[0] for q in quarantined]:
                ends[(r.topic, r.partition)] = max(ends.get((r.topic, r.partition), 0), r.offset + 1)
            return all(_committed(settings, "poisontest", [topic])[k] == v for k, v in ends.items())

        eventually(committed_at_the_end, timeout=30)
    finally:
        loop.stop()
        thread.join(15)
    assert waits == []  # nothing of this was the infrastructure's
    assert sorted(r.value for r in handled) == sorted([f"ok-{i}".encode() for i in range(40) if i not in special]
                                                      + [b"flaky"])
    (poison, failure, tries), (varying, _, varying_tries) = sorted(quarantined, key=lambda q: q[0].value != b"poison")
    assert poison.value == b"poison" and tries == 2 and failure.type == "ValueError"
    assert failure.message == "year 1 is out of range" and failure.traceback
    assert varying.value == b"varying" and varying_tries == ISOLATION_MAX_ATTEMPTS
    for partition in {r.partition for r in handled}:
        offsets = [r.offset for r in handled if r.partition == partition]
        assert offsets == sorted(offsets)  # each partition in order, across the retries

    producer.send(topic, key=b"patient-0", value=b"after-restart")
    producer.flush()
    producer.close()
    seen: list[Record] = []
    again = ConsumerLoop(settings, "poisontest", [topic], seen.extend, wait=waits.append,
                         quarantine=lambda r, f, n: quarantined.append((r, f, n)))
    thread = run(again)
    try:
        eventually(lambda: any(r.value == b"after-restart" for r in seen), timeout=60)
    finally:
        again.stop()
        thread.join(15)
    assert [r.value for r in seen] == [b"after-restart"] and len(quarantined) == 2
