"""The scanner's time-only step: `advance(stored status, later)` equals deriving again at `later`.

The scanner moves stored statuses forward without loading histories; that is only right if,
for any history and any later clock, it gives what `derive` gives (or declines, and the
scanner derives). Checked over the same generated pathways as the arrival-order properties.
"""

from __future__ import annotations

import json
from datetime import UTC, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st
from test_history_properties import Generated, pathways

from services.pathway.domain.derive import derive
from services.pathway.domain.fhir_mapping import map_pathway, retimed_task
from services.pathway.domain.living import advance
from services.pathway.domain.rules import RuleBook
from tests.builders import at, pathway

RULES = RuleBook.load()


@settings(max_examples=300, deadline=None)
@given(pathways(), st.integers(0, 400), st.integers(0, 24 * 60))
def test_advancing_a_stored_status_equals_deriving_it_later(g: Generated, days: int, minutes: int) -> None:
    # Later in absolute time: aware datetimes add wall-clock time, and across the spring DST gap
    # (2025-03-30 02:01 Oslo + 59 min = 03:00 CEST, a minute *before* 02:01 CET) that went back,
    # which `advance` rightly declines.
    later = (g.now.astimezone(UTC) + timedelta(days=days, minutes=minutes)).astimezone(g.now.tzinfo)
    stored = derive(g.events, RULES, g.now).to_dict()
    moved = advance(json.loads(json.dumps(stored)), later)  # as stored: through JSON
    if moved is None:
        # declined only when an event starts to count between the two clocks
        today = later.date()
        assert any(ev.occurred_on > g.now.date() and ev.occurred_on <= today or g.now < ev.recorded_at <= later
                   for ev in g.events)
        return
    again = derive(g.events, RULES, later)
    assert moved == again.to_dict()
    # and the FHIR resources: only Tasks change, and retiming the stored ones gives the same JSON
    before = {(r["resourceType"], r["id"]): r for r in map_pathway(derive(g.events, RULES, g.now), g.events)}
    milestones = {m["key"]: m for m in moved["milestones"]}
    for res in map_pathway(again, g.events):
        old = before[(res["resourceType"], res["id"])]
        if res["resourceType"] == "Task":
            key = res["identifier"][0]["value"].rsplit("/", 1)[1]
            assert json.dumps(retimed_task(old, milestones[key])) == json.dumps(res)
        else:
            assert old == res


def test_advance_declines_a_clock_that_went_back_or_a_status_without_basis() -> None:
    events = pathway("D11").start("2025-01-06").first_attendance("2025-01-20").events
    stored = derive(events, RULES, at("2025-02-23")).to_dict()
    assert advance(stored, at("2025-02-22")) is None
    del stored["extra"]["clock"]
    assert advance(stored, at("2025-03-23")) is None


def test_advance_moves_deadlines_and_the_passive_finding_without_the_history() -> None:
    events = pathway("D11").start("2025-01-06").first_attendance("2025-01-20").events
    stored = derive(events, RULES, at("2025-02-23")).to_dict()
    for day in ("2025-02-24", "2025-03-04", "2025-06-01"):
        moved = advance(stored, at(day))
        assert moved == derive(events, RULES, at(day)).to_dict()
    assert [f["kind"] for f in moved["findings"]] == ["passive-pathway"]
    assert {m["key"]: m["deadline_status"] for m in moved["milestones"]}["decision-basic"] == "overdue"


def test_advance_across_the_spring_dst_gap_moves_forward() -> None:
    # the case hypothesis found: a clock in the gap (02:01 does not exist on 2025-03-30 in Oslo)
    events = pathway("D11").start("2025-03-20").first_attendance("2025-03-25").events
    now = at("2025-03-30T02:01")
    stored = derive(events, RULES, now).to_dict()
    later = (now.astimezone(UTC) + timedelta(minutes=59)).astimezone(now.tzinfo)
    assert later > now
    moved = advance(json.loads(json.dumps(stored)), later)
    assert moved == derive(events, RULES, later).to_dict()
    assert advance(stored, now + timedelta(minutes=59)) is None  # wall-clock 03:00 CEST is a minute earlier
