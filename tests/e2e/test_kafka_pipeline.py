"""End to end through the real broker: vendor events on Kafka become FHIR resources on the API.

Also: the same files through `forlop replay` give the same resources as the Kafka path.
"""

from __future__ import annotations

import json
import urllib.request
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from app.bootstrap import Runtime
from app.export import resources_at
from app.replay.pipeline import replay_file
from forlop.auth import SCOPE_READ, mint_dev_token
from forlop.clock import FixedClock
from forlop.kafka import make_producer
from forlop.storage import Store, schema
from tests.e2e.conftest import eventually

pytestmark = pytest.mark.broker

CET = timezone(timedelta(hours=1))
AS_OF = datetime(2026, 1, 5, 10, 0, tzinfo=CET)


def _lines(contracts_dir, vendor: str) -> list[dict]:
    path = contracts_dir / f"{vendor}-examples.ndjson"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _get(rt: Runtime, path: str, token: str) -> dict:
    req = urllib.request.Request(
        f"http://127.0.0.1:{rt.api_port}{path}", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("application/fhir+json")
        return json.loads(resp.read())


def _count(store: Store, table) -> int:
    with store.read() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def _history_matches_resources(store: Store) -> None:
    r, h, d = schema.fhir_resources, schema.fhir_history, schema.fhir_deleted
    with store.read() as conn:
        newest = {}
        for row in conn.execute(select(h.c.resource_type, h.c.id, h.c.version_id, h.c.method, h.c.resource)
                                .order_by(h.c.version_id)):
            newest[(row.resource_type, row.id)] = (row.version_id, row.method, row.resource)
        current = {(row.resource_type, row.id): (row.version_id, "PUT" if row.version_id > 1 else "POST",
                                                  row.resource)
                   for row in conn.execute(select(r.c.resource_type, r.c.id, r.c.version_id, r.c.resource))}
        deleted = {(row.resource_type, row.id): (row.version_id, "DELETE", None)
                   for row in conn.execute(select(d.c.resource_type, d.c.id, d.c.version_id))}
    assert current and newest == {**current, **deleted}


def _unpublished(store: Store) -> int:
    with store.read() as conn:
        return conn.execute(
            select(func.count()).select_from(schema.outbox).where(schema.outbox.c.published_at.is_(None))
        ).scalar_one()


def test_vendor_events_through_kafka_become_fhir_on_the_api(pipeline, store, contracts_dir):
    rt = pipeline(FixedClock(AS_OF))
    dips, esp = _lines(contracts_dir, "dips"), _lines(contracts_dir, "esp")
    producer = make_producer(rt.settings)
    for ev in dips + dips[:2]:  # two redeliveries
        producer.send(rt.settings.topics.dips, key=ev["patient"]["nationalId"].encode(), value=json.dumps(ev).encode())
    broken = dict(esp[0], meldingsId="bad-1", fodselsnummer="13837033318")  # wrong check digit
    for ev in [*esp, broken]:
        producer.send(rt.settings.topics.esp, key=ev["fodselsnummer"].encode(), value=json.dumps(ev).encode())
    producer.flush()
    producer.close()

    eventually(lambda: _count(store, schema.pathways) == 6 and _count(store, schema.dead_letters) == 1, 60)
    eventually(lambda: _count(store, schema.pathway_events) == len(dips) + len(esp), 60)
    eventually(lambda: _unpublished(store) == 0, 60)
    assert _count(store, schema.inbound_events) == len(dips) + len(esp)  # duplicates stored once

    with store.read() as conn:
        dead = conn.execute(select(schema.dead_letters)).one()
    assert dead.source == "esp" and any(r["field"] == "fodselsnummer" for r in dead.reasons)

    token = mint_dev_token(rt.settings, [SCOPE_READ])
    expected = json.loads((contracts_dir / "expected-status.json").read_text())
    for pathway_id in ("PPR-1810111", "eSP-6029255"):  # their as_of is the pipeline's clock
        bundle = _get(rt, f"/fhir/EpisodeOfCare?identifier={pathway_id}", token)
        assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset" and bundle["total"] == 1
        episode = bundle["entry"][0]["resource"]
        assert episode["status"] == expected[pathway_id]["episode"]
        tasks = _get(rt, f"/fhir/Task?focus=EpisodeOfCare/{episode['id']}&_count=50", token)
        with_deadline = [
            t["resource"] for t in tasks["entry"] if t["resource"].get("restriction", {}).get("period", {}).get("end")
        ]
        got = sorted(
            (t["code"]["coding"][0]["code"], t["restriction"]["period"]["end"], t["businessStatus"]["coding"][0]["code"])
            for t in with_deadline
        )
        want = sorted((m["code"], m["deadline"], m["status"]) for m in expected[pathway_id]["milestones"])
        assert got == want
        patient = _get(rt, f"/fhir/{episode['patient']['reference']}", token)
        fnr = patient["identifier"][0]["value"]
        by_fnr = _get(rt, f"/fhir/EpisodeOfCare?patient:identifier={fnr}", token)
        assert by_fnr["total"] == 1
    finished = _get(rt, "/fhir/EpisodeOfCare?status=finished", token)
    assert {e["resource"]["identifier"][0]["value"] for e in finished["entry"]} == {"PPR-6175466", "eSP-8653855"}


def test_replay_and_export_give_the_same_resources_as_kafka(pipeline, store, contracts_dir, tmp_path):
    rt = pipeline(FixedClock(AS_OF))
    dips, esp = _lines(contracts_dir, "dips"), _lines(contracts_dir, "esp")
    producer = make_producer(rt.settings)
    for ev in dips:
        producer.send(rt.settings.topics.dips, key=ev["patient"]["nationalId"].encode(), value=json.dumps(ev).encode())
    for ev in esp:
        producer.send(rt.settings.topics.esp, key=ev["fodselsnummer"].encode(), value=json.dumps(ev).encode())
    producer.flush()
    producer.close()
    eventually(lambda: _count(store, schema.pathway_events) == len(dips) + len(esp), 60)
    eventually(lambda: _unpublished(store) == 0, 60)
    via_kafka = sorted(resources_at(rt, AS_OF), key=lambda r: (r["resourceType"], r["id"]))

    replay_store = Store(f"sqlite:///{tmp_path / 'replay.db'}")
    replay_store.migrate()
    replay_rt = Runtime(rt.settings, replay_store, FixedClock(AS_OF))
    for vendor, lines in (("dips", dips), ("esp", esp)):
        path = tmp_path / f"{vendor}.ndjson"
        path.write_text("\n".join(json.dumps(e) for e in lines) + "\n")
        first = replay_file(replay_rt, vendor, path, progress=None)
        assert (first.accepted, first.duplicates, first.rejected) == (len(lines), 0, 0)
        again = replay_file(replay_rt, vendor, path, progress=None)
        assert (again.accepted, again.duplicates, again.rejected) == (0, len(lines), 0)
    via_replay = sorted(resources_at(replay_rt, AS_OF), key=lambda r: (r["resourceType"], r["id"]))
    assert via_replay == via_kafka
    # Both paths write through the same repository: each resource's current version is its newest
    # history entry, with the same content, and each deleted one's deletion is (replay derives a
    # pathway once, so it keeps fewer intermediate versions than event-by-event Kafka processing).
    for kept in (store, replay_store):
        _history_matches_resources(kept)
    assert len(via_kafka) > 6
