"""Living status: how a derived status moves with the clock, and which transitions that makes.

The event handler re-derives a pathway from its history; the deadline scanner moves a
stored status to a later clock with `advance`, which gives what `derive` would give
when only time has passed (and says when it cannot: then the scanner re-derives).
Comparing the stored status with the new one tells which milestones crossed into
due-soon or overdue. The alert key (pathway, milestone, deadline, new status) makes
each alert unique.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime

from forlop.clock import local_date
from forlop.status import (
    DeadlineStatus,
    DelayCause,
    Milestone,
    MilestoneState,
    PathwayStatus,
    QualityFinding,
)
from services.pathway.domain.deadlines import changes_on, deadline_status

PASSIVE = "passive-pathway"


@dataclass(frozen=True)
class Transition:
    milestone_key: str
    from_status: DeadlineStatus | None
    to_status: DeadlineStatus
    deadline: date | None
    adjusted_deadline: date | None


def deadline_transitions(previous: PathwayStatus | None, status: PathwayStatus) -> list[Transition]:
    """Milestones whose deadline status differs from the previously stored status."""
    before = {m.key: m.deadline_status for m in previous.milestones} if previous is not None else {}
    return [
        Transition(m.key, before.get(m.key), m.deadline_status, m.deadline, m.adjusted_deadline)
        for m in status.milestones
        if m.deadline_status is not None and before.get(m.key) is not m.deadline_status
    ]


def advance(stored: PathwayStatus, now: datetime) -> PathwayStatus | None:
    """A stored status as `derive` would give it at the later `now`.

    Only the clock moved, so only the open milestones' deadline statuses and delay causes, the
    passive-pathway finding and `as_of` can change. None when that is not enough: the clock went
    back, a future-dated or future-recorded event starts to count, or the status predates the
    clock basis; the caller then derives from the history.
    """
    basis = stored.clock
    if basis is None or stored.as_of is None or now < stored.as_of:
        return None
    today = local_date(now)
    if basis.future_on is not None and today >= basis.future_on:
        return None
    if basis.recorded_after is not None and now >= basis.recorded_after:
        return None
    horizon = stored.due_soon_days
    milestones = []
    for m in stored.milestones:
        if m.state is MilestoneState.OPEN and m.deadline_status is not None and m.deadline is not None:
            status = deadline_status(m.deadline, m.adjusted_deadline or m.deadline, today, horizon)
            cause = DelayCause(basis.overdue_causes[m.key]) if status is DeadlineStatus.OVERDUE else None
            if m.deadline_status is not status or m.delay_cause is not cause:
                m = replace(m, deadline_status=status, delay_cause=cause)
        milestones.append(m)
    findings = [f for f in stored.findings if f.kind != PASSIVE]
    contact = basis.last_contact
    if contact is not None:
        idle = (today - contact.on).days
        if idle > basis.passive_after_days:
            findings.append(QualityFinding(PASSIVE, f"no registered contact for {idle} days", contact.event_id, today))
            findings.sort(key=lambda f: (f.on or date.min, f.kind, f.event_id or ""))
    return replace(stored, milestones=tuple(milestones), findings=tuple(findings), as_of=now)


def next_check_on(status: PathwayStatus) -> date | None:
    """The first local date on which an open milestone's deadline status will change (the scanner's cue)."""
    horizon = status.due_soon_days  # the rule set's, or FORLOP_DUE_SOON_DAYS via RuleBook.load
    days = (
        changes_on(m.due, m.deadline_status, horizon)
        for m in status.milestones
        if m.state is MilestoneState.OPEN and m.due is not None
    )
    return min((d for d in days if d is not None), default=None)


def overdue_milestones(status: PathwayStatus) -> int:
    return sum(1 for m in status.milestones if m.deadline_status is DeadlineStatus.OVERDUE)


def days_left(m: Milestone, today: date) -> int | None:
    due = m.due
    return (due - today).days if due else None
