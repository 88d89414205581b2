"""Messages stored under the old rule (issue #25) go once the rule changes, with no new event.

The database is written as the code before the change wrote it: the pathway service stores the
history and emits its status change; messaging under the old trigger rules (the PLO logistics
messages gated by the pathway's consent) stores them suppressed, "no consent". Then the messaging
service starts with the new rules: its re-planner asks for those pathways' status changes again,
the consumer's ordinary reconciliation releases the rows, the relay sends each exactly once.
"""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from importlib import resources

import orjson
import pytest
from msgkit import NOW, VendorRecords, local, parse, raw_examples
from sqlalchemy import select, update

from forlop.config import Topics
from forlop.storage import schema
from services.messaging.adapters import repository
from services.messaging.adapters.transport import DirectoryTransport
from services.messaging.domain.triggers import TriggerBook
from services.messaging.handlers import handle_status_changes
from services.messaging.relay import Relay
from services.messaging.replan import CAUSE, Replanner, stale_pathways
from services.pathway.domain.rules import RuleBook
from services.pathway.public import PathwayDeps, SqlUnitOfWork, handle_events, republish

LOGISTICS = ("admission", "discharge-ready", "discharged")
PHV = {"dips": "PPR-1810111", "esp": "eSP-6029255"}
TSB = {"dips": "PPR-4745328", "esp": "eSP-6738744"}


def old_rules() -> TriggerBook:
    """The rule before #25, as data: the logistics messages to the municipality gated by consent
    (the old code also required municipal services; every patient here has them)."""
    doc = json.loads(resources.files("profiles").joinpath("messaging/triggers.json").read_text("utf-8"))
    doc = copy.deepcopy(doc)
    for trigger in LOGISTICS:
        doc["base"]["triggers"][trigger]["recipients"] = [{"role": "municipality", "gate": "consent"}]
    return TriggerBook.from_document(doc)


def _deliver(store, deps) -> int:
    """What the messaging consumer does with the status-changed records in the outbox (then published)."""
    o = schema.outbox
    with store.transaction() as conn:
        rows = conn.execute(select(o).where(o.c.topic == Topics().status_changed, o.c.published_at.is_(None))
                            .order_by(o.c.id)).all()
        handle_status_changes(conn, [orjson.loads(r.value) for r in rows], NOW, deps)
        conn.execute(update(o).where(o.c.id.in_([r.id for r in rows])).values(published_at=NOW))
    return len(rows)


def _histories(contracts_dir, source: str) -> list:
    """A PHV inpatient without pathway consent, and a TSB inpatient whose consent was revoked before
    the admission; both receive municipal services."""
    out = []
    raws = [r for r in raw_examples(contracts_dir, source)[PHV[source]]
            if r.get("eventType") != "consent.changed" and r.get("meldingstype") != "SAMTYKKE"]
    rec = VendorRecords(source, raws[0])
    out += [*raws, rec.stay("admission", "S-1", local("2025-12-01 10:00")),
            rec.stay("discharge-ready", "S-1", local("2025-12-10 09:00")),
            rec.stay("discharged", "S-1", local("2025-12-12 12:00"), destination="home")]
    raws = raw_examples(contracts_dir, source)[TSB[source]]
    rec = VendorRecords(source, raws[0])
    out += [*raws, rec.consent(local("2025-11-03 16:00"), True), rec.consent(local("2025-11-05 08:00"), False),
            rec.stay("admission", "S-2", local("2025-11-05 10:00")),
            rec.stay("discharge-ready", "S-2", local("2025-11-20 09:00")),
            rec.stay("discharged", "S-2", local("2025-11-21 12:00"))]
    return parse(source, out)


def _logistics(store) -> list[dict]:
    with store.read() as conn:
        return [r for r in repository.list_messages(conn, limit=10_000) if r["trigger"] in LOGISTICS]


@pytest.mark.parametrize("source", ["dips", "esp"])
def test_rows_suppressed_under_the_old_rule_go_once_without_a_new_event(store, deps, contracts_dir, source,
                                                                        tmp_path) -> None:
    events = _histories(contracts_dir, source)
    pathway = PathwayDeps(RuleBook.load(), Topics())
    with store.transaction() as conn:
        handle_events(SqlUnitOfWork(conn), events, NOW, pathway)
    assert _deliver(store, replace(deps, triggers=old_rules())) == 2

    before = _logistics(store)  # the database as the old code left it
    assert len(before) == 6 and {(r["status"], r["status_reason"]) for r in before} == {("suppressed", "no consent")}

    # messaging starts with the new rules: the re-planner asks, the consumer reconciles, the relay sends
    replanner = Replanner(store, deps.triggers, lambda c, keys, now: republish(SqlUnitOfWork(c), keys, now, Topics(), CAUSE),
                          lambda: NOW)
    assert replanner.run_once() == 2 and replanner.run_once() == 0  # asked once per pathway
    assert _deliver(store, deps) == 2
    after = {r["id"]: r for r in _logistics(store)}
    assert set(after) == {r["id"] for r in before}  # the same rows, released: no second row for anything
    assert {r["status"] for r in after.values()} == {"queued"}
    transport = DirectoryTransport(tmp_path / "out", tmp_path / "in")
    Relay(store, transport, deps).run_once()

    # a restart, the same record delivered again, the pathway's next ordinary status change: nothing new
    with store.read() as conn:
        assert stale_pathways(conn, deps.triggers) == []
    assert Replanner(store, deps.triggers, lambda c, keys, now: republish(SqlUnitOfWork(c), keys, now, Topics(), CAUSE),
                     lambda: NOW).run_once() == 0
    keys = sorted({e.pathway_key for e in events})
    for _ in range(2):
        with store.transaction() as conn:
            republish(SqlUnitOfWork(conn), keys, NOW, Topics(), "again")
        _deliver(store, deps)
    Relay(store, transport, deps).run_once()
    rows = _logistics(store)
    assert len(rows) == 6 and {r["status"] for r in rows} == {"sent"} and all(r["attempts"] == 1 for r in rows)
    sent = [p for p in (tmp_path / "out").iterdir() if p.suffix == ".xml"]
    assert sorted(p.stem for p in sent if p.stem in {r["id"] for r in rows}) == sorted(r["id"] for r in rows)


def test_the_runtime_wires_the_replanner_to_the_pathway_topic_and_the_consumer(store, deps, contracts_dir,
                                                                               tmp_path) -> None:
    """The messaging service's re-planner (app.bootstrap) writes records the messaging consumer's
    handler (as the runtime wires it) turns into released messages."""
    from app.bootstrap import Runtime
    from forlop.clock import FixedClock
    from forlop.config import load_settings

    events = _histories(contracts_dir, "esp")
    with store.transaction() as conn:
        handle_events(SqlUnitOfWork(conn), events, NOW, PathwayDeps(RuleBook.load(), Topics()))
    _deliver(store, replace(deps, triggers=old_rules()))
    rt = Runtime(load_settings({"FORLOP_DATA_DIR": str(tmp_path)}), store, FixedClock(NOW))
    assert rt.message_replanner().run_once() == 2
    assert rt.drain_outbox({rt.settings.topics.status_changed: rt.messaging_handler()}) == 2
    assert {r["status"] for r in _logistics(store)} == {"queued"}
