"""The pathway flow decides without a database: `plan_refresh` compares fresh derivations with the
stored rows and plans the writes, the status changes and the alerts; the handlers and the replay
only persist the plan (their outcome is compared on both stores in tests/app/replay)."""

from __future__ import annotations

from forlop.config import load_settings
from services.pathway.deps import PathwayDeps
from services.pathway.derivation import derive_pathway, in_order
from services.pathway.domain.rules import RuleBook
from services.pathway.handlers import plan_refresh
from services.pathway.ports import StoredPathway
from tests.builders import at, pathway

DEPS = PathwayDeps(RuleBook.load(), load_settings({}).topics)
KEY = "dips:PPR-PLAN-1"


def _history():
    return pathway("D11", pathway_id="PPR-PLAN-1").start("2025-01-06").first_attendance("2025-01-20").events


def test_a_new_pathway_is_inserted_and_publishes_its_history_in_the_order_it_happened():
    history = _history()
    d = derive_pathway(KEY, history, at("2025-01-21"), DEPS)
    plan = plan_refresh([d], {KEY: list(reversed(history))}, {}, at("2025-01-21"))
    assert plan.refreshed == [KEY]
    assert [row["pathway_key"] for row in plan.writes.inserts] == [KEY] and plan.writes.updates == []
    assert plan.writes.resources == [(KEY, d.resources)]
    [change] = plan.status_changes
    assert change.events == in_order(history)
    assert change.payload["events"] == [ev.to_dict() for ev in in_order(history)]
    assert change.payload["history_version"] == len(history) and change.record_key == history[-1].patient.national_id


def test_a_stored_pathway_whose_status_and_history_are_unchanged_publishes_nothing():
    history = _history()
    earlier = derive_pathway(KEY, history, at("2025-01-21"), DEPS)
    stored = {KEY: StoredPathway(KEY, earlier.status, earlier.history_hash)}
    again = derive_pathway(KEY, history, at("2025-01-21T18:00"), DEPS)  # later the same day: only as_of moves
    plan = plan_refresh([again], {KEY: history}, stored, at("2025-01-21T18:00"))
    assert plan.writes.inserts == [] and [row["k_pathway_key"] for row in plan.writes.updates] == [KEY]
    assert plan.status_changes == [] and plan.alerts == []


def test_a_grown_history_or_a_deadline_coming_closer_publishes_a_change_and_alerts_once_per_transition():
    history = _history()
    earlier = derive_pathway(KEY, history, at("2025-01-21"), DEPS)
    stored = {KEY: StoredPathway(KEY, earlier.status, earlier.history_hash)}
    grown = pathway("D11", pathway_id="PPR-PLAN-1").start("2025-01-06").first_attendance("2025-01-20")
    grown = grown.decision("2025-02-10", "U").events
    d = derive_pathway(KEY, grown, at("2025-02-11"), DEPS)
    assert len(plan_refresh([d], {KEY: grown}, stored, at("2025-02-11")).status_changes) == 1

    due_soon = derive_pathway(KEY, history, at("2025-02-25"), DEPS)  # the decision is due 2025-03-03
    plan = plan_refresh([due_soon], {KEY: history}, stored, at("2025-02-25"))
    assert len(plan.status_changes) == 1
    assert [(a.alert["milestone"], a.to_status) for a in plan.alerts] == [("decision-basic", "due-soon")]
    stored = {KEY: StoredPathway(KEY, due_soon.status, due_soon.history_hash)}
    next_day = derive_pathway(KEY, history, at("2025-02-26"), DEPS)
    assert plan_refresh([next_day], {KEY: history}, stored, at("2025-02-26")).alerts == []  # due soon already
