"""Living status: how a derived status moves with the clock, and which transitions that makes.

The event handler re-derives a pathway from its history; the deadline scanner moves a
stored status to a later clock with `advance`, which gives what `derive` would give
when only time has passed (and says when it cannot: then the scanner re-derives).
Comparing the stored status with the new one tells which milestones crossed into
due-soon or overdue. The alert key (pathway, milestone, deadline, new status) makes
each alert unique.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from forlop.clock import local_date
from forlop.events import plain
from services.pathway.domain.status import (
    DeadlineStatus,
    Milestone,
    MilestoneState,
    PathwayStatus,
    QualityFinding,
)

PASSIVE = "passive-pathway"


@dataclass(frozen=True)
class Transition:
    milestone_key: str
    from_status: DeadlineStatus | None
    to_status: DeadlineStatus
    deadline: date | None
    adjusted_deadline: date | None


def deadline_transitions(previous: dict[str, Any] | None, status: PathwayStatus | dict[str, Any]) -> list[Transition]:
    """Milestones whose deadline status differs from the previously stored status (dicts from to_dict)."""
    before: dict[str, str | None] = {}
    for m in (previous or {}).get("milestones", []):
        before[m["key"]] = m.get("deadline_status")
    out = []
    for d in (status.to_dict() if isinstance(status, PathwayStatus) else status)["milestones"]:
        new, old = d.get("deadline_status"), before.get(d["key"])
        if new is None or old == new:
            continue
        out.append(Transition(d["key"], DeadlineStatus(old) if old else None, DeadlineStatus(new),
                              _day(d.get("deadline")), _day(d.get("adjusted_deadline"))))
    return out


def advance(stored: dict[str, Any], now: datetime) -> dict[str, Any] | None:
    """A stored status (`PathwayStatus.to_dict()`) as `derive` would give it at the later `now`.

    Only the clock moved, so only the open milestones' deadline statuses and delay causes, the
    passive-pathway finding and `as_of` can change. None when that is not enough: the clock went
    back, a future-dated or future-recorded event starts to count, or the status predates the
    clock basis; the caller then derives from the history.
    """
    extra = stored.get("extra") or {}
    basis = extra.get("clock")
    if basis is None or stored.get("as_of") is None or now < datetime.fromisoformat(stored["as_of"]):
        return None
    today = local_date(now)
    if basis["future_on"] is not None and today >= date.fromisoformat(basis["future_on"]):
        return None
    if basis["recorded_after"] is not None and now >= datetime.fromisoformat(basis["recorded_after"]):
        return None
    horizon = int(extra["due_soon_days"])
    milestones = []
    for m in stored["milestones"]:
        if m["state"] == MilestoneState.OPEN.value and m.get("deadline_status") is not None:
            left = (date.fromisoformat(m["adjusted_deadline"]) - today).days
            status = (DeadlineStatus.OVERDUE if left < 0
                      else DeadlineStatus.DUE_SOON if left <= horizon else DeadlineStatus.PENDING)
            cause = basis["overdue_causes"][m["key"]] if status is DeadlineStatus.OVERDUE else None
            if m["deadline_status"] != status.value or m.get("delay_cause") != cause:
                m = {**m, "deadline_status": status.value, "delay_cause": cause}
        milestones.append(m)
    findings = [f for f in stored.get("findings", []) if f["kind"] != PASSIVE]
    contact = basis["last_contact"]
    if contact is not None:
        idle = (today - date.fromisoformat(contact["on"])).days
        if idle > int(basis["passive_after_days"]):
            findings.append(plain(QualityFinding(PASSIVE, f"no registered contact for {idle} days",
                                                 contact["event_id"], today)))
            findings.sort(key=lambda f: (f["on"] or "", f["kind"], f["event_id"] or ""))
    return {**stored, "milestones": milestones, "findings": findings, "as_of": now.isoformat()}


def _day(value: str | None) -> date | None:
    return date.fromisoformat(value) if value else None


def days_left(m: Milestone, today: date) -> int | None:
    due = m.adjusted_deadline or m.deadline
    return (due - today).days if due else None
