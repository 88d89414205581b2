"""Living status: which deadline-status transitions happened between two derivations.

The scanner and the event handler both re-derive a pathway; comparing the stored
status with the new one tells which milestones crossed into due-soon or overdue.
The alert key (pathway, milestone, deadline, new status) makes each alert unique.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from services.pathway.domain.status import DeadlineStatus, Milestone, PathwayStatus


@dataclass(frozen=True)
class Transition:
    milestone_key: str
    from_status: DeadlineStatus | None
    to_status: DeadlineStatus
    deadline: date | None
    adjusted_deadline: date | None


def deadline_transitions(previous: dict[str, Any] | None, status: PathwayStatus) -> list[Transition]:
    """Milestones whose deadline status differs from the previously stored status (a dict from to_dict)."""
    before: dict[str, str | None] = {}
    for m in (previous or {}).get("milestones", []):
        before[m["key"]] = m.get("deadline_status")
    out = []
    for m in status.milestones:
        if m.deadline_status is None:
            continue
        old = before.get(m.key)
        if old == m.deadline_status.value:
            continue
        out.append(Transition(m.key, DeadlineStatus(old) if old else None, m.deadline_status, m.deadline,
                              m.adjusted_deadline))
    return out


def days_left(m: Milestone, today: date) -> int | None:
    due = m.adjusted_deadline or m.deadline
    return (due - today).days if due else None
