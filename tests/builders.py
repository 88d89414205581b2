"""The tests' one event builder, and the scenario language most pathway tests speak with it.

`EventBuilder` writes one pathway's canonical events the way the ingest service hands them on
(identity, unit, event ids, local dates); the report data set (`tests/pathway/reports`) and the FHIR
tests' hand-built pathways (`tests/fhir/conftest.py`) configure it and add their own words. The
scenario language: "these events, at this time, give this status".

    p = (pathway("D11", setting="outpatient")
         .start("2025-01-06", first_attendance_deadline="2025-02-03")
         .first_attendance("2025-01-20")
         .decision("2025-02-10", "U"))
    status = p.derive(at("2025-03-01"))
    assert milestone(status, "decision-extended").deadline == day("2025-03-24")

Every code registration gets its own registration id (``ref`` names it, for withdrawals) and
happens at 00:00 Europe/Oslo of its date, as the ingest mappings make it
(`services.ingest.domain.validation.registration_instant`). It is recorded the same afternoon unless
``recorded`` says otherwise (late keying). Identities are synthetic (fødselsnummer with month + 80).
"""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import date, datetime, time, timedelta
from typing import Any

from forlop.clock import OSLO, parse_time
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
from services.ingest.domain.national_id import synthetic_national_id
from services.ingest.domain.validation import registration_instant
from services.pathway.domain.derive import derive
from services.pathway.domain.rules import RuleBook
from services.pathway.domain.status import Milestone, PathwayStatus

RULES = RuleBook.load()
NATIONAL_ID = synthetic_national_id(random.Random(2025), date(1984, 3, 12))  # synthetic: month + 80
_UNITS = {
    Setting.OUTPATIENT: ("9970101", "DPS Test poliklinikk"),
    Setting.INPATIENT: ("9970103", "DPS Test døgn"),
}


def day(value: str | date) -> date:
    return value if isinstance(value, date) else date.fromisoformat(value)


def at(value: str) -> datetime:
    """A point in time: a bare date is 12:00 Europe/Oslo that day (as `forlop --as-of` reads it)."""
    return parse_time(value)


def _when(value: str | datetime, default_time: time) -> datetime:
    if isinstance(value, datetime):
        return value
    if len(value) == 10:
        return datetime.combine(date.fromisoformat(value), default_time, OSLO)
    return parse_time(value)


class EventBuilder:
    """One pathway's events: `emit` adds one with the pathway's identity and the next event id.

    Event ids are "<source>:<pathway id>-<id_infix><n>", n counting the events emitted (a redelivery
    copies an event, id and all). The local date is the Europe/Oslo date of `occurred_at`.
    """

    id_infix = ""

    def __init__(self, pathway_id: str, pathway_type: str, source: Source, patient: Patient, unit: Unit, *,
                 gp: HealthProfessional | None = None, referrer: HealthProfessional | None = None,
                 source_system: str | None = None) -> None:
        self.pathway_id = pathway_id
        self.pathway_type = pathway_type
        self.source = source
        self.patient = patient
        self.unit = unit
        self.gp = gp
        self.referrer = referrer
        self.source_system = source_system
        self.events: list[PathwayEvent] = []
        self._n = 0

    @property
    def key(self) -> str:
        return f"{self.source.value}:{self.pathway_id}"

    @property
    def next_number(self) -> int:
        """The n of the next event emitted (for ids derived from it, such as registration ids)."""
        return self._n + 1

    def emit(self, kind: EventKind, occurred_at: datetime, recorded_at: datetime, **fields: Any) -> PathwayEvent:
        self._n += 1
        identity: dict[str, Any] = {
            "event_id": f"{self.source.value}:{self.pathway_id}-{self.id_infix}{self._n}",
            "source": self.source,
            "kind": kind,
            "occurred_at": occurred_at,
            "occurred_on": occurred_at.astimezone(OSLO).date(),
            "recorded_at": recorded_at,
            "pathway_id": self.pathway_id,
            "pathway_type": self.pathway_type,
            "patient": self.patient,
            "unit": self.unit,
            "source_system": self.source_system,
            "gp": self.gp,
            "referrer": self.referrer,
        }
        ev = PathwayEvent(**{**identity, **fields})
        self.events.append(ev)
        return ev


class Scenario(EventBuilder):
    """Builds one pathway's canonical events; every method returns the builder."""

    id_infix = "ev"

    def __init__(
        self,
        pathway_type: str,
        setting: str = "outpatient",
        pathway_id: str = "PPR-TEST-1",
        source: str = "dips",
    ) -> None:
        self.setting = Setting(setting)
        super().__init__(
            pathway_id, pathway_type, Source(source),
            Patient(national_id=NATIONAL_ID, municipality="5001", receives_municipal_services=False),
            self._unit(self.setting), gp=HealthProfessional(hpr="9990001", her_id="9980001"), source_system="test",
        )
        self.refs: dict[str, str] = {}  # ref -> registration id

    # --- building blocks -----------------------------------------------------------------------

    @staticmethod
    def _unit(setting: Setting) -> Unit:
        her_id, name = _UNITS[setting]
        return Unit(her_id=her_id, name=name, setting=setting, org_number="983974899")

    def _add(self, kind: EventKind, occurred_at: datetime, recorded_at: datetime, setting: Setting | None = None,
             **fields: Any) -> Scenario:
        self.emit(kind, occurred_at, recorded_at, unit=self._unit(setting or self.setting), **fields)
        return self

    def in_setting(self, setting: str) -> Scenario:
        """Later events come from a unit in this setting (a move between inpatient and outpatient)."""
        self.setting = Setting(setting)
        return self

    def code(
        self,
        code: str,
        on: str,
        *,
        ref: str | None = None,
        registration_id: str | None = None,
        recorded: str | datetime | None = None,
        setting: str | None = None,
        **fields: Any,
    ) -> Scenario:
        """Any pathway code registration (use the named methods below where they fit)."""
        occurred_at = registration_instant(day(on))
        recorded_at = _when(recorded, time(15, 0)) if recorded else occurred_at.replace(hour=15)
        reg = (
            registration_id or (self.refs.get(ref) if ref else None) or f"REG-{self.pathway_id}-{self.next_number}"
        )
        if ref:
            self.refs[ref] = reg
        self.refs["last"] = reg
        return self._add(EventKind.PATHWAY_CODE, occurred_at, recorded_at, Setting(setting) if setting else None,
                         registration_id=reg, code=code, **fields)

    def start(self, on: str, first_attendance_deadline: str | None = None, **kw: Any) -> Scenario:
        deadline = day(first_attendance_deadline) if first_attendance_deadline else None
        return self.code(f"{self.pathway_type}A", on, first_attendance_deadline=deadline, **kw)

    def first_attendance(self, on: str, **kw: Any) -> Scenario:
        return self.code(f"{self.pathway_type}F", on, **kw)

    def decision(self, on: str, outcome: str, **kw: Any) -> Scenario:
        return self.code(f"{self.pathway_type}C{outcome}", on, **kw)

    def evaluation(self, on: str, plan_changed: bool = False, **kw: Any) -> Scenario:
        return self.code(f"{self.pathway_type}E", on, treatment_plan_changed=plan_changed, **kw)

    def detox_completed(self, on: str, **kw: Any) -> Scenario:
        return self.code(f"{self.pathway_type}V", on, **kw)

    def treatment_start(self, on: str, **kw: Any) -> Scenario:
        return self.code(f"{self.pathway_type}B", on, **kw)

    def end(self, on: str, outcome: str = "", **kw: Any) -> Scenario:
        return self.code(f"{self.pathway_type}X{outcome}", on, **kw)

    def withdraw(
        self,
        ref: str = "last",
        on: str | datetime | None = None,
        reason: str = "feilregistrering",
        recorded: str | datetime | None = None,
    ) -> Scenario:
        """Feilregistrering of a registration (by ref or registration id): as if it never happened."""
        target = self.refs.get(ref, ref)
        original = next(ev for ev in reversed(self.events) if ev.registration_id == target)
        when = on or recorded
        recorded_at = _when(when, time(16, 0)) if when else original.recorded_at + timedelta(hours=1)
        return self._add(EventKind.REGISTRATION_WITHDRAWN, recorded_at, recorded_at, withdraws=target,
                         reason=reason)

    def _appointment(
        self, change: AppointmentChange, original: str, new: str | None, reason: str | None
    ) -> Scenario:
        original_time = _when(original, time(10, 0))
        new_time = _when(new, time(10, 0)) if new else None
        appointment = Appointment(id=f"APP-{self.next_number}", original_time=original_time, change=change,
                                  new_time=new_time, reason=reason)
        return self._add(EventKind.APPOINTMENT_CHANGED, original_time, original_time + timedelta(hours=1),
                         appointment=appointment)

    def no_show(self, original: str, new: str | None = None) -> Scenario:
        return self._appointment(AppointmentChange.NO_SHOW, original, new, "Pasienten møtte ikke")

    def cancelled_by_patient(self, original: str, new: str | None = None) -> Scenario:
        return self._appointment(
            AppointmentChange.CANCELLED_BY_PATIENT, original, new, "Pasienten ba om ny time"
        )

    def cancelled_by_hospital(self, original: str, new: str | None = None) -> Scenario:
        return self._appointment(AppointmentChange.CANCELLED_BY_HOSPITAL, original, new, "Behandler syk")

    def consent(self, on: str, municipality: bool = True) -> Scenario:
        when = _when(on, time(14, 0))
        return self._add(EventKind.CONSENT_CHANGED, when, when, consent_municipality=municipality)

    def stay(self, kind: str, at_time: str, *, stay: str = "S1", recorded: str | None = None) -> Scenario:
        """An inpatient stay event: kind admission | discharge-ready | discharged, at "YYYY-MM-DD HH:MM"."""
        kinds = {"admission": EventKind.ADMISSION_STARTED, "discharge-ready": EventKind.DISCHARGE_READY,
                 "discharged": EventKind.DISCHARGED}
        when = _when(at_time, time(10, 0))
        recorded_at = _when(recorded, time(10, 30)) if recorded else when + timedelta(minutes=30)
        return self._add(kinds[kind], when, recorded_at, Setting.INPATIENT, stay_id=stay)

    def withdraw_stay(self, stay: str, on: str) -> Scenario:
        """The vendor's deletion naming the stay: the whole stay registered in error."""
        when = _when(on, time(9, 0))
        return self._add(EventKind.REGISTRATION_WITHDRAWN, when, when, withdraws=stay, reason="feilregistrering")

    def redeliver(self, index: int = -1) -> Scenario:
        """The same event delivered again (same event id)."""
        self.events.append(replace(self.events[index]))
        return self

    # --- deriving --------------------------------------------------------------------------------

    def derive(self, now: str | datetime, rules: RuleBook = RULES) -> PathwayStatus:
        return derive(self.events, rules, at(now) if isinstance(now, str) else now)


def pathway(pathway_type: str, setting: str = "outpatient", **kw: Any) -> Scenario:
    return Scenario(pathway_type, setting, **kw)


def milestone(status: PathwayStatus, key: str) -> Milestone:
    found = [m for m in status.milestones if m.key == key]
    assert found, f"no milestone {key!r} in {[m.key for m in status.milestones]}"
    return found[0]


def has_milestone(status: PathwayStatus, key: str) -> bool:
    return any(m.key == key for m in status.milestones)


def finding_kinds(status: PathwayStatus) -> list[str]:
    return [f.kind for f in status.findings]
