"""The same event id with other content is a conflicting duplicate: rejected and kept, never dropped.

A redelivery (the same content, also with other key order or whitespace) stays a plain duplicate.
From Kafka the conflict is a dead letter naming the id; over HTTP a 409 OperationOutcome.
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select, update

from app.bootstrap import Runtime
from forlop.auth import SCOPE_WRITE_EVENTS, TokenVerifier, mint_dev_token
from forlop.clock import FixedClock, parse_time
from forlop.config import load_settings
from forlop.storage import Store, schema
from services.api.app import ApiDeps, create_app
from services.ingest.adapters.repository import SqlIngestUnitOfWork
from services.ingest.handlers import InboundRecord, fingerprint, ingest

NOW = parse_time("2026-01-05T10:00:00+01:00")
TOPICS = load_settings({}).topics


@pytest.fixture
def dips(contracts_dir) -> list[dict]:
    return [json.loads(x) for x in (contracts_dir / "dips-examples.ndjson").read_text().splitlines() if x]


def _ingest(store: Store, *raws: bytes | dict):  # noqa: ANN202 - IngestResult
    with store.transaction() as conn:
        return ingest(SqlIngestUnitOfWork(conn), "dips", [InboundRecord(r, f"kafka:ehr.dips/0@{i}") for i, r in enumerate(raws)],
                      NOW, TOPICS)


def _count(store: Store, table, *where) -> int:  # noqa: ANN001
    with store.read() as conn:
        return conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one()


def _changed(record: dict) -> dict:
    return dict(record, unit=dict(record["unit"], name="DPS Sørvest poliklinikk"))


def test_a_redelivery_is_a_duplicate_whatever_its_layout(store: Store, dips) -> None:
    original = json.dumps(dips[0]).encode()
    reordered = json.dumps(dict(reversed(list(dips[0].items()))), indent=2, ensure_ascii=True).encode()
    assert fingerprint(InboundRecord(original, "a")) == fingerprint(InboundRecord(reordered, "b")) \
        == fingerprint(InboundRecord(dips[0], "http"))
    assert len(_ingest(store, original).accepted) == 1
    again = _ingest(store, reordered)
    assert (again.duplicates, again.conflicts, again.dead_letter_ids) == (1, [], [])


def test_the_same_id_with_other_content_is_dead_lettered_naming_it(store: Store, dips) -> None:
    _ingest(store, json.dumps(dips[0]).encode())
    result = _ingest(store, json.dumps(_changed(dips[0])).encode())
    event_id = f"dips:{dips[0]['eventId']}"
    assert result.accepted == [] and result.duplicates == 0 and result.conflicts == [event_id]
    with store.read() as conn:
        [letter] = conn.execute(select(schema.dead_letters)).all()
        stored_raw = conn.execute(select(schema.inbound_events.c.raw)).scalar_one()
    assert letter.stage == "ingest" and letter.reasons[0]["rule"] == "conflicting-duplicate"
    assert letter.reasons[0]["field"] == "eventId" and event_id in letter.reasons[0]["message"]
    assert letter.raw_bytes == json.dumps(_changed(dips[0])).encode()  # the change is kept for inspection
    assert "Sørvest" not in stored_raw  # and not applied
    assert _count(store, schema.outbox, schema.outbox.c.topic == TOPICS.events) == 1


def test_two_versions_in_one_batch(store: Store, dips) -> None:
    result = _ingest(store, json.dumps(dips[0]).encode(), json.dumps(_changed(dips[0])).encode())
    assert len(result.accepted) == 1 and result.conflicts == [f"dips:{dips[0]['eventId']}"]


def test_events_stored_before_fingerprints_are_compared_by_their_raw_record(store: Store, dips) -> None:
    _ingest(store, json.dumps(dips[0]).encode())
    with store.transaction() as conn:  # as a database written before migration 10 holds it
        conn.execute(update(schema.inbound_events).values(fingerprint=None))
    assert _ingest(store, json.dumps(dips[0], indent=1).encode()).duplicates == 1
    assert _ingest(store, json.dumps(_changed(dips[0])).encode()).conflicts == [f"dips:{dips[0]['eventId']}"]


def test_http_answers_409_naming_the_id_and_stores_nothing_of_the_request(store: Store, dips, tmp_path) -> None:
    settings = load_settings({"FORLOP_DATA_DIR": str(tmp_path)})
    rt = Runtime(settings, store, FixedClock(NOW))
    client = create_app(ApiDeps(settings, store, rt.clock, TokenVerifier(settings))).test_client()
    write = {"Authorization": f"Bearer {mint_dev_token(settings, [SCOPE_WRITE_EVENTS])}"}
    assert client.post("/ingest/dips", json=dips[0], headers=write).status_code == 202
    assert client.post("/ingest/dips", json=dict(reversed(list(dips[0].items()))), headers=write).json["duplicates"] == 1

    resp = client.post("/ingest/dips", json=[dips[1], _changed(dips[0])], headers=write)
    assert resp.status_code == 409 and resp.content_type.startswith("application/fhir+json")
    [issue] = resp.json["issue"]
    assert resp.json["resourceType"] == "OperationOutcome" and issue["code"] == "conflict"
    assert f"dips:{dips[0]['eventId']}" in issue["diagnostics"]
    assert _count(store, schema.inbound_events) == 1  # all or nothing: dips[1] was not stored either
    assert _count(store, schema.dead_letters) == 0  # the sender has the refused request


@pytest.mark.parametrize("text", [
    '{"a": 123456789012345678901234567890}',  # beyond 64 bits: orjson would read a rounded float
    '{"a": 18446744073709551615}', '{"a": 1e19}', '{"a": 1e400}', '{"a": "\\ud800"}', '{"a": "ø", "b": [1, 2.5]}',
])
def test_a_fingerprint_is_the_same_over_http_and_kafka_and_exact(text: str) -> None:
    assert fingerprint(InboundRecord(text.encode(), "kafka")) == fingerprint(InboundRecord(json.loads(text), "http"))


def test_a_fingerprint_tells_apart_what_differs() -> None:
    for a, b in (('{"a": 123456789012345678901234567890}', '{"a": 123456789012345678901234567891}'),
                 ('{"a": 1}', '{"a": 1.0}'), ('{"a": "x"}', '{"a": "y"}')):
        assert fingerprint(InboundRecord(a, "a")) != fingerprint(InboundRecord(b, "b")), (a, b)
