"""The scanner at the domain level: re-deriving with an injected clock crosses due-soon and overdue once."""

from __future__ import annotations

from datetime import timedelta

from forlop.clock import FixedClock
from services.pathway.domain.derive import derive
from services.pathway.domain.living import days_left, deadline_transitions
from services.pathway.domain.rules import RuleBook
from services.pathway.domain.status import DeadlineStatus
from tests.builders import at, pathway

RULES = RuleBook.load()


def test_scanner_crosses_due_soon_then_overdue_exactly_once() -> None:
    # decision-basic: first attendance 2025-01-20 + 42 days -> 2025-03-03
    events = (
        pathway("D11")
        .start("2025-01-06", first_attendance_deadline="2025-02-03")
        .first_attendance("2025-01-20")
        .events
    )
    clock = FixedClock(at("2025-02-23"))  # t0: 8 days left
    t0 = derive(events, RULES, clock())
    assert {m.key: m.deadline_status for m in t0.milestones if m.deadline_status} == {
        "first-attendance": DeadlineStatus.MET,
        "decision-basic": DeadlineStatus.PENDING,
    }
    first = deadline_transitions(None, t0)
    assert {(t.milestone_key, t.from_status, t.to_status) for t in first} == {
        ("first-attendance", None, DeadlineStatus.MET),
        ("decision-basic", None, DeadlineStatus.PENDING),
    }

    stored = t0.to_dict()
    for advance, expected in ((1, DeadlineStatus.DUE_SOON), (8, DeadlineStatus.OVERDUE)):
        clock.advance(days=advance)
        new = derive(events, RULES, clock())
        crossed = deadline_transitions(stored, new)
        assert len(crossed) == 1
        t = crossed[0]
        assert (t.milestone_key, t.to_status) == ("decision-basic", expected)
        assert t.from_status is DeadlineStatus(stored["milestones"][2]["deadline_status"])
        assert t.deadline == t.adjusted_deadline == at("2025-03-03").date()
        # the same instant again (a second scan, or a redelivered event): nothing new
        assert deadline_transitions(new.to_dict(), derive(events, RULES, clock())) == []
        # later the same day: still nothing new
        assert deadline_transitions(new.to_dict(), derive(events, RULES, clock() + timedelta(hours=5))) == []
        stored = new.to_dict()


def test_a_late_no_show_moves_an_overdue_milestone_back_to_pending() -> None:
    p = pathway("D11").start("2025-01-06", first_attendance_deadline="2025-02-03")
    before = p.derive("2025-02-05")
    assert before.milestones[1].deadline_status is DeadlineStatus.OVERDUE
    after = p.no_show("2025-01-27", "2025-02-20").derive("2025-02-05")
    crossed = deadline_transitions(before.to_dict(), after)
    assert [(t.milestone_key, t.from_status, t.to_status) for t in crossed] == [
        ("first-attendance", DeadlineStatus.OVERDUE, DeadlineStatus.PENDING)
    ]
    assert days_left(after.milestones[1], at("2025-02-05").date()) == 22  # 2025-02-03 + 24 days
