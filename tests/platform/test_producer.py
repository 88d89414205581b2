"""The producer against the bundled broker: a relay page of status-changed records (~6 KiB each)
for one partition goes out in a request or two, not one per couple of records."""

from __future__ import annotations

import uuid
from dataclasses import replace

from forlop.config import load_settings
from forlop.kafka import ensure_topics, make_producer


def test_a_page_of_large_records_for_one_partition_goes_out_in_few_requests(broker: str, tmp_path) -> None:
    settings = replace(load_settings({"FORLOP_DATA_DIR": str(tmp_path)}), kafka_bootstrap=broker, partitions=1)
    topic = f"producer.{uuid.uuid4().hex[:8]}"
    ensure_topics(settings, [topic])
    producer = make_producer(settings)
    try:
        futures = [producer.send(topic, key=b"patient-1", value=b"x" * 6000) for _ in range(40)]
        producer.flush()
        assert all(f.get(timeout=30).topic == topic for f in futures)
        figures = producer.metrics()["producer-metrics"]
        # 16 KiB batches (kafka-python's default) carry 2 of these per request; 256 KiB take all 40
        # at once, or in a few requests where the 5 ms linger ends before the last send
        assert figures["records-per-request-avg"] >= 8, figures["records-per-request-avg"]
    finally:
        producer.close()
