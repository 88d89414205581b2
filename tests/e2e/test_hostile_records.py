"""Hostile vendor records on the real broker, each followed by a valid one: 0 stalls.

The records come from hypothesis strategies (devtools/forlop_devtools/fuzz_ingest.py: huge numbers, deep nesting, lone
surrogates, NUL, wrong types, extreme dates, huge strings, random bytes, tombstones, valid records with
one field mutated), produced to both vendor topics of a running pipeline; the valid record behind each
must be derived within a bounded time. A few dozen here; `make fuzz-ingest` runs hundreds.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from app.embedded import consumer_lag
from forlop.clock import FixedClock
from forlop.kafka import make_producer
from forlop_devtools.fuzz_ingest import Probe, run_examples
from tests.e2e.conftest import eventually

pytestmark = pytest.mark.broker

AS_OF = datetime(2026, 1, 5, 10, 0, tzinfo=timezone(timedelta(hours=1)))
EXAMPLES = 24


def test_no_hostile_vendor_record_stalls_the_pipeline(pipeline, store) -> None:
    rt = pipeline(FixedClock(AS_OF))
    producer = make_producer(rt.settings)
    probe = Probe(rt, producer)
    try:
        run_examples(probe, EXAMPLES)  # raises Stall when a valid record is not derived in time
    finally:
        producer.close()
    assert len(probe.latencies) == EXAMPLES
    # and nothing is stuck further on: every consumer group reaches the end of its topics
    eventually(lambda: consumer_lag(rt.settings, ("ingest", "pathway", "messaging")) == 0, 60)
