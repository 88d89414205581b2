"""The deadline-status rule, written once: derive, the scanner (`living`), `next_check_on` and the
reports all read a milestone's deadline status through these functions.

A milestone done by its national deadline is met; by its adjusted deadline (moved by
patient-caused delays) met-adjusted; later, late. An open one is overdue once today is past its
adjusted deadline, due soon when at most ``due_soon_days`` are left, else pending.
"""

from __future__ import annotations

from datetime import date, timedelta

from forlop.status import DeadlineStatus, Milestone, MilestoneState


def deadline_status(
    deadline: date, adjusted: date, today: date, due_soon_days: int, completed_on: date | None = None
) -> DeadlineStatus:
    """The status of a deadline (national `deadline`, `adjusted` by delays) on `today`."""
    if completed_on is not None:
        if completed_on <= deadline:
            return DeadlineStatus.MET
        return DeadlineStatus.MET_ADJUSTED if completed_on <= adjusted else DeadlineStatus.LATE
    left = (adjusted - today).days
    if left < 0:
        return DeadlineStatus.OVERDUE
    return DeadlineStatus.DUE_SOON if left <= due_soon_days else DeadlineStatus.PENDING


def changes_on(adjusted: date, status: DeadlineStatus | None, due_soon_days: int) -> date | None:
    """The first day an open milestone's deadline status moves on from `status` (by `deadline_status`):
    pending turns due soon, due soon turns overdue; None when the clock changes it no more."""
    if status is DeadlineStatus.PENDING:
        return adjusted - timedelta(days=due_soon_days)
    if status is DeadlineStatus.DUE_SOON:
        return adjusted + timedelta(days=1)
    return None


def current_deadline_status(m: Milestone, today: date, due_soon_days: int) -> DeadlineStatus | None:
    """A milestone's deadline status as of `today`: an open one's from its dates (what was stored may
    predate today), a done or cancelled one's as derived; None when it has no deadline."""
    if m.state is not MilestoneState.OPEN:
        return m.deadline_status
    if m.deadline is None:
        return None
    return deadline_status(m.deadline, m.adjusted_deadline or m.deadline, today, due_soon_days)
