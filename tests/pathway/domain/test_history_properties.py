"""History, not arrival order (DOMAIN.md section 3), as properties over generated pathways.

A generated pathway is a clinical history (type, setting and setting changes, dates, decisions with
outcomes, evaluations, detox, no-shows and cancellations, wrong registrations withdrawn and
registered again, late keying, an end or not) written as canonical events. The "clean" stream is
those events in the order they were recorded. Whatever order they arrive in, however often, the
derived status is the same; a withdrawn registration is as if it never happened.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from forlop.clock import OSLO
from forlop.events import PathwayEvent
from forlop.status import PathwayStatus
from services.pathway.domain.derive import derive
from services.pathway.domain.rules import RuleBook
from tests.builders import pathway

RULES = RuleBook.load()
FAST = settings(max_examples=150, deadline=None)
OUTCOMES = "UPTSKAI"
CHANGES = ("no_show", "cancelled_by_patient", "cancelled_by_hospital")


@dataclass
class Generated:
    events: list[PathwayEvent]  # in recording order: the clean stream
    now: datetime
    pathway_type: str


def _iso(d: date) -> str:
    return d.isoformat()


@st.composite
def pathways(draw: st.DrawFn) -> Generated:
    ptype = draw(st.sampled_from(("D11", "D12", "D01")))
    setting = draw(st.sampled_from(("outpatient", "inpatient")))
    p = pathway(ptype, setting=setting, pathway_id=f"PPR-H-{draw(st.integers(1, 9999))}")
    start = date(2022, 6, 1) + timedelta(days=draw(st.integers(0, 1100)))  # either side of the 2023 rules
    gap = st.integers(0, 60)
    lag = st.one_of(st.just(0), st.just(0), st.integers(0, 30))  # mostly same-day keying, some late
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    n_reg = [0]
    last = [start]

    def register(method: str, on: date, *args: Any, **kw: Any) -> None:
        """Register (maybe first a wrong version, withdrawn and registered again with the right date)."""
        n_reg[0] += 1
        ref = f"r{n_reg[0]}"
        if draw(st.booleans()) and draw(st.integers(0, 3)) == 0:
            wrong_on = on + timedelta(days=draw(st.integers(-5, 5)))
            wrong_rec = datetime.combine(wrong_on, time(15), OSLO) + timedelta(days=draw(lag))
            getattr(p, method)(_iso(wrong_on), *args, ref=f"{ref}-wrong", recorded=wrong_rec)
            p.withdraw(f"{ref}-wrong", on=wrong_rec + timedelta(hours=draw(st.integers(1, 72))))
        recorded = datetime.combine(on, time(15), OSLO) + timedelta(days=draw(lag), minutes=n_reg[0])
        getattr(p, method)(_iso(on), *args, ref=ref, recorded=recorded)
        last[0] = max(last[0], on)

    def maybe_move() -> None:
        if draw(st.booleans()):
            p.in_setting(draw(st.sampled_from(("outpatient", "inpatient"))))

    def maybe_appointment_change(after: date) -> None:
        if draw(st.integers(0, 2)) == 0:
            original = after + timedelta(days=draw(st.integers(0, 20)))
            new = original + timedelta(days=draw(st.integers(1, 20))) if draw(st.booleans()) else None
            getattr(p, draw(st.sampled_from(CHANGES)))(
                f"{_iso(original)}T{rng.randint(8, 15):02d}:00", f"{_iso(new)}T10:00" if new else None
            )

    legal = start + timedelta(days=draw(st.integers(0, 60))) if draw(st.booleans()) else None
    register("start", start, _iso(legal) if legal else None)
    maybe_appointment_change(start)
    ended = False
    if draw(st.integers(0, 5)) > 0:
        attended = start + timedelta(days=draw(gap))
        maybe_move()
        register("first_attendance", attended)
        day = attended
        if ptype == "D01" and draw(st.booleans()):
            detox = day + timedelta(days=draw(st.integers(0, 10)))
            register("detox_completed", detox)
            if draw(st.booleans()):
                register("treatment_start", detox + timedelta(days=draw(st.integers(0, 5))))
        maybe_appointment_change(day)
        if draw(st.integers(0, 4)) > 0:
            outcome = draw(st.sampled_from(OUTCOMES))
            day = day + timedelta(days=draw(gap))
            maybe_move()
            register("decision", day, outcome)
            if outcome == "U" and draw(st.booleans()):
                outcome = draw(st.sampled_from(OUTCOMES[1:]))
                day = day + timedelta(days=draw(st.integers(1, 60)))
                maybe_appointment_change(day - timedelta(days=20))
                register("decision", day, outcome)
            if outcome in "PT":
                for _ in range(draw(st.integers(0, 3))):
                    maybe_appointment_change(day)
                    day = day + timedelta(days=draw(st.integers(1, 90)))
                    maybe_move()
                    register("evaluation", day)
        elif draw(st.integers(0, 3)) == 0:
            register("evaluation", day + timedelta(days=draw(gap)))  # impossible input: no decision
    if draw(st.booleans()):
        register("end", last[0] + timedelta(days=draw(st.integers(0, 30))))
        ended = True
    if draw(st.integers(0, 4)) == 0:
        p.consent(f"{_iso(start + timedelta(days=draw(st.integers(0, 100))))}T14:00")
    now_day = start + timedelta(days=draw(st.integers(0, 500 if not ended else 300)))
    now = datetime.combine(now_day, time(draw(st.integers(0, 23)), draw(st.integers(0, 59))), OSLO)
    # a clock's instant, as a clock gives it: a wall time in the spring-forward gap (02:xx on the last
    # Sunday of March) names no instant, and compares unequal to every other zone's (PEP 495)
    now = now.astimezone(UTC).astimezone(OSLO)
    clean = sorted(p.events, key=lambda ev: (ev.recorded_at, ev.event_id))
    return Generated(clean, now, ptype)


def _derive(events: list[PathwayEvent], now: datetime) -> dict[str, Any]:
    return derive(events, RULES, now).to_dict()


@FAST
@given(pathways(), st.randoms(use_true_random=False))
def test_permuting_the_arrival_order_gives_the_same_status(g: Generated, rnd: random.Random) -> None:
    shuffled = list(g.events)
    rnd.shuffle(shuffled)
    assert _derive(shuffled, g.now) == _derive(g.events, g.now)


@FAST
@given(pathways(), st.randoms(use_true_random=False))
def test_duplicated_events_give_the_same_status(g: Generated, rnd: random.Random) -> None:
    duplicated = g.events + [rnd.choice(g.events) for _ in range(rnd.randint(1, len(g.events) * 2))]
    rnd.shuffle(duplicated)
    assert _derive(duplicated, g.now) == _derive(g.events, g.now)


@FAST
@given(pathways(), st.data())
def test_delayed_arrival_gives_the_same_status(g: Generated, data: st.DataObject) -> None:
    """Some events arrive late (after everything else), in any order among themselves."""
    delayed = data.draw(st.sets(st.integers(0, len(g.events) - 1)))
    late = data.draw(st.permutations([g.events[i] for i in sorted(delayed)]))
    stream = [ev for i, ev in enumerate(g.events) if i not in delayed] + list(late)
    assert _derive(stream, g.now) == _derive(g.events, g.now)


@FAST
@given(pathways(), st.data())
def test_withdrawn_registration_is_as_if_it_never_happened(g: Generated, data: st.DataObject) -> None:
    """Adding a registration and its withdrawal, in either order, equals leaving both out."""
    letter = data.draw(
        st.sampled_from(["F", "CP", "CU", "CK", "E", "X"] + (["V", "B"] if g.pathway_type == "D01" else []))
    )
    when = g.events[0].occurred_on + timedelta(days=data.draw(st.integers(-10, 200)))
    extra = pathway(g.pathway_type, pathway_id=g.events[0].pathway_id)
    extra._n = 10_000  # event and registration ids that the generated pathway does not use
    extra.code(
        f"{g.pathway_type}{letter}",
        _iso(when),
        recorded=datetime.combine(when, time(15), OSLO) + timedelta(days=data.draw(st.integers(0, 40))),
    )
    extra.withdraw("last", on=extra.events[0].recorded_at + timedelta(hours=data.draw(st.integers(1, 500))))
    target, withdrawal = extra.events
    pair = [target, withdrawal] if data.draw(st.booleans()) else [withdrawal, target]
    position = data.draw(st.integers(0, len(g.events)))
    with_pair = g.events[:position] + pair + g.events[position:]

    without = _derive(g.events, g.now)
    found = _derive(with_pair, g.now)
    retracted = [
        f
        for f in found["findings"]
        if f["kind"] == "withdrawn-registration" and f["event_id"] == target.event_id
    ]
    assert len(retracted) == 1
    found["findings"] = [f for f in found["findings"] if f is not retracted[0]]
    assert found == without


@FAST
@given(pathways())
def test_derive_is_total_and_consistent(g: Generated) -> None:
    """Any generated history derives without crashing; basic invariants of the status hold."""
    status: PathwayStatus = derive(g.events, RULES, g.now)
    today = g.now.astimezone(OSLO).date()
    keys = [m.key for m in status.milestones]
    assert len(keys) == len(set(keys))
    for m in status.milestones:
        if m.deadline is not None:
            assert m.adjusted_deadline is not None and m.adjusted_deadline >= m.deadline
        if m.completed_on is not None:
            assert m.completed_on <= today
        if m.state.value == "cancelled":
            assert m.deadline_status is None
    periods = status.status_history
    assert periods and periods[-1].end is None
    assert all(a.end == b.start for a, b in zip(periods, periods[1:], strict=False))
    assert periods[-1].status is status.episode_status
