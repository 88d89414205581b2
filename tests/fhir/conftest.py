"""Hand-built pathways for the FHIR tests: a PathwayStatus and the events behind it, built directly.

The statuses are written out, not derived, so the FHIR golden files pin the mapping
alone and do not move when the engine's rules change.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any

import pytest

from forlop.clock import OSLO
from forlop.events import (
    Appointment,
    AppointmentChange,
    EventKind,
    HealthProfessional,
    PathwayEvent,
    Patient,
    Setting,
    Source,
    Unit,
)
from services.pathway.domain.status import (
    DeadlineStatus,
    DelayCause,
    EpisodeStatus,
    Milestone,
    MilestoneCode,
    MilestoneState,
    PathwayStatus,
    StatusPeriod,
)
from tests.builders import EventBuilder

FNR = "17859007759"  # synthetic (month + 80) fødselsnummer
PATIENT = Patient(FNR, "0301")
DNR = "42830870266"  # synthetic D-nummer
DPS = Unit("8100001", "DPS Nordre Aasen, allmennpoliklinikk", Setting.OUTPATIENT, "983974899")
BUP = Unit("8100002", "BUP Sentrum", Setting.OUTPATIENT)
TSB = Unit("8100003", "Rusbehandling døgn", Setting.INPATIENT, "983974899")
GP = HealthProfessional(hpr="9144889", her_id="8200001")
REFERRER = HealthProfessional(hpr="9144900", her_id="8200002")

MC, MS, DS = MilestoneCode, MilestoneState, DeadlineStatus


def at(on: date, hour: int = 10) -> datetime:
    return datetime.combine(on, time(hour), OSLO)


class PathwayBuilder(EventBuilder):
    """Events of one pathway: `code("D11A", date(...))` appends a registration with sensible defaults."""

    def __init__(self, pathway_id: str = "P-1001", source: Source = Source.DIPS, pathway_type: str = "D11",
                 patient: Patient = PATIENT, unit: Unit = DPS, gp: HealthProfessional | None = GP,
                 referrer: HealthProfessional | None = None) -> None:
        super().__init__(pathway_id, pathway_type, source, patient, unit, gp=gp, referrer=referrer,
                         source_system=source.value.upper())

    def event(self, kind: EventKind, on: date, keyed_days_later: int = 0, **kw: Any) -> PathwayEvent:
        occurred = at(on)
        kw.setdefault("registration_id", f"R-{self.next_number}")
        return self.emit(kind, occurred, occurred + timedelta(days=keyed_days_later, hours=1), **kw)

    def code(self, code: str, on: date, **kw: Any) -> str:
        return self.event(EventKind.PATHWAY_CODE, on, code=code, **kw).event_id

    def status(self, episode: EpisodeStatus, milestones: list[Milestone], **kw: Any) -> PathwayStatus:
        return PathwayStatus(
            pathway_key=f"{self.source.value}:{self.pathway_id}",
            pathway_id=self.pathway_id,
            source=self.source.value,
            pathway_type=self.pathway_type,
            episode_status=episode,
            milestones=tuple(milestones),
            **{"phase": "assessment", **kw},
        )


Scenario = tuple[PathwayStatus, list[PathwayEvent]]


def waitlist_first_attendance_deadline() -> Scenario:
    b = PathwayBuilder(pathway_id="P-1001")
    start = b.code("D11A", date(2026, 3, 2), first_attendance_deadline=date(2026, 4, 13))
    status = b.status(
        EpisodeStatus.WAITLIST,
        [
            Milestone("start", MC.START, MS.DONE, completed_on=date(2026, 3, 2), event_ids=(start,)),
            Milestone(
                "first-attendance",
                MC.FIRST_ATTENDANCE,
                MS.OPEN,
                date(2026, 3, 2),
                date(2026, 4, 13),
                date(2026, 4, 13),
                deadline_status=DS.PENDING,
            ),
            Milestone("decision-basic", MC.DECISION_BASIC, MS.OPEN),
            Milestone("end", MC.END, MS.OPEN),
        ],
        phase="waiting",
        status_history=(StatusPeriod(EpisodeStatus.WAITLIST, date(2026, 3, 2)),),
        start_date=date(2026, 3, 2),
    )
    return status, b.events


def active_with_decisions() -> Scenario:
    b = PathwayBuilder(
        pathway_id="ESP-77",
        source=Source.ESP,
        pathway_type="D12",
        unit=BUP,
        patient=Patient(DNR, "4601"),
        referrer=REFERRER,
    )
    a = b.code("D12A", date(2026, 1, 5))
    f = b.code("D12F", date(2026, 1, 19))
    cu = b.code("D12CU", date(2026, 2, 20), keyed_days_later=3)
    cp = b.code("D12CP", date(2026, 3, 30))
    status = b.status(
        EpisodeStatus.ACTIVE,
        [
            Milestone("start", MC.START, MS.DONE, completed_on=date(2026, 1, 5), event_ids=(a,)),
            Milestone(
                "first-attendance",
                MC.FIRST_ATTENDANCE,
                MS.DONE,
                date(2026, 1, 5),
                completed_on=date(2026, 1, 19),
                event_ids=(f,),
            ),
            Milestone(
                "decision-basic",
                MC.DECISION_BASIC,
                MS.DONE,
                date(2026, 1, 19),
                date(2026, 3, 2),
                date(2026, 3, 2),
                date(2026, 2, 20),
                DS.MET,
                outcome="U",
                event_ids=(cu,),
            ),
            Milestone(
                "decision-extended",
                MC.DECISION_EXTENDED,
                MS.DONE,
                date(2026, 2, 20),
                date(2026, 4, 3),
                date(2026, 4, 3),
                date(2026, 3, 30),
                DS.MET,
                outcome="P",
                event_ids=(cp,),
            ),
            Milestone(
                "evaluation-1",
                MC.EVALUATION,
                MS.OPEN,
                date(2026, 3, 30),
                date(2026, 5, 11),
                date(2026, 5, 11),
                deadline_status=DS.DUE_SOON,
            ),
            Milestone("end", MC.END, MS.OPEN),
        ],
        phase="treatment",
        status_history=(
            StatusPeriod(EpisodeStatus.WAITLIST, date(2026, 1, 5), date(2026, 1, 19)),
            StatusPeriod(EpisodeStatus.ACTIVE, date(2026, 1, 19)),
        ),
        start_date=date(2026, 1, 5),
    )
    return status, b.events


def finished() -> Scenario:
    b = PathwayBuilder(pathway_id="P-2002", pathway_type="D01", unit=TSB, gp=None)
    a = b.code("D01A", date(2025, 10, 1))
    f = b.code("D01F", date(2025, 10, 8))
    ck = b.code("D01CK", date(2025, 10, 14))
    x = b.code("D01XK", date(2025, 10, 20))
    status = b.status(
        EpisodeStatus.FINISHED,
        [
            Milestone("start", MC.START, MS.DONE, completed_on=date(2025, 10, 1), event_ids=(a,)),
            Milestone(
                "first-attendance",
                MC.FIRST_ATTENDANCE,
                MS.DONE,
                date(2025, 10, 1),
                completed_on=date(2025, 10, 8),
                event_ids=(f,),
            ),
            Milestone(
                "decision-basic",
                MC.DECISION_BASIC,
                MS.DONE,
                date(2025, 10, 8),
                date(2025, 10, 15),
                date(2025, 10, 15),
                date(2025, 10, 14),
                DS.MET,
                outcome="K",
                event_ids=(ck,),
            ),
            Milestone("end", MC.END, MS.DONE, completed_on=date(2025, 10, 20), outcome="K", event_ids=(x,)),
        ],
        phase="ended",
        status_history=(
            StatusPeriod(EpisodeStatus.WAITLIST, date(2025, 10, 1), date(2025, 10, 8)),
            StatusPeriod(EpisodeStatus.ACTIVE, date(2025, 10, 8), date(2025, 10, 20)),
            StatusPeriod(EpisodeStatus.FINISHED, date(2025, 10, 20)),
        ),
        start_date=date(2025, 10, 1),
        end_date=date(2025, 10, 20),
    )
    return status, b.events


def entered_in_error() -> Scenario:
    b = PathwayBuilder(pathway_id="P-3003")
    b.code("D11A", date(2026, 2, 2), first_attendance_deadline=date(2026, 3, 16))
    b.event(
        EventKind.REGISTRATION_WITHDRAWN,
        date(2026, 2, 2),
        keyed_days_later=2,
        withdraws="R-1",
        reason="feil pasient",
    )
    status = b.status(
        EpisodeStatus.ENTERED_IN_ERROR,
        [
            Milestone("start", MC.START, MS.CANCELLED),
            Milestone("first-attendance", MC.FIRST_ATTENDANCE, MS.CANCELLED),
            Milestone("decision-basic", MC.DECISION_BASIC, MS.CANCELLED),
            Milestone("end", MC.END, MS.CANCELLED),
        ],
        phase="entered-in-error",
        status_history=(StatusPeriod(EpisodeStatus.ENTERED_IN_ERROR, date(2026, 2, 2)),),
    )
    return status, b.events


def adjusted_deadline_and_delay() -> Scenario:
    """A no-show moves the first attendance's deadline; the decision is late through the service's fault."""
    b = PathwayBuilder(pathway_id="P-4004", referrer=HealthProfessional(her_id="8200009"))
    a = b.code("D11A", date(2026, 1, 12), first_attendance_deadline=date(2026, 2, 9))
    b.event(
        EventKind.APPOINTMENT_CHANGED,
        date(2026, 2, 2),
        appointment=Appointment(
            "T-1", at(date(2026, 2, 2)), AppointmentChange.NO_SHOW, at(date(2026, 2, 16))
        ),
    )
    f = b.code("D11F", date(2026, 2, 16))
    b.event(
        EventKind.APPOINTMENT_CHANGED,
        date(2026, 3, 20),
        appointment=Appointment(
            "T-2", at(date(2026, 3, 20)), AppointmentChange.CANCELLED_BY_HOSPITAL, at(date(2026, 4, 10))
        ),
    )
    status = b.status(
        EpisodeStatus.ACTIVE,
        [
            Milestone("start", MC.START, MS.DONE, completed_on=date(2026, 1, 12), event_ids=(a,)),
            Milestone(
                "first-attendance",
                MC.FIRST_ATTENDANCE,
                MS.DONE,
                date(2026, 1, 12),
                date(2026, 2, 9),
                date(2026, 2, 23),
                date(2026, 2, 16),
                DS.MET_ADJUSTED,
                event_ids=(f,),
            ),
            Milestone(
                "decision-basic",
                MC.DECISION_BASIC,
                MS.OPEN,
                date(2026, 2, 16),
                date(2026, 3, 30),
                date(2026, 3, 30),
                deadline_status=DS.OVERDUE,
                delay_cause=DelayCause.SERVICE,
            ),
            Milestone("end", MC.END, MS.OPEN),
        ],
        status_history=(
            StatusPeriod(EpisodeStatus.WAITLIST, date(2026, 1, 12), date(2026, 2, 16)),
            StatusPeriod(EpisodeStatus.ACTIVE, date(2026, 2, 16)),
        ),
        start_date=date(2026, 1, 12),
    )
    return status, b.events


def cancelled_milestone() -> Scenario:
    """Treatment decided after basic assessment: the extended decision can no longer happen."""
    b = PathwayBuilder(pathway_id="P-5005", referrer=GP)
    a = b.code("D11A", date(2026, 4, 1))
    f = b.code("D11F", date(2026, 4, 8))
    cp = b.code("D11CP", date(2026, 5, 25))
    status = b.status(
        EpisodeStatus.ACTIVE,
        [
            Milestone("start", MC.START, MS.DONE, completed_on=date(2026, 4, 1), event_ids=(a,)),
            Milestone(
                "first-attendance",
                MC.FIRST_ATTENDANCE,
                MS.DONE,
                date(2026, 4, 1),
                completed_on=date(2026, 4, 8),
                event_ids=(f,),
            ),
            Milestone(
                "decision-basic",
                MC.DECISION_BASIC,
                MS.DONE,
                date(2026, 4, 8),
                date(2026, 5, 20),
                date(2026, 5, 20),
                date(2026, 5, 25),
                DS.LATE,
                DelayCause.UNKNOWN,
                "P",
                (cp,),
            ),
            Milestone("decision-extended", MC.DECISION_EXTENDED, MS.CANCELLED, date(2026, 5, 25)),
            Milestone(
                "evaluation-1",
                MC.EVALUATION,
                MS.OPEN,
                date(2026, 5, 25),
                date(2026, 7, 6),
                date(2026, 7, 6),
                deadline_status=DS.PENDING,
            ),
            Milestone("end", MC.END, MS.OPEN),
        ],
        phase="treatment",
        status_history=(
            StatusPeriod(EpisodeStatus.WAITLIST, date(2026, 4, 1), date(2026, 4, 8)),
            StatusPeriod(EpisodeStatus.ACTIVE, date(2026, 4, 8)),
        ),
        start_date=date(2026, 4, 1),
    )
    return status, b.events


SCENARIOS = {
    "waitlist-first-attendance-deadline": waitlist_first_attendance_deadline,
    "active-with-decisions": active_with_decisions,
    "finished": finished,
    "entered-in-error": entered_in_error,
    "adjusted-deadline-delay-cause": adjusted_deadline_and_delay,
    "cancelled-milestone": cancelled_milestone,
}


@pytest.fixture(params=sorted(SCENARIOS))
def scenario(request: pytest.FixtureRequest) -> tuple[str, PathwayStatus, list[PathwayEvent]]:
    """(name, status, events) for every hand-built pathway."""
    status, events = SCENARIOS[request.param]()
    return request.param, status, events


@pytest.fixture
def build() -> dict[str, Any]:
    """The scenario builders by name, for tests that need one particular pathway."""
    return SCENARIOS


@pytest.fixture
def mapped_active() -> list[dict[str, Any]]:
    """The mapped resources of the adjusted-deadline pathway (has every Task extension)."""
    from services.pathway.domain.fhir_mapping import map_pathway

    return map_pathway(*adjusted_deadline_and_delay())
