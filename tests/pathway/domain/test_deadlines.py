"""Every deadline row of DOMAIN.md section 3: PHV (D11), PHBU (D12), TSB (D01), outpatient and inpatient.

Each row: the deadline is anchor + N calendar days; a milestone on its last day is met, one day
later it is late (cause unknown when nothing explains it); with no deadline there is no status.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta

import pytest

from services.pathway.domain.status import DeadlineStatus, DelayCause, MilestoneState
from tests.builders import Scenario, day, milestone, pathway

TYPES = ("D11", "D12", "D01")
SETTINGS = ("outpatient", "inpatient")

# interval -> (pathway type, setting) -> calendar days (None: no deadline), from DOMAIN.md section 3
TABLE: dict[str, dict[tuple[str, str], int | None]] = {
    "decision-basic": {
        ("D11", "outpatient"): 42,
        ("D11", "inpatient"): 42,
        ("D12", "outpatient"): 42,
        ("D12", "inpatient"): 42,
        ("D01", "outpatient"): 21,
        ("D01", "inpatient"): 7,
    },
    "decision-extended": {
        ("D11", "outpatient"): 42,
        ("D11", "inpatient"): 42,
        ("D12", "outpatient"): 42,
        ("D12", "inpatient"): 42,
        ("D01", "outpatient"): None,
        ("D01", "inpatient"): None,
    },
    "treatment-start": {("D01", "outpatient"): 3, ("D01", "inpatient"): 0},
    "evaluation-1": {  # final clinical decision -> first evaluation
        ("D11", "outpatient"): 42,
        ("D11", "inpatient"): 14,
        ("D12", "outpatient"): 42,
        ("D12", "inpatient"): 14,
        ("D01", "outpatient"): 7,
        ("D01", "inpatient"): 7,
    },
    "evaluation-2": {  # between evaluations
        ("D11", "outpatient"): 84,
        ("D11", "inpatient"): 42,
        ("D12", "outpatient"): 84,
        ("D12", "inpatient"): 42,
        ("D01", "outpatient"): 56,
        ("D01", "inpatient"): 42,
    },
}

START, ATTENDED, DECIDED, DETOX, EVALUATED = (
    "2025-01-06",
    "2025-01-20",
    "2025-02-10",
    "2025-01-22",
    "2025-03-03",
)


def _before(key: str, ptype: str, setting: str) -> tuple[Scenario, date, Callable[[Scenario, str], Scenario]]:
    """The pathway up to the milestone's anchor, the anchor date and how the milestone is completed."""
    p = pathway(ptype, setting=setting).start(START)
    if key == "decision-basic":
        return p.first_attendance(ATTENDED), day(ATTENDED), lambda s, on: s.decision(on, "P")
    if key == "decision-extended":
        p = p.first_attendance(ATTENDED).decision(DECIDED, "U")
        return p, day(DECIDED), lambda s, on: s.decision(on, "P")
    if key == "treatment-start":
        return (
            p.first_attendance(ATTENDED).detox_completed(DETOX),
            day(DETOX),
            lambda s, on: s.treatment_start(on),
        )
    p = p.first_attendance(ATTENDED).decision(DECIDED, "P")
    if key == "evaluation-1":
        return p, day(DECIDED), lambda s, on: s.evaluation(on)
    assert key == "evaluation-2"
    return p.evaluation(EVALUATED), day(EVALUATED), lambda s, on: s.evaluation(on)


ROWS = [(key, ptype, setting, days) for key, row in TABLE.items() for (ptype, setting), days in row.items()]


@pytest.mark.parametrize(("key", "ptype", "setting", "days"), ROWS)
def test_deadline_of_each_row_is_anchor_plus_days(
    key: str, ptype: str, setting: str, days: int | None
) -> None:
    p, anchor, _ = _before(key, ptype, setting)
    m = milestone(p.derive(anchor.isoformat()), key)
    assert m.state is MilestoneState.OPEN
    assert m.anchor_date == anchor
    if days is None:
        assert (m.deadline, m.adjusted_deadline, m.deadline_status) == (None, None, None)
    else:
        assert m.deadline == anchor + timedelta(days=days)
        assert m.adjusted_deadline == m.deadline
        expected = DeadlineStatus.DUE_SOON if days <= 7 else DeadlineStatus.PENDING
        assert m.deadline_status is expected


@pytest.mark.parametrize(("key", "ptype", "setting", "days"), [r for r in ROWS if r[3] is not None])
def test_met_on_the_last_day_and_late_one_day_after(key: str, ptype: str, setting: str, days: int) -> None:
    p, anchor, complete = _before(key, ptype, setting)
    deadline = anchor + timedelta(days=days)
    on_time = milestone(complete(p, deadline.isoformat()).derive("2025-12-31"), key)
    assert (on_time.state, on_time.completed_on, on_time.deadline) == (
        MilestoneState.DONE,
        deadline,
        deadline,
    )
    assert on_time.deadline_status is DeadlineStatus.MET
    assert on_time.delay_cause is None

    p, _, complete = _before(key, ptype, setting)
    one_late = (deadline + timedelta(days=1)).isoformat()
    late = milestone(complete(p, one_late).derive("2025-12-31"), key)
    assert late.deadline_status is DeadlineStatus.LATE
    assert late.delay_cause is DelayCause.UNKNOWN


@pytest.mark.parametrize(("key", "ptype", "setting", "days"), [r for r in ROWS if r[3] is not None])
def test_open_milestone_is_overdue_the_day_after_its_deadline(
    key: str, ptype: str, setting: str, days: int
) -> None:
    p, anchor, _ = _before(key, ptype, setting)
    deadline = anchor + timedelta(days=days)
    assert milestone(p.derive(deadline.isoformat()), key).deadline_status is DeadlineStatus.DUE_SOON
    overdue = milestone(p.derive((deadline + timedelta(days=1)).isoformat()), key)
    assert overdue.deadline_status is DeadlineStatus.OVERDUE
    assert overdue.delay_cause is DelayCause.UNKNOWN


@pytest.mark.parametrize("ptype", TYPES)
@pytest.mark.parametrize("setting", SETTINGS)
def test_first_attendance_deadline_is_the_legal_deadline_given_at_start(ptype: str, setting: str) -> None:
    p = pathway(ptype, setting=setting).start("2025-01-06", first_attendance_deadline="2025-02-17")
    m = milestone(p.derive("2025-01-07"), "first-attendance")
    assert (m.anchor_date, m.deadline, m.adjusted_deadline) == (
        day("2025-01-06"),
        day("2025-02-17"),
        day("2025-02-17"),
    )
    assert m.deadline_status is DeadlineStatus.PENDING
    assert (
        milestone(p.first_attendance("2025-02-17").derive("2025-03-01"), "first-attendance").deadline_status
        is DeadlineStatus.MET
    )


@pytest.mark.parametrize("ptype", TYPES)
def test_first_attendance_one_day_after_the_legal_deadline_is_late(ptype: str) -> None:
    p = (
        pathway(ptype)
        .start("2025-01-06", first_attendance_deadline="2025-02-17")
        .first_attendance("2025-02-18")
    )
    m = milestone(p.derive("2025-03-01"), "first-attendance")
    assert (m.deadline_status, m.delay_cause) == (DeadlineStatus.LATE, DelayCause.UNKNOWN)


@pytest.mark.parametrize("ptype", TYPES)
def test_no_first_attendance_deadline_when_the_start_gave_none(ptype: str) -> None:
    p = pathway(ptype).start("2025-01-06")
    m = milestone(p.derive("2025-12-01"), "first-attendance")
    assert (m.state, m.deadline, m.adjusted_deadline, m.deadline_status) == (
        MilestoneState.OPEN,
        None,
        None,
        None,
    )
    done = milestone(p.first_attendance("2025-11-01").derive("2025-12-01"), "first-attendance")
    assert (done.state, done.completed_on, done.deadline_status) == (
        MilestoneState.DONE,
        day("2025-11-01"),
        None,
    )


@pytest.mark.parametrize("ptype", ("D11", "D12"))
def test_no_treatment_start_milestone_outside_tsb(ptype: str) -> None:
    status = pathway(ptype).start(START).first_attendance(ATTENDED).derive("2025-02-01")
    assert "treatment-start" not in [m.key for m in status.milestones]


def test_evaluations_repeat_after_each_evaluation() -> None:
    p = (
        pathway("D11")
        .start(START)
        .first_attendance(ATTENDED)
        .decision(DECIDED, "P")
        .evaluation("2025-03-20")
        .evaluation("2025-06-01")
        .evaluation("2025-08-20")
    )
    status = p.derive("2025-09-01")
    evals = [m for m in status.milestones if m.code.value == "evaluation"]
    assert [m.key for m in evals] == ["evaluation-1", "evaluation-2", "evaluation-3", "evaluation-4"]
    assert [m.deadline for m in evals] == [
        day("2025-03-24"),
        day("2025-06-12"),
        day("2025-08-24"),
        day("2025-11-12"),
    ]
    assert [m.deadline_status for m in evals] == [DeadlineStatus.MET] * 3 + [DeadlineStatus.PENDING]
