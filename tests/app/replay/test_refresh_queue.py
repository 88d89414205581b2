"""Replay derives each pathway once: events are stored and their pathways queued, then derived.

The queue row goes in with the events and out with the derivation, so a replay stopped in
between is finished by the next replay (or the pathway service's scanner step): nothing is lost.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.bootstrap import Runtime
from app.replay.pipeline import replay_file
from forlop.clock import FixedClock
from forlop.config import load_settings
from forlop.storage import Store, schema
from forlop_devtools.synthetic import generate
from services.ingest.domain.normalise import parse_vendor_event
from services.ingest.handlers import InboundRecord, ingest
from services.pathway.domain.rules import RuleBook
from services.pathway.handlers import PathwayDeps, handle_events, refresh_queued
from tests.builders import at

AS_OF = at("2026-03-01")


def _count(store: Store, table) -> int:
    with store.read() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def _statuses(store: Store) -> dict[str, dict]:
    p = schema.pathways
    with store.read() as conn:
        return {row.pathway_key: row.status for row in conn.execute(select(p.c.pathway_key, p.c.status))}


def test_deferred_events_are_derived_once_from_the_queue_as_if_handled_at_once(store: Store, tmp_path: Path):
    deps = PathwayDeps(RuleBook.load(), load_settings({}).topics)
    events = [parse_vendor_event("dips", r) for r in generate("dips", 12, 5, as_of=AS_OF)]
    halves = (events[: len(events) // 2], events[len(events) // 2 :])
    for half in halves:
        with store.transaction() as conn:
            handle_events(conn, half, AS_OF, deps, defer=True)
    keys = {ev.pathway_key for ev in events}
    assert _count(store, schema.pathways) == 0 and _count(store, schema.pathway_refresh_queue) == len(keys)
    with store.transaction() as conn:
        first = refresh_queued(conn, AS_OF, deps, limit=5)
    assert len(first.refreshed) == 5 and _count(store, schema.pathway_refresh_queue) == len(keys) - 5
    with store.transaction() as conn:
        rest = refresh_queued(conn, AS_OF, deps)
    assert sorted(first.refreshed + rest.refreshed) == sorted(keys)
    assert _count(store, schema.pathway_refresh_queue) == 0

    at_once = Store(f"sqlite:///{tmp_path / 'at-once.db'}")
    at_once.migrate()
    with at_once.transaction() as conn:
        handle_events(conn, events, AS_OF, deps)
    assert _statuses(store) == _statuses(at_once)


@pytest.fixture
def dips_file(tmp_path: Path) -> Path:
    path = tmp_path / "dips.ndjson"
    path.write_text("".join(json.dumps(r) + "\n" for r in generate("dips", 15, 9, as_of=AS_OF)))
    return path


def test_a_replay_stopped_before_deriving_is_finished_by_the_next_one(store, dips_file, monkeypatch):
    rt = Runtime(load_settings({}), store, FixedClock(AS_OF))

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("app.replay.pipeline.derive_queued", stopped)
    with pytest.raises(KeyboardInterrupt):
        replay_file(rt, "dips", dips_file, progress=None)
    queued = _count(store, schema.pathway_refresh_queue)
    assert queued == 15 and _count(store, schema.pathways) == 0
    monkeypatch.undo()

    again = replay_file(rt, "dips", dips_file, progress=None)
    assert again.accepted == 0 and again.pathways == 15  # every event known, every pathway derived
    assert _count(store, schema.pathways) == 15 and _count(store, schema.pathway_refresh_queue) == 0
    assert again.status_changes == 15  # one status change per pathway, handed to messaging: derived once
    assert _count(store, schema.messages) > 0
    o = schema.outbox
    with store.read() as conn:
        in_outbox = conn.execute(
            select(func.count()).select_from(o).where(o.c.topic.in_([rt.settings.topics.status_changed,
                                                                      rt.settings.topics.events]))
        ).scalar_one()
    assert in_outbox == 0  # the in-process hops write no outbox records


def _messages(store: Store) -> list[tuple]:
    m = schema.messages
    cols = [c for c in m.c if c.name not in ("id", "xml", "corrects", "conversation_ref")]  # ids are new uuids
    with store.read() as conn:
        return sorted(tuple(row) for row in conn.execute(select(*cols, m.c.xml.is_not(None))))


def test_a_replay_hands_over_what_the_outbox_records_would_deliver(store, another_store, dips_file, contracts_dir):
    """Replay skips the outbox between its in-process hops (fix 30 of docs/performance.md); the
    outcome is what the same events give through outbox records, as the consumers receive them."""
    settings = load_settings({})
    replayed = Runtime(settings, store, FixedClock(AS_OF))
    counts = replay_file(replayed, "dips", dips_file, batch_size=40, progress=None)

    other = another_store
    rt = Runtime(settings, other, FixedClock(AS_OF))
    lines = [line for line in dips_file.read_bytes().splitlines() if line.strip()]
    for i in range(0, len(lines), 40):
        with other.transaction() as conn:
            ingest(conn, "dips", [InboundRecord(raw, f"test:{i}") for raw in lines[i : i + 40]], AS_OF,
                   settings.topics)
        rt.drain_outbox({settings.topics.events: rt.pathway_handler(defer=True)})
    while True:
        with other.transaction() as conn:
            derived = refresh_queued(conn, AS_OF, rt.pathway_deps)
        rt.drain_outbox(rt.topic_handlers(["messaging"]))
        if not derived.refreshed:
            break

    assert counts.pathways == 15 and counts.status_changes == 15
    assert _statuses(store) == _statuses(other)
    assert len(_messages(store)) > 15 and _messages(store) == _messages(other)
    with store.read() as a, other.read() as b:
        for table in (schema.fhir_resources, schema.alerts):
            assert sorted(a.execute(select(table)).all()) == sorted(b.execute(select(table)).all())


def test_a_replay_leaves_the_planner_statistics_of_what_it_loaded(store, dips_file):
    """PostgreSQL plans the queries after a replay by what it loaded, not as if the tables were empty
    (autovacuum may be off, and is a minute away at best); SQLite's plans here use no statistics."""
    from sqlalchemy import text

    replay_file(Runtime(load_settings({}), store, FixedClock(AS_OF)), "dips", dips_file, progress=None)
    with store.read() as conn:
        if store.dialect == "postgresql":
            analyzed = set(conn.execute(text(
                "SELECT DISTINCT tablename FROM pg_stats WHERE schemaname = current_schema()")).scalars())
            assert {"pathways", "pathway_events", "fhir_resources", "fhir_search_index", "messages"} <= analyzed
        else:
            assert conn.execute(text("SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_stat1'")).scalar() == 0
