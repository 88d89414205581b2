"""What the pathway engine derives: a pathway's status at a point in time.

Plain values, no I/O. `derive(events, rules, now) -> PathwayStatus` produces these;
the FHIR mapping, the API, the scanner and messaging read them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from forlop.events import plain


class MilestoneCode(StrEnum):
    """Task.code, project CodeSystem `milestone` (a public contract)."""

    START = "start"
    FIRST_ATTENDANCE = "first-attendance"  # første samtale / første fremmøte
    DECISION_BASIC = "decision-basic"  # klinisk beslutning etter basis utredning
    DECISION_EXTENDED = "decision-extended"  # klinisk beslutning etter utvidet utredning
    TREATMENT_START = "treatment-start"  # TSB: behandling starter etter avrusning
    EVALUATION = "evaluation"  # evalueringspunkt
    END = "end"  # avslutning


class DeadlineStatus(StrEnum):
    """Task.businessStatus, project CodeSystem `deadline-status` (a public contract)."""

    PENDING = "pending"
    DUE_SOON = "due-soon"
    OVERDUE = "overdue"
    MET = "met"
    MET_ADJUSTED = "met-adjusted"
    LATE = "late"


class DelayCause(StrEnum):
    PATIENT = "patient"  # patient-caused delay (no-show, patient moved the appointment)
    SERVICE = "service"  # service-caused delay (hospital cancelled, capacity)
    UNKNOWN = "unknown"


class MilestoneState(StrEnum):
    """Task.status for a milestone."""

    OPEN = "requested"  # expected, not yet done
    DONE = "completed"
    CANCELLED = "cancelled"  # can no longer happen


class EpisodeStatus(StrEnum):
    WAITLIST = "waitlist"
    ACTIVE = "active"
    FINISHED = "finished"
    ENTERED_IN_ERROR = "entered-in-error"


@dataclass(frozen=True, slots=True)
class Milestone:
    key: str  # stable within the pathway: "decision-basic", "evaluation-2", ...
    code: MilestoneCode
    state: MilestoneState
    anchor_date: date | None = None  # the date the deadline counts from
    deadline: date | None = None  # national deadline (never moves)
    adjusted_deadline: date | None = None  # moved by patient-caused delays
    completed_on: date | None = None
    deadline_status: DeadlineStatus | None = None  # None when the milestone has no deadline
    delay_cause: DelayCause | None = None  # for late / overdue milestones
    outcome: str | None = None  # clinical decision outcome letter (U, P, T, S, K, A, I) or end outcome
    event_ids: tuple[str, ...] = ()  # the canonical events behind it


@dataclass(frozen=True, slots=True)
class StatusPeriod:
    status: EpisodeStatus
    start: date
    end: date | None = None


@dataclass(frozen=True, slots=True)
class QualityFinding:
    """A registration-quality finding (registreringskvalitet): reported, never silently fixed."""

    kind: str  # e.g. "decision-before-first-attendance", "third-decision", "late-registration"
    message: str
    event_id: str | None = None
    on: date | None = None


@dataclass(frozen=True, slots=True)
class PathwayStatus:
    pathway_key: str
    pathway_id: str
    source: str
    pathway_type: str
    episode_status: EpisodeStatus
    phase: str  # e.g. "referral", "assessment", "extended-assessment", "treatment", "ended"
    milestones: tuple[Milestone, ...]
    status_history: tuple[StatusPeriod, ...] = ()
    start_date: date | None = None
    end_date: date | None = None
    rule_set: str | None = None  # id@version of the rule set in force
    findings: tuple[QualityFinding, ...] = ()
    as_of: datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def next_open_milestone(self) -> Milestone | None:
        open_ones = [m for m in self.milestones if m.state is MilestoneState.OPEN and m.deadline]
        return min(open_ones, key=lambda m: m.adjusted_deadline or m.deadline, default=None)

    def to_dict(self) -> dict[str, Any]:
        return plain(self)
