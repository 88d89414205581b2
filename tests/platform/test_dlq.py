"""`forlop dlq list` and `forlop dlq replay` for the dead letters of every consumer stage.

A poison record is dead-lettered as the consumer loop does it (its handler fails in a transaction,
the runtime's quarantine stores it); `dlq replay` runs that consumer's handler on the stored record
again: still failing (with the new reason) until the fix is deployed, then processed.
"""

from __future__ import annotations

import base64
import json
import uuid

import pytest
from sqlalchemy import func, select

from app import cli
from app.bootstrap import Runtime
from forlop.clock import FixedClock, parse_time
from forlop.config import load_settings
from forlop.failures import Failure
from forlop.kafka import Record
from forlop.storage import Store, schema
from services.ingest.handlers import InboundRecord, check_record
from services.messaging.adapters.apprec import build_apprec

NOW = parse_time("2026-01-05T10:00:00+01:00")


@pytest.fixture
def rt(store: Store, tmp_path, monkeypatch) -> Runtime:
    url = store.url.render_as_string(hide_password=False)
    monkeypatch.setenv("FORLOP_DATABASE_URL", url)
    monkeypatch.setenv("FORLOP_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("FORLOP_CLOCK", NOW.isoformat())
    return Runtime(load_settings(), store, FixedClock(NOW))


def _quarantined(rt: Runtime, record: Record) -> None:
    """What the consumer loop does with a record that fails twice the same way."""
    handler = rt.topic_handlers(["pathway", "messaging"])[record.topic]
    failures = []
    for _ in range(2):
        with pytest.raises(Exception) as raised, rt.store.transaction() as conn:  # noqa: PT011 - any exception
            handler(conn, [record])
        failures.append(Failure.of(raised.value))
    assert failures[0].same_as(failures[1])
    rt.quarantine()(record, failures[1], 2)


def _listed(capsys, *args: str) -> list[dict]:
    capsys.readouterr()
    assert cli.main(["dlq", "list", "--json", *args]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def _replay(capsys, *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = cli.main(["dlq", "replay", "--no-process", *args])
    return code, capsys.readouterr().out


def _count(store: Store, column, value) -> int:  # noqa: ANN001
    with store.read() as conn:
        return conn.execute(select(func.count()).select_from(column.table).where(column == value)).scalar_one()


def test_list_and_replay_each_consumer_stage_after_the_fix(rt: Runtime, capsys, monkeypatch, contracts_dir) -> None:
    t = rt.settings.topics
    events = [check_record("dips", InboundRecord(line, "t")).to_dict()
              for line in (contracts_dir / "dips-examples.ndjson").read_text().splitlines() if line]
    first = [e for e in events if e["pathway_id"] == "PPR-1810111"]
    status_changed = {"pathway_key": "dips:PPR-1810111", "pathway_id": "PPR-1810111", "source": "dips",
                      "events": first}
    apprec_id = str(uuid.uuid4())

    def bug(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202 - a defect in a release, fixed in the next
        raise RuntimeError("defect in this release")

    # pathway: a defect in the FHIR mapping; messaging: in the owed-messages rules; receipts: in the parser
    with monkeypatch.context() as broken:
        broken.setattr("services.pathway.derivation.map_pathway", bug)
        broken.setattr("services.messaging.handlers.owed_messages", bug)
        broken.setattr("services.messaging.receipts.parse_apprec", bug)
        _quarantined(rt, Record(t.events, 1, 41, b"13837033319", json.dumps(first[0]).encode(), {"source": "dips"}))
        _quarantined(rt, Record(t.status_changed, 0, 7, b"13837033319", json.dumps(status_changed).encode(), {}))
        _quarantined(rt, Record(t.apprec, 2, 3, b"k", build_apprec(str(uuid.uuid4()), "DIALOG", "ok", NOW, apprec_id),
                                {"correlation-id": "c1"}))
        # and a record no release will process: a tombstone on the receipts topic
        _quarantined(rt, Record(t.apprec, 2, 4, b"k", None, {}))

        listed = {row["stage"]: row for row in _listed(capsys) if row["kafka_offset"] != 4}
        assert set(listed) == {"pathway", "messaging", "receipts"}
        assert [r["stage"] for r in _listed(capsys, "--stage", "pathway")] == ["pathway"]
        pathway = listed["pathway"]
        assert (pathway["topic"], pathway["kafka_partition"], pathway["kafka_offset"]) == (t.events, 1, 41)
        assert base64.b64decode(pathway["rawBase64"]) == json.dumps(first[0]).encode()
        assert pathway["error"]["type"] == "RuntimeError" and pathway["headers"] == {"source": "dips"}
        assert pathway["reasons"][0]["rule"] == "exception"

        code, out = _replay(capsys, str(pathway["id"]))  # not fixed yet
        assert code == 1 and "still-failing" in out and "defect in this release" in out
        assert _listed(capsys, "--stage", "pathway")[0]["status"] == "still-failing"

    # The fix is deployed: each record is processed by its consumer's handler.
    for stage in ("pathway", "messaging", "receipts"):
        code, out = _replay(capsys, str(listed[stage]["id"]))
        assert code == 0 and out.strip() == f"{listed[stage]['id']}: replayed"
    assert _count(rt.store, schema.pathway_events.c.event_id, first[0]["event_id"]) == 1
    assert _count(rt.store, schema.pathways.c.pathway_key, "dips:PPR-1810111") == 1
    assert _count(rt.store, schema.messages.c.pathway_key, "dips:PPR-1810111") > 0
    assert _count(rt.store, schema.receipts.c.apprec_msg_id, apprec_id) == 1

    [tombstone] = _listed(capsys)  # only the tombstone is unresolved
    code, out = _replay(capsys, "--all", "--stage", "receipts")
    assert code == 1 and "still-failing" in out
    assert _listed(capsys, "--stage", "receipts")[0]["id"] == tombstone["id"]
    assert {r["status"] for r in _listed(capsys, "--all")} == {"replayed", "still-failing"}


def test_an_ingest_dead_letter_lists_with_its_exact_bytes_and_replays(rt: Runtime, capsys, contracts_dir) -> None:
    line = (contracts_dir / "dips-examples.ndjson").read_text().splitlines()[0]
    unknown_code = line.replace('"code": "D11A"', '"code": "D11Q"').encode()
    handler = rt.topic_handlers(["ingest"])[rt.settings.topics.dips]
    with rt.store.transaction() as conn:  # a rejection: dead-lettered by the ingest flow itself
        handler(conn, [Record(rt.settings.topics.dips, 3, 99, b"13837033319", unknown_code, {"h": "v"})])
    [row] = _listed(capsys, "--stage", "ingest")
    assert (row["stage"], row["source"], row["topic"], row["kafka_partition"], row["kafka_offset"]) == (
        "ingest", "dips", rt.settings.topics.dips, 3, 99)
    assert base64.b64decode(row["rawBase64"]) == unknown_code and row["headers"] == {"h": "v"}
    assert row["reasons"][0]["rule"] == "known-event-code" and row["error"] is None
    code, out = _replay(capsys, "--all", "--stage", "ingest")
    assert code == 1 and "still-rejected" in out
    assert _listed(capsys, "--stage", "pathway") == []
