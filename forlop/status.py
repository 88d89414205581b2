"""What the pathway engine derives: a pathway's status at a point in time.

Plain values, no I/O. The pathway service's `derive(events, rules, now) -> PathwayStatus`
produces these; the FHIR mapping, the scanner, the reports and messaging read them. A shared
kernel like the canonical events: the status is what `pathway.status-changed` carries, so the
consumer (messaging) reads the same types as the producer. The dict form (`to_dict`,
`from_dict`) exists only at the edge: the stored row, the API and the Kafka record.
"""

from __future__ import annotations

from collections.abc import Mapping
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

    @property
    def due(self) -> date | None:
        """The date the milestone is measured against: its adjusted deadline, else the national one."""
        return self.adjusted_deadline or self.deadline

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Milestone:
        get = d.get
        anchor, deadline, adjusted, completed = (get("anchor_date"), get("deadline"), get("adjusted_deadline"),
                                                 get("completed_on"))
        status, cause = get("deadline_status"), get("delay_cause")
        return cls(d["key"], _CODES[d["code"]], _STATES[d["state"]],
                   _iso_day(anchor) if anchor else None, _iso_day(deadline) if deadline else None,
                   _iso_day(adjusted) if adjusted else None, _iso_day(completed) if completed else None,
                   _DEADLINE_STATUSES[status] if status else None, _CAUSES[cause] if cause else None,
                   get("outcome"), tuple(get("event_ids") or ()))


@dataclass(frozen=True, slots=True)
class StatusPeriod:
    status: EpisodeStatus
    start: date
    end: date | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StatusPeriod:
        return cls(_EPISODES[d["status"]], date.fromisoformat(d["start"]), _day(d.get("end")))


@dataclass(frozen=True, slots=True)
class QualityFinding:
    """A registration-quality finding (registreringskvalitet): reported, never silently fixed."""

    kind: str  # e.g. "decision-before-first-attendance", "third-decision", "late-registration"
    message: str
    event_id: str | None = None
    on: date | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> QualityFinding:
        return cls(d["kind"], d["message"], d.get("event_id"), _day(d.get("on")))


@dataclass(frozen=True, slots=True)
class LastContact:
    on: date
    event_id: str


@dataclass(frozen=True, slots=True)
class ClockBasis:
    """What moves a derived status to a later clock without its history (``extra["clock"]``).

    Until ``future_on`` (a future-dated event's day) or ``recorded_after`` (an event recorded after
    the derivation starts to count), only deadline statuses, delay causes and the passive-pathway
    finding change with the clock.
    """

    future_on: date | None
    recorded_after: datetime | None
    overdue_causes: dict[str, str]  # open milestone -> its delay cause if it goes overdue
    last_contact: LastContact | None  # of an open episode: where the passive-pathway count starts
    passive_after_days: int

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ClockBasis:
        contact = d.get("last_contact")
        after = d.get("recorded_after")
        return cls(_day(d.get("future_on")), datetime.fromisoformat(after) if after else None,
                   dict(d.get("overdue_causes") or {}),
                   LastContact(date.fromisoformat(contact["on"]), contact["event_id"]) if contact else None,
                   int(d["passive_after_days"]))


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

    @property
    def due_soon_days(self) -> int:
        """The "due soon" horizon the status was derived with (the rule set's, or FORLOP_DUE_SOON_DAYS)."""
        return int(self.extra.get("due_soon_days", 7))

    @property
    def clock(self) -> ClockBasis | None:
        """None for a status stored before the clock basis existed. Read from its JSON form when asked
        for (only the scanner does): the reports read every stored status and need none of it."""
        basis = self.extra.get("clock")
        return ClockBasis.from_dict(basis) if isinstance(basis, Mapping) else basis

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (as stored and published): what `plain` gives, written out because every
        derivation and every scanner step serialises a status (a test holds the two equal)."""
        return {
            "pathway_key": self.pathway_key,
            "pathway_id": self.pathway_id,
            "source": self.source,
            "pathway_type": self.pathway_type,
            "episode_status": self.episode_status.value,
            "phase": self.phase,
            "milestones": [_milestone_dict(m) for m in self.milestones],
            "status_history": [{"status": p.status.value, "start": p.start.isoformat(), "end": _iso(p.end)}
                               for p in self.status_history],
            "start_date": _iso(self.start_date),
            "end_date": _iso(self.end_date),
            "rule_set": self.rule_set,
            "findings": [{"kind": f.kind, "message": f.message, "event_id": f.event_id, "on": _iso(f.on)}
                         for f in self.findings],
            "as_of": _iso(self.as_of),
            "extra": plain(self.extra),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PathwayStatus:
        """The status from its JSON form (`to_dict`, as stored and published)."""
        extra = d.get("extra") or {}
        get = d.get
        as_of = get("as_of")
        milestone, period, finding = Milestone.from_dict, StatusPeriod.from_dict, QualityFinding.from_dict
        return cls(
            d["pathway_key"], d["pathway_id"], d["source"], d["pathway_type"], _EPISODES[d["episode_status"]],
            d["phase"],
            tuple([milestone(m) for m in get("milestones") or ()]),
            tuple([period(p) for p in get("status_history") or ()]),
            _day(get("start_date")),
            _day(get("end_date")),
            get("rule_set"),
            tuple([finding(f) for f in get("findings") or ()]),
            datetime.fromisoformat(as_of) if as_of else None,
            extra,
        )


def _milestone_dict(m: Milestone) -> dict[str, Any]:
    status, cause = m.deadline_status, m.delay_cause
    return {
        "key": m.key,
        "code": m.code.value,
        "state": m.state.value,
        "anchor_date": _iso(m.anchor_date),
        "deadline": _iso(m.deadline),
        "adjusted_deadline": _iso(m.adjusted_deadline),
        "completed_on": _iso(m.completed_on),
        "deadline_status": status.value if status is not None else None,
        "delay_cause": cause.value if cause is not None else None,
        "outcome": m.outcome,
        "event_ids": list(m.event_ids),
    }


def _iso(value: date | None) -> str | None:
    return value.isoformat() if value is not None else None


def _day(value: str | None) -> date | None:
    return date.fromisoformat(value) if value else None


# from_dict reads every stored status a report streams through: lookups, not enum calls
_iso_day = date.fromisoformat
_CODES: dict[str, MilestoneCode] = {m.value: m for m in MilestoneCode}
_STATES: dict[str, MilestoneState] = {m.value: m for m in MilestoneState}
_DEADLINE_STATUSES: dict[str, DeadlineStatus] = {m.value: m for m in DeadlineStatus}
_CAUSES: dict[str, DelayCause] = {m.value: m for m in DelayCause}
_EPISODES: dict[str, EpisodeStatus] = {m.value: m for m in EpisodeStatus}
