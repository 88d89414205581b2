"""eSP-like records (docs/contracts/esp-events.md) -> canonical `PathwayEvent`.

Assumes the record passed `validation.validate("esp", ...)`. eSP times carry no
offset: they are Norwegian local time, made aware with Europe/Oslo.

Time rule, shared with the DIPS mapping (see `services.ingest.domain.normalise`): a pathway
code (FORLOPSKODE) is placed at 00:00 Europe/Oslo on ``hendelsesdato``. A deletion has
no clinical time, so it is placed when it was keyed in (``registrertTid``); an
appointment change at the appointment it changes (``opprinneligTid``); stays and
consents at their ``tidspunkt``. A discharge's ``utskrevetTil`` is kept when given; absent
means not stated.
"""

from __future__ import annotations

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
from services.ingest.domain.validation import parse_esp_date, parse_esp_time, registration_instant

_SETTINGS = {"P": Setting.OUTPATIENT, "D": Setting.INPATIENT}
_YES_NO = {"J": True, "N": False}
_RECORDED_BY = {"behandler": "clinician", "kontor": "office"}
_APPOINTMENT_CHANGES = {
    "IKKE_MOTT": AppointmentChange.NO_SHOW,
    "AVLYST_PASIENT": AppointmentChange.CANCELLED_BY_PATIENT,
    "AVLYST_SYKEHUS": AppointmentChange.CANCELLED_BY_HOSPITAL,
}
_DISCHARGE_DESTINATIONS = {
    "HJEM": DischargeDestination.HOME,
    "SYKEHJEM": DischargeDestination.NURSING_HOME,
    "KAD": DischargeDestination.MUNICIPAL_ACUTE_UNIT,
    "ANNEN_SPESIALISTHELSETJENESTE": DischargeDestination.OTHER_SPECIALIST_INSTITUTION,
    "EGEN_INSTITUSJON_SOMATIKK": DischargeDestination.OWN_INSTITUTION_SOMATIC,
    "EGEN_INSTITUSJON_ANNEN": DischargeDestination.OWN_INSTITUTION_OTHER,
    "INSTITUSJON_UTLAND": DischargeDestination.INSTITUTION_ABROAD,
    "ANNET": DischargeDestination.OTHER,
}
_STAY_KINDS = {
    "INNLEGGELSE": EventKind.ADMISSION_STARTED,
    "UTSKRIVNINGSKLAR": EventKind.DISCHARGE_READY,
    "UTSKREVET": EventKind.DISCHARGED,
}


def normalise(raw: dict[str, Any]) -> PathwayEvent:
    """One validated eSP record as a canonical pathway event."""
    kind = raw["meldingstype"]
    recorded_at = parse_esp_time(raw["registrertTid"])
    gp = None
    if raw.get("fastlegeHpr") or raw.get("fastlegeHerId"):
        gp = HealthProfessional(hpr=raw.get("fastlegeHpr"), her_id=raw.get("fastlegeHerId"))
    fields: dict[str, Any] = {
        "event_id": f"esp:{raw['meldingsId']}",
        "source": Source.ESP,
        "recorded_at": recorded_at,
        "pathway_id": raw["forlopsId"],
        "pathway_type": raw["forlopstype"],
        "patient": Patient(
            national_id=raw["fodselsnummer"],
            municipality=raw["bostedskommune"],
            receives_municipal_services=_YES_NO.get(raw.get("kommunaleTjenester", "")),
        ),
        "unit": Unit(her_id=raw["enhetHerId"], name=raw["enhetNavn"], setting=_SETTINGS[raw["omsorgsniva"]]),
        "gp": gp,
        "referrer": HealthProfessional(her_id=raw["henviserHerId"]) if raw.get("henviserHerId") else None,
        "recorded_by": _RECORDED_BY.get(raw.get("registrertAv", "")),
    }

    if kind == "FORLOPSKODE":
        occurred_at = registration_instant(parse_esp_date(raw["hendelsesdato"]))
        deadline = raw.get("fristForsteSamtale")
        is_evaluation = code_list().parse(raw["kode"]).event == "evaluation"
        fields.update(
            kind=EventKind.PATHWAY_CODE,
            registration_id=raw["registreringsId"],
            code=raw["kode"],
            first_attendance_deadline=parse_esp_date(deadline) if deadline else None,
            treatment_plan_changed=_YES_NO.get(raw.get("endretBehandlingsplan", "")) if is_evaluation else None,
        )
    elif kind == "FORLOPSKODE_SLETTET":
        occurred_at = recorded_at
        fields.update(kind=EventKind.REGISTRATION_WITHDRAWN, withdraws=raw["registreringsId"], reason=raw.get("arsak"))
    elif kind == "TIME":
        occurred_at = parse_esp_time(raw["opprinneligTid"])
        fields.update(
            kind=EventKind.APPOINTMENT_CHANGED,
            appointment=Appointment(
                id=raw["timeId"],
                original_time=occurred_at,
                change=_APPOINTMENT_CHANGES[raw["timestatus"]],
                new_time=parse_esp_time(raw["nyTid"]) if raw.get("nyTid") else None,
                reason=raw.get("arsak"),
            ),
        )
    elif kind in _STAY_KINDS:
        occurred_at = parse_esp_time(raw["tidspunkt"])
        fields.update(kind=_STAY_KINDS[kind], stay_id=raw["oppholdId"])
        if kind == "UTSKREVET" and raw.get("utskrevetTil"):
            fields["discharge_destination"] = _DISCHARGE_DESTINATIONS[raw["utskrevetTil"]]
    elif kind == "SAMTYKKE":
        occurred_at = parse_esp_time(raw["tidspunkt"])
        fields.update(kind=EventKind.CONSENT_CHANGED, consent_municipality=_YES_NO[raw["samtykkeKommune"]])
    else:  # validation rejects it first; this guards a caller that skipped it
        raise ValueError(f"unknown eSP meldingstype {kind!r}")

    return PathwayEvent(occurred_at=occurred_at, occurred_on=local_date(occurred_at), **fields)
