"""What ops teams see from the running services: /metrics, probes, and JSON logs that follow an event
from ingest through pathway to messaging by its correlation id, with no fødselsnummer in them."""

from __future__ import annotations

import json
import re
import urllib.request
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from forlop.clock import FixedClock
from forlop.kafka import make_producer
from forlop.metrics import refresh_gauges
from forlop.storage import schema
from tests.conftest import production_logs
from tests.e2e.conftest import eventually

pytestmark = pytest.mark.broker

AS_OF = datetime(2026, 1, 5, 10, 0, tzinfo=timezone(timedelta(hours=1)))


@pytest.fixture
def json_logs():
    """The services' log output as the production handler writes it (masking filter + JSON)."""
    with production_logs() as stream:
        yield stream


def _text(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_metrics_probes_and_masked_correlated_logs(pipeline, store, contracts_dir, json_logs):
    rt = pipeline(FixedClock(AS_OF))
    lines = [json.loads(x) for x in (contracts_dir / "dips-examples.ndjson").read_text().splitlines()]
    bad = dict(lines[0], eventId="6f1c0a52-0000-4000-8000-000000000001")
    bad["patient"] = dict(bad["patient"], nationalId="13837033318")  # wrong check digit: dead-lettered
    producer = make_producer(rt.settings)
    for ev in [*lines, bad]:
        producer.send(rt.settings.topics.dips, key=ev["patient"]["nationalId"].encode(), value=json.dumps(ev).encode())
    producer.flush()
    producer.close()

    def settled() -> bool:
        with store.read() as conn:
            m = conn.execute(select(func.count()).select_from(schema.messages)).scalar_one()
            o = conn.execute(select(func.count()).select_from(schema.outbox)
                             .where(schema.outbox.c.published_at.is_(None))).scalar_one()
        return m > 0 and o == 0

    eventually(settled, 60)
    last = max((ev for ev in lines if ev["pathway"]["id"] == "PPR-1810111"), key=lambda ev: ev["recordedTime"])
    correlation = f"dips:{last['eventId']}"

    def followed() -> set[str]:
        loggers = set()
        for line in json_logs.getvalue().splitlines():
            doc = json.loads(line)
            if doc.get("correlation_id") == correlation:
                loggers.add(doc["logger"])
        return loggers if {"services.ingest.handlers", "services.pathway.handlers",
                            "services.messaging.handlers"} <= loggers else set()

    eventually(followed, 30)
    output = json_logs.getvalue()
    national_ids = {ev["patient"]["nationalId"] for ev in lines} | {"13837033318"}
    assert not [n for n in national_ids if n in output], "a fødselsnummer reached the logs"
    assert re.search(r'"patient": "\*{11}#[a-p]{12}"', output)  # masked, not dropped

    for service in ("ingest", "pathway", "messaging"):
        port = rt.processes[service].port
        assert _text(port, "/healthz")[0] == 200
        status, body = _text(port, "/readyz")
        assert status == 200 and json.loads(body)["status"] == "ready", body
    refresh_gauges(store, rt.clock())  # the services' metrics worker does this every 15 s
    status, metrics = _text(rt.processes["ingest"].port, "/metrics")
    assert status == 200
    for needle in ('forlop_events_consumed_total{source="dips"}', 'forlop_events_accepted_total{source="dips"}',
                   'forlop_events_rejected_total{reason="national-id-check-digit",source="dips"}',
                   "forlop_dead_letter_total", "forlop_processing_seconds_bucket", "forlop_consumer_lag",
                   "forlop_pathways{", "forlop_alerts_emitted_total", "forlop_messages{",
                   'forlop_dead_letters_open{source="dips"} 1.0'):
        assert needle in metrics, needle
