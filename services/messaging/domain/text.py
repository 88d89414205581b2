"""The Notat a busy GP or coordinator reads in ten seconds: who, which pathway, what happened, who follows up.

Norwegian, because the reader is. No free text from the EHR is copied in (it may hold anything).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from forlop.clock import OSLO, local_date
from forlop.events import PathwayEvent
from services.messaging.domain.model import Trigger

PATHWAY_NAMES = {
    "D11": "Utredning og behandling i psykisk helsevern, voksne",
    "D12": "Utredning og behandling i psykisk helsevern, barn og unge",
    "D01": "Tverrfaglig spesialisert rusbehandling (TSB)",
}
DECISION_OUTCOMES = {
    "U": ("behov for utvidet utredning", "Videre utredning ved {unit}."),
    "P": ("behandling i psykisk helsevern", "Behandling i psykisk helsevern ved {unit}."),
    "T": ("behandling i TSB", "Behandling i tverrfaglig spesialisert rusbehandling ved {unit}."),
    "S": ("behandling i annen spesialisthelsetjeneste", "Annen del av spesialisthelsetjenesten; forløpet her avsluttes."),
    "K": ("oppfølging i kommunen", "Fastlege og kommunale helse- og omsorgstjenester; forløpet her avsluttes."),
    "A": ("oppfølging av andre instanser", "Andre instanser (NAV, PPT, skole, barnevern, arbeidsgiver); "
          "forløpet her avsluttes."),
    "I": ("ikke behov for videre helsehjelp", "Ingen videre oppfølging i spesialisthelsetjenesten."),
}
PHASES = {
    "referral": "henvisning", "assessment": "utredning", "extended-assessment": "utvidet utredning",
    "treatment": "behandling", "ended": "avsluttet",
}
TRIGGER_NAMES = {
    Trigger.DECISION: "Klinisk beslutning",
    Trigger.EVALUATION: "Evaluering av behandlingen",
    Trigger.END: "Avslutning av pakkeforløp",
    Trigger.ADMISSION: "Innleggelse",
    Trigger.DISCHARGE_READY: "Utskrivningsklar",
    Trigger.DISCHARGED: "Utskrevet",
}


def _d(day: date) -> str:
    return day.strftime("%d.%m.%Y")


def notat(
    trigger: Trigger, ev: PathwayEvent, details: dict[str, Any], *, corrects: dict[str, Any] | None = None
) -> tuple[str, str]:
    """(Tema, text) for a Dialogmelding Notat."""
    pathway = f"{PATHWAY_NAMES.get(ev.pathway_type, 'Nasjonalt pasientforløp')} ({ev.pathway_type})"
    when = _d(ev.occurred_on or local_date(ev.occurred_at))
    unit = ev.unit.name
    lines = [f"Pasient: {ev.patient.national_id}", f"Pakkeforløp: {pathway}, forløps-id {ev.pathway_id}"]
    if corrects is not None:
        original = Trigger(corrects["trigger"])
        tema = f"KORRIGERING: {TRIGGER_NAMES.get(original, original.value).lower()} {when} er slettet"
        lines += [
            f"Meldingen om {TRIGGER_NAMES.get(original, original.value).lower()} {when} "
            f"(melding-id {corrects['id']}) gjaldt en registrering som er slettet i journalen som feilregistrering.",
            "Se bort fra den meldingen.",
        ]
    else:
        tema = f"{TRIGGER_NAMES[trigger]} i pakkeforløp {ev.pathway_type}"
        lines.append(_what(trigger, ev, details, when, unit))
        phase = details.get("phase")
        if phase and trigger is not Trigger.END:
            lines.append(f"Fase nå: {PHASES.get(phase, phase)}")
        lines.append(f"Ansvar for videre oppfølging: {_follow_up(trigger, details, unit)}")
    lines.append(f"Kontakt: {unit} (HER-id {ev.unit.her_id})")
    return tema, "\n".join(lines)


def _what(trigger: Trigger, ev: PathwayEvent, details: dict[str, Any], when: str, unit: str) -> str:
    code = f" ({ev.code})" if ev.code else ""
    if trigger is Trigger.DECISION:
        outcome = DECISION_OUTCOMES.get(details.get("outcome") or "", ("", ""))[0]
        return f"Hendelse: klinisk beslutning {when}{code}: {outcome or 'se journal'}."
    if trigger is Trigger.EVALUATION:
        changed = "ja" if ev.treatment_plan_changed else "nei"
        return f"Hendelse: evaluering av behandlingen {when}{code}. Større endring i behandlingsplanen: {changed}."
    if trigger is Trigger.END:
        return f"Hendelse: pakkeforløpet ved {unit} ble avsluttet {when}{code}."
    return f"Hendelse: {TRIGGER_NAMES[trigger].lower()} {when} ved {unit}."


def _follow_up(trigger: Trigger, details: dict[str, Any], unit: str) -> str:
    if trigger is Trigger.DECISION:
        text = DECISION_OUTCOMES.get(details.get("outcome") or "", ("", f"{unit}."))[1]
        return text.format(unit=unit)
    if trigger is Trigger.END:
        return "fastlege og kommunale tjenester."
    return f"{unit}."


def _at(ev: PathwayEvent) -> str:
    return ev.occurred_at.astimezone(OSLO).strftime("%d.%m.%Y kl. %H:%M")


def admitted(ev: PathwayEvent) -> str:
    return f"Pasienten ble innlagt {_at(ev)} ved {ev.unit.name} (pakkeforløp {ev.pathway_type})."


def admitted_on(at: datetime, unit: str) -> str:
    return f"Pasienten ble innlagt {at.astimezone(OSLO).strftime('%d.%m.%Y kl. %H:%M')} ved {unit}."


def municipal_need(ev: PathwayEvent) -> str:
    """The admission notice's point (the regulation's): will the municipality be needed after discharge."""
    if ev.patient.receives_municipal_services:
        return ("Forventet behov for kommunale helse- og omsorgstjenester etter utskrivning: ja, pasienten "
                "mottar kommunale helse- og omsorgstjenester.")
    return "Forventet behov for kommunale helse- og omsorgstjenester etter utskrivning: ikke kjent."


def discharge_ready(ev: PathwayEvent) -> str:
    return f"Pasienten ble meldt utskrivningsklar {_d(ev.occurred_on)} ved {ev.unit.name} (pakkeforløp {ev.pathway_type})."


def discharged(ev: PathwayEvent, place: str) -> str:
    return f"Pasienten ble utskrevet {_at(ev)} fra {ev.unit.name} (pakkeforløp {ev.pathway_type}). Utskrevet til: {place}."


def discharged_to(place: str, stated: bool) -> str:
    return f"Utskrevet til: {place}." if stated else "Utskrevet til: ikke oppgitt i journalen."


def plo_cancellation(trigger: Trigger, ev: PathwayEvent, original_id: str) -> str:
    return (f"Kansellering: registreringen av {TRIGGER_NAMES[trigger].lower()} {_d(ev.occurred_on)} er slettet "
            f"i journalen som feilregistrering. Se bort fra meldingen (melding-id {original_id}).")
