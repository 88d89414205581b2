"""Living status in the store: events and the deadline scanner keep the stored status and FHIR current.

One alert per milestone per transition on `pathway.alerts`, never twice: not on a second
scanner pass, not after a restart (new deps), not with two scanner replicas at once.
Time is an injected clock; nothing sleeps.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime

import pytest
from sqlalchemy import select

from forlop.config import load_settings
from forlop.storage import Store, schema
from services.pathway.adapters import fhir_search
from services.pathway.domain.rules import RuleBook
from services.pathway.handlers import PathwayDeps, PathwayResult, handle_events, scan
from tests.builders import at, pathway

TOPICS = load_settings({}).topics


def deps() -> PathwayDeps:
    return PathwayDeps(RuleBook.load(), TOPICS)


def outbox(store: Store, topic: str) -> list[dict]:
    o = schema.outbox
    with store.read() as conn:
        return [json.loads(v) for v in conn.execute(select(o.c.value).where(o.c.topic == topic).order_by(o.c.id))
                .scalars()]


def stored(store: Store, key: str) -> dict:
    p = schema.pathways
    with store.read() as conn:
        row = conn.execute(select(p.c.status, p.c.next_check_on).where(p.c.pathway_key == key)).one()
    return {"status": row.status, "next_check_on": row.next_check_on}


def scan_at(store: Store, now: datetime) -> int:
    with store.transaction() as conn:
        return len(scan(conn, now, deps()).refreshed)


@pytest.fixture
def waiting_for_decision(store: Store):
    """PHV outpatient: first attendance 2025-01-20, so the basic decision is due 2025-03-03."""
    p = pathway("D11", pathway_id="PPR-LIVE-1").start("2025-01-06").first_attendance("2025-01-20")
    with store.transaction() as conn:
        handle_events(conn, p.events, at("2025-01-21"), deps())
    return p


def test_an_event_stores_status_fhir_and_publishes_status_changed(store, waiting_for_decision):
    row = stored(store, "dips:PPR-LIVE-1")
    basic = next(m for m in row["status"]["milestones"] if m["key"] == "decision-basic")
    assert (basic["deadline"], basic["deadline_status"]) == ("2025-03-03", "pending")
    assert row["next_check_on"].isoformat() == "2025-02-24"  # 7 days before the deadline
    changed = outbox(store, TOPICS.status_changed)
    assert len(changed) == 1 and changed[0]["pathway_id"] == "PPR-LIVE-1"
    assert len(changed[0]["events"]) == 2
    with store.read() as conn:
        total, tasks = fhir_search.search(conn, "Task", [("business-status", ["pending"])], 50, 0)
    assert total == 1 and tasks[0].resource["code"]["coding"][0]["code"] == "decision-basic"


def test_scanner_moves_to_due_soon_then_overdue_with_one_alert_each(store, waiting_for_decision):
    assert scan_at(store, at("2025-02-23")) == 0  # nothing due yet
    assert outbox(store, TOPICS.alerts) == []

    assert scan_at(store, at("2025-02-24")) == 1
    alerts = outbox(store, TOPICS.alerts)
    assert [(a["milestone"], a["from"], a["to"]) for a in alerts] == [("decision-basic", "pending", "due-soon")]
    assert stored(store, "dips:PPR-LIVE-1")["next_check_on"].isoformat() == "2025-03-04"

    assert scan_at(store, at("2025-02-28")) == 0  # between thresholds: not even looked at
    assert scan_at(store, at("2025-03-04")) == 1
    alerts = outbox(store, TOPICS.alerts)
    assert [a["to"] for a in alerts] == ["due-soon", "overdue"]
    with store.read() as conn:
        total, _ = fhir_search.search(conn, "Task", [("business-status", ["overdue"])], 50, 0)
    assert total == 1  # the FHIR API shows the overdue Task without any new event

    assert scan_at(store, at("2025-03-20")) == 0  # overdue stays overdue: no next check
    assert stored(store, "dips:PPR-LIVE-1")["next_check_on"] is None
    assert len(outbox(store, TOPICS.alerts)) == 2


def test_no_alert_twice_after_a_restart_or_a_redelivered_event(store, waiting_for_decision):
    scan_at(store, at("2025-02-24"))
    # A restart: a fresh process re-derives the pathway (e.g. a redelivered event) at the same time.
    with store.transaction() as conn:
        result = handle_events(conn, waiting_for_decision.events, at("2025-02-24T15:00"), deps())
    assert result.duplicates == 2 and result.alerts == 0
    # Force a re-derivation as a replica that missed the stored status would do: the alerts table still says no.
    with store.transaction() as conn:
        conn.execute(schema.pathways.update().values(next_check_on=at("2025-02-24").date(), status={}))
    assert scan_at(store, at("2025-02-25")) == 1
    assert [a["to"] for a in outbox(store, TOPICS.alerts)] == ["due-soon"]


def test_two_scanner_replicas_emit_each_alert_once(store):
    for i in range(40):
        p = pathway("D11", pathway_id=f"PPR-REP-{i}").start("2025-01-06").first_attendance("2025-01-20")
        with store.transaction() as conn:
            handle_events(conn, p.events, at("2025-01-21"), deps())
    errors: list[BaseException] = []

    def replica() -> None:
        try:
            while scan_at(store, at("2025-02-24")):
                pass
        except BaseException as exc:  # an integrity error would mean a duplicate alert was attempted
            errors.append(exc)

    threads = [threading.Thread(target=replica) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    if store.dialect == "sqlite":
        errors = [e for e in errors if "locked" in str(e)]  # SQLite serialises writers; retried next pass
        while scan_at(store, at("2025-02-24")):
            pass
    assert not errors
    alerts = outbox(store, TOPICS.alerts)
    assert len(alerts) == 40 and len({a["alertKey"] for a in alerts}) == 40


def test_late_registration_changes_the_status_and_is_published(store, waiting_for_decision):
    late = pathway("D11", pathway_id="PPR-LIVE-1")
    late.events, late._n = list(waiting_for_decision.events), len(waiting_for_decision.events)
    late.decision("2025-02-20", "P", recorded="2025-03-10T09:00")
    with store.transaction() as conn:
        handle_events(conn, late.events, at("2025-03-10T10:00"), deps())
    status = stored(store, "dips:PPR-LIVE-1")["status"]
    basic = next(m for m in status["milestones"] if m["key"] == "decision-basic")
    assert basic["deadline_status"] == "met"
    assert status["phase"] == "treatment"
    assert any(f["kind"] == "late-registration" for f in status["findings"])
    assert len(outbox(store, TOPICS.status_changed)) == 2


def _snapshot(store: Store) -> dict:
    p, r, a = schema.pathways, schema.fhir_resources, schema.alerts
    with store.read() as conn:
        rows = {row.pathway_key: (dict(row.status, as_of=None), row.next_check_on, row.overdue_milestones)
                for row in conn.execute(select(p))}
        # the pathways' own resources (a shared Organization is rewritten by whichever pathway is refreshed)
        owned = ("EpisodeOfCare", "Task")
        resources = {(row.resource_type, row.id): (row.version_id, row.resource)
                     for row in conn.execute(select(r).where(r.c.resource_type.in_(owned)))}
        index = sorted(tuple(row) for row in conn.execute(select(schema.fhir_search_index)
                                                          .where(schema.fhir_search_index.c.resource_type.in_(owned))))
        alerts = sorted(conn.execute(select(a.c.alert_key)).scalars())
    return {"pathways": rows, "resources": resources, "index": index, "alerts": alerts}


@pytest.mark.parametrize("days", [1, 9, 45])
def test_the_scanners_time_only_pass_leaves_what_a_full_derivation_would(store: Store, days: int):
    """The scanner moves stored statuses without histories; deriving them again then changes nothing."""
    from datetime import timedelta

    from forlop_devtools.synthetic import generate
    from services.ingest.domain.normalise import parse_vendor_event
    from services.pathway.handlers import refresh

    as_of = at("2026-03-01")
    events = [parse_vendor_event(v, rec) for v in ("dips", "esp") for rec in generate(v, 40, 3, as_of=as_of)]
    with store.transaction() as conn:
        handle_events(conn, events, as_of, deps())
    later = as_of + timedelta(days=days)
    with store.transaction() as conn:
        moved = scan(conn, later, deps())
    assert moved.refreshed, "the clock moved no pathway: the test shows nothing"
    after_scan, changes = _snapshot(store), len(outbox(store, TOPICS.status_changed))
    with store.transaction() as conn:
        again = PathwayResult()
        refresh(conn, sorted(moved.refreshed), later, deps(), again)
    assert again.status_changes == 0 and again.alerts == 0
    assert _snapshot(store) == after_scan
    assert len(outbox(store, TOPICS.status_changed)) == changes
    clock_records = [c for c in outbox(store, TOPICS.status_changed) if c.get("cause") == "clock"]
    assert clock_records and all("events" not in c for c in clock_records)
