"""A small, hand-made data set of ten pathways for the coordinators' reports.

Every figure the tests assert was worked out by hand from the table below (as of
2026-03-15, Europe/Oslo). Units: A = 8140712 (DPS Nord, outpatient), B = 8140999
(Rusklinikken, outpatient). Deadlines (DOMAIN.md section 3, outpatient): PHV (D11)
decision-basic 42, decision-extended 42, first evaluation 42, next 84; TSB (D01)
decision-basic 21, first evaluation 7.

| id  | type | unit | kommune | consent | history                                                              |
|-----|------|------|---------|---------|----------------------------------------------------------------------|
| P1  | D11  | A    | 0301    | yes     | A 09-01 (frist 09-20), F 09-15 (met), CP 10-20 (met, 35 d), E 11-20 (met, 31 d); evaluation-2 due 2026-02-12: overdue 31 d |
| P2  | D11  | A    | 0301    | yes     | A 09-01, F 09-29 (no frist), no-show 11-03 -> 11-13 (+10), CU 11-15 (met-adjusted, 47 d), CP 12-20 (extended, met, 35 d); evaluation-1 due 2026-01-31: overdue 43 d |
| P3  | D11  | A    | 4601    | no      | A 10-01, F 10-10, CK 12-01 (late, 52 d), X 12-10                       |
| P4  | D01  | B    | 0301    | yes     | A 2026-01-05 (frist 01-15): first attendance overdue 59 d              |
| P5  | D11  | A    | 0301    | yes     | A 2026-03-01 (no frist): nothing due                                   |
| P6  | D11  | A    | 0301    | no      | A 2026-02-01, F 2026-02-10: decision-basic due 03-24, 9 days left      |
| P7  | D11  | A    | 0301    | yes     | A 2025-06-01, X 2025-08-01 keyed 08-30 (late registration), no first attendance |
| P8  | D01  | B    | 4601    | yes     | (eSP) A 10-01 (frist 10-15), F 10-05 (met, 4 d), CT 10-20 (met, 15 d), X 12-01: no evaluation |
| P9  | D11  | A    | 4601    | no      | A 11-01, CP 11-10 (before first attendance); evaluation-1 due 12-22: overdue 83 d |
| P10 | D11  | B    | 0301    | yes     | A 12-01, withdrawn 12-03: entered in error                             |

Dates without a year are 2025.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta
from typing import Any

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
from tests.builders import EventBuilder

NOW = datetime(2026, 3, 15, 12, 0, tzinfo=OSLO)
TODAY = NOW.date()
UNIT_A = "8140712"
UNIT_B = "8140999"
UNIT_NAMES = {UNIT_A: "DPS Nord, poliklinikk", UNIT_B: "Rusklinikken, poliklinikk"}

_serial = itertools.count(100)


def synthetic_national_id(day: int, month: int, year: int) -> str:
    """A synthetic fødselsnummer (month + 80) with valid mod-11 check digits."""
    while True:
        base = f"{day:02d}{month + 80:02d}{year % 100:02d}{next(_serial) % 1000:03d}"
        k1 = _check(base, (3, 7, 6, 1, 8, 9, 4, 5, 2))
        if k1 is None:
            continue
        k2 = _check(base + str(k1), (5, 4, 3, 2, 7, 6, 5, 4, 3, 2))
        if k2 is None:
            continue
        return f"{base}{k1}{k2}"


def _check(digits: str, weights: tuple[int, ...]) -> int | None:
    k = 11 - sum(int(d) * w for d, w in zip(digits, weights, strict=True)) % 11
    return 0 if k == 11 else None if k == 10 else k


class PathwayBuilder(EventBuilder):
    """One pathway of the data set: registrations at 10:00 on their day, keyed two hours later."""

    def __init__(self, pathway_id: str, pathway_type: str, unit: str, municipality: str, consent: bool,
                 source: Source = Source.DIPS) -> None:
        national_id = synthetic_national_id(int(pathway_id[1:]) + 1, 3, 1990)
        super().__init__(pathway_id, pathway_type, source, Patient(national_id, municipality),
                         Unit(unit, UNIT_NAMES[unit], Setting.OUTPATIENT), gp=HealthProfessional(hpr="9144889", her_id="1234567"))
        self.consent = consent

    def _event(self, kind: EventKind, on: date, recorded: date | None = None, **extra: Any) -> PathwayEvent:
        occurred_at = datetime.combine(on, time(10, 0), tzinfo=OSLO)
        recorded_at = (
            datetime.combine(recorded, time(15, 0), tzinfo=OSLO) if recorded else occurred_at + timedelta(hours=2)
        )
        return self.emit(kind, occurred_at, recorded_at,
                         consent_municipality=self.consent if not self.events else None, **extra)

    def code(self, suffix: str, on: date, *, frist: date | None = None, recorded: date | None = None,
             registration: str | None = None) -> PathwayBuilder:
        self._event(EventKind.PATHWAY_CODE, on, recorded, code=f"{self.pathway_type}{suffix}",
                    registration_id=registration or f"{self.pathway_id}-r{len(self.events) + 1}",
                    first_attendance_deadline=frist)
        return self

    def no_show(self, original: date, new: date) -> PathwayBuilder:
        appointment = Appointment(f"{self.pathway_id}-appt", datetime.combine(original, time(9), tzinfo=OSLO),
                                  AppointmentChange.NO_SHOW, datetime.combine(new, time(9), tzinfo=OSLO))
        self._event(EventKind.APPOINTMENT_CHANGED, original, appointment=appointment)
        return self

    def withdraw(self, registration: str, on: date) -> PathwayBuilder:
        self._event(EventKind.REGISTRATION_WITHDRAWN, on, withdraws=registration, reason="feilregistrering")
        return self

    def stay(self, kind: EventKind, at: datetime, stay: str, recorded: datetime | None = None) -> PathwayBuilder:
        """An inpatient stay event at a time of day, recorded half an hour later unless `recorded` says."""
        ev = self._event(kind, at.date(), stay_id=stay)
        self.events[-1] = replace(ev, occurred_at=at, recorded_at=recorded or at + timedelta(minutes=30),
                                  unit=replace(ev.unit, setting=Setting.INPATIENT))
        return self


def d(month: int, day: int, year: int = 2025) -> date:
    return date(year, month, day)


def build_dataset() -> dict[str, PathwayBuilder]:
    p = {}
    p["P1"] = (PathwayBuilder("P1", "D11", UNIT_A, "0301", True)
               .code("A", d(9, 1), frist=d(9, 20)).code("F", d(9, 15)).code("CP", d(10, 20)).code("E", d(11, 20)))
    p["P2"] = (PathwayBuilder("P2", "D11", UNIT_A, "0301", True)
               .code("A", d(9, 1)).code("F", d(9, 29)).no_show(d(11, 3), d(11, 13)).code("CU", d(11, 15))
               .code("CP", d(12, 20)))
    p["P3"] = (PathwayBuilder("P3", "D11", UNIT_A, "4601", False)
               .code("A", d(10, 1)).code("F", d(10, 10)).code("CK", d(12, 1)).code("X", d(12, 10)))
    p["P4"] = PathwayBuilder("P4", "D01", UNIT_B, "0301", True).code("A", d(1, 5, 2026), frist=d(1, 15, 2026))
    p["P5"] = PathwayBuilder("P5", "D11", UNIT_A, "0301", True).code("A", d(3, 1, 2026))
    p["P6"] = (PathwayBuilder("P6", "D11", UNIT_A, "0301", False)
               .code("A", d(2, 1, 2026)).code("F", d(2, 10, 2026)))
    p["P7"] = (PathwayBuilder("P7", "D11", UNIT_A, "0301", True)
               .code("A", d(6, 1)).code("X", d(8, 1), recorded=d(8, 30)))
    p["P8"] = (PathwayBuilder("P8", "D01", UNIT_B, "4601", True, source=Source.ESP)
               .code("A", d(10, 1), frist=d(10, 15)).code("F", d(10, 5)).code("CT", d(10, 20)).code("X", d(12, 1)))
    p["P9"] = PathwayBuilder("P9", "D11", UNIT_A, "4601", False).code("A", d(11, 1)).code("CP", d(11, 10))
    p["P10"] = (PathwayBuilder("P10", "D11", UNIT_B, "0301", True)
                .code("A", d(12, 1), registration="P10-start").withdraw("P10-start", d(12, 3)))
    return p


def stay_dataset() -> dict[str, PathwayBuilder]:
    """Inpatient stays and their notices (issue #25): S1's admission registered 34 hours after it
    began (unit A, October); S2 (unit B, eSP) ready for discharge in November with no admission
    before, and a second stay discharged in December with no discharge-ready notice."""
    def t(month: int, day: int, hour: int, minute: int = 0) -> datetime:
        return datetime(2025, month, day, hour, minute, tzinfo=OSLO)

    p = {}
    p["S1"] = (PathwayBuilder("S1", "D11", UNIT_A, "0301", False)
               .code("A", d(9, 1)).code("F", d(9, 15)).code("CP", d(10, 1))
               .stay(EventKind.ADMISSION_STARTED, t(10, 5, 22), "ADM-1", recorded=t(10, 7, 8))
               .stay(EventKind.DISCHARGE_READY, t(10, 20, 9), "ADM-1")
               .stay(EventKind.DISCHARGED, t(10, 22, 12), "ADM-1"))
    p["S2"] = (PathwayBuilder("S2", "D01", UNIT_B, "4601", True, source=Source.ESP)
               .code("A", d(11, 1)).code("F", d(11, 2))
               .stay(EventKind.DISCHARGE_READY, t(11, 10, 9), "OPP-1")
               .stay(EventKind.DISCHARGED, t(11, 12, 12), "OPP-1")
               .stay(EventKind.ADMISSION_STARTED, t(12, 1, 10), "OPP-2")
               .stay(EventKind.DISCHARGED, t(12, 8, 12), "OPP-2"))
    return p


@dataclass(frozen=True)
class Dataset:
    pathways: dict[str, PathwayBuilder]
    now: datetime = NOW

    @property
    def events(self) -> list[PathwayEvent]:
        return [ev for b in self.pathways.values() for ev in b.events]

    def key(self, name: str) -> str:
        return self.pathways[name].key
