"""Rejected input is never lost: dead letters can be listed, and replayed once the cause is fixed."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from sqlalchemy import func, select

from app import cli
from forlop import codes
from forlop.clock import parse_time
from forlop.config import load_settings
from forlop.storage import Store, schema
from services.ingest.adapters.repository import SqlIngestUnitOfWork
from services.ingest.domain import dips, esp, validation
from services.ingest.handlers import InboundRecord, ingest


@pytest.fixture
def db(tmp_path, monkeypatch) -> Store:
    url = f"sqlite:///{tmp_path / 'dlq.db'}"
    monkeypatch.setenv("FORLOP_DATABASE_URL", url)
    monkeypatch.setenv("FORLOP_DATA_DIR", str(tmp_path))
    store = Store(url)
    store.migrate()
    return store


def _count(store: Store, table, *where) -> int:
    with store.read() as conn:
        return conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one()


def test_list_and_replay_after_the_code_list_is_fixed(db, contracts_dir, monkeypatch, capsys):
    raw = json.loads((contracts_dir / "dips-examples.ndjson").read_text().splitlines()[0])
    unknown = dict(raw, eventId="5a1c0a52-0000-4000-8000-00000000d11a")
    unknown["document"] = dict(raw["document"], code="D11Q")  # a code the list does not know (yet)
    bad_id = dict(raw, eventId="5a1c0a52-0000-4000-8000-0000000000f1")
    bad_id["patient"] = dict(raw["patient"], nationalId="13837033318")
    topics = load_settings({}).topics
    with db.transaction() as conn:
        records = [InboundRecord(json.dumps(r), "kafka:ehr.dips/0@7") for r in (unknown, bad_id)]
        result = ingest(SqlIngestUnitOfWork(conn), "dips", records, parse_time("2026-01-05"), topics)
    assert len(result.dead_letter_ids) == 2
    assert _count(db, schema.outbox, schema.outbox.c.topic == topics.dead_letter) == 2  # and on the DLQ topic

    assert cli.main(["dlq", "list", "--json"]) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["reasons"][0]["rule"] for r in listed] == ["known-event-code", "national-id-check-digit"]
    assert all(r["raw"] and r["origin"] == "kafka:ehr.dips/0@7" for r in listed)

    assert cli.main(["dlq", "replay", str(listed[0]["id"])]) == 1  # still rejected: nothing fixed yet
    capsys.readouterr()

    # The fix: the code list learns D11Q (a data change); the same record now processes.
    fixed = replace(codes.code_list(), events={**codes.code_list().events,
                                               "Q": {"event": "evaluation", "outcomes": []}})
    for module in (validation, dips, esp):
        monkeypatch.setattr(module, "code_list", lambda: fixed)
    assert cli.main(["dlq", "replay", "--all", "--no-process"]) == 1  # one replayed, one still rejected
    out = capsys.readouterr().out
    assert "replayed" in out and "still-rejected" in out
    assert _count(db, schema.inbound_events) == 1
    assert _count(db, schema.dead_letters, schema.dead_letters.c.status == "replayed") == 1
    assert cli.main(["dlq", "replay", str(listed[0]["id"]), "--no-process"]) == 0  # again: a no-op
    assert _count(db, schema.inbound_events) == 1
