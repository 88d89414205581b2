"""DIPS-like events (docs/contracts/dips-events.md) -> canonical `PathwayEvent`.

Assumes the record passed `validation.validate("dips", ...)`.

Time rules, shared with the eSP mapping so that both vendors place the same fact at
the same moment (see `services.ingest.domain.normalise`): a pathway code is placed at 00:00
Europe/Oslo on ``document.date``; a deletion when it was recorded (``recordedTime``:
eSP knows no other time for it); an appointment change at the appointment it changes
(``originalTime``); a stay event at ``admission.time``; a consent at ``eventTime``.
A discharge's ``admission.dischargeDestination`` (the same values as `DischargeDestination`)
is kept when given; absent means not stated.
When ``eventTime`` is not the canonical moment it is kept in ``extra["eventTime"]``.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from forlop.clock import local_date
from forlop.codes import code_list
from forlop.events import (
    Appointment,
    AppointmentChange,
    DischargeDestination,
    EventKind,
    HealthProfessional,
    PathwayEvent,
    Patient,
    Setting,
    Source,
    Unit,
)
from services.ingest.domain.validation import parse_dips_time, registration_instant

_ADMISSION_KINDS = {
    "admission.started": EventKind.ADMISSION_STARTED,
    "admission.discharge-ready": EventKind.DISCHARGE_READY,
    "admission.ended": EventKind.DISCHARGED,
}


def _professional(value: Any) -> HealthProfessional | None:
    if not isinstance(value, dict) or not (value.get("hpr") or value.get("herId")):
        return None
    return HealthProfessional(hpr=value.get("hpr"), her_id=value.get("herId"))


def normalise(raw: dict[str, Any]) -> PathwayEvent:
    """One validated DIPS event as a canonical pathway event."""
    event_type = raw["eventType"]
    event_time = parse_dips_time(raw["eventTime"])
    patient = raw["patient"]
    unit = raw["unit"]
    fields: dict[str, Any] = {
        "event_id": f"dips:{raw['eventId']}",
        "source": Source.DIPS,
        "recorded_at": parse_dips_time(raw["recordedTime"]),
        "pathway_id": raw["pathway"]["id"],
        "pathway_type": raw["pathway"]["type"],
        "patient": Patient(
            national_id=patient["nationalId"],
            municipality=patient["municipality"],
            receives_municipal_services=patient.get("receivesMunicipalServices"),
        ),
        "unit": Unit(
            her_id=unit["herId"],
            name=unit["name"],
            setting=Setting(unit["setting"]),
            org_number=raw["source"]["organisation"]["orgNumber"],
        ),
        "source_system": raw["source"]["system"],
        "gp": _professional(raw.get("gp")),
        "referrer": _professional(raw.get("referrer")),
    }
    occurred_at = event_time

    if event_type == "ppr.document.approved":
        doc = raw["document"]
        day = date.fromisoformat(doc["date"])
        occurred_at = registration_instant(day)
        deadline = doc.get("firstAttendanceDeadline")
        is_evaluation = code_list().parse(doc["code"]).event == "evaluation"
        fields.update(
            kind=EventKind.PATHWAY_CODE,
            registration_id=doc["id"],
            code=doc["code"],
            first_attendance_deadline=date.fromisoformat(deadline) if deadline else None,
            # DIPS sends the flag on every form; it only means something on an evaluation
            treatment_plan_changed=doc.get("treatmentPlanChanged") if is_evaluation else None,
            author_hpr=(doc.get("author") or {}).get("hpr"),
            extra={"form": doc["form"]},
        )
    elif event_type == "ppr.document.deleted":
        doc = raw["document"]
        occurred_at = fields["recorded_at"]
        fields.update(kind=EventKind.REGISTRATION_WITHDRAWN, withdraws=doc["id"], reason=doc.get("reason"))
    elif event_type == "appointment.changed":
        app = raw["appointment"]
        occurred_at = parse_dips_time(app["originalTime"])
        fields.update(
            kind=EventKind.APPOINTMENT_CHANGED,
            appointment=Appointment(
                id=app["id"],
                original_time=occurred_at,
                change=AppointmentChange(app["status"]),
                new_time=parse_dips_time(app["newTime"]) if app.get("newTime") else None,
                reason=app.get("reason"),
            ),
        )
    elif event_type in _ADMISSION_KINDS:
        stay = raw["admission"]
        occurred_at = parse_dips_time(stay["time"])
        fields.update(kind=_ADMISSION_KINDS[event_type], stay_id=stay["id"])
        if event_type == "admission.ended" and stay.get("dischargeDestination"):
            fields["discharge_destination"] = DischargeDestination(stay["dischargeDestination"])
    elif event_type == "consent.changed":
        fields.update(kind=EventKind.CONSENT_CHANGED, consent_municipality=raw["consent"]["municipality"])
    else:  # validation rejects it first; this guards a caller that skipped it
        raise ValueError(f"unknown DIPS eventType {event_type!r}")

    if occurred_at is not event_time:
        fields["extra"] = {**fields.get("extra", {}), "eventTime": raw["eventTime"]}
    return PathwayEvent(occurred_at=occurred_at, occurred_on=local_date(occurred_at), **fields)
