"""`owed_messages(events, status, directory)`: the e-messages a pathway's history owes (DOMAIN §5).

Pure: the same history (in any arrival order) gives the same list. Withdrawn registrations
are as if they never happened; whether a correction is owed depends on what was already
sent, which `plan.reconcile` decides from the stored rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from forlop.events import EventKind, PathwayEvent
from services.messaging.domain.model import (
    GpDirectory,
    MunicipalityDirectory,
    OwedMessage,
    Recipient,
    Role,
    Trigger,
)
from services.pathway.domain.history import current_history

_STAY_TRIGGERS = {
    EventKind.ADMISSION_STARTED: Trigger.ADMISSION,
    EventKind.DISCHARGE_READY: Trigger.DISCHARGE_READY,
    EventKind.DISCHARGED: Trigger.DISCHARGED,
}
_LETTER_TRIGGERS = {"C": Trigger.DECISION, "E": Trigger.EVALUATION, "X": Trigger.END}
# Clinical decision outcomes that hand follow-up to the municipality or other agencies.
_MUNICIPAL_OUTCOMES = ("K", "A")


def _order(ev: PathwayEvent) -> tuple:
    return (ev.occurred_at, ev.event_id)


def registration_key(ev: PathwayEvent) -> str:
    return ev.registration_id or ev.event_id


def withdrawn_registrations(events: Iterable[PathwayEvent]) -> set[str]:
    """Registrations whose last word in the history is a withdrawal (the pathway engine's reading)."""
    current = current_history(events)
    return {registration_key(ev) for ev in current.withdrawn} | {
        ev.withdraws for ev in current.unmatched_withdrawals if ev.withdraws
    }


def effective_history(events: Iterable[PathwayEvent]) -> list[PathwayEvent]:
    """The history in force, the same one the pathway engine derives status from, sorted by when it happened.

    Withdrawals remove what they withdraw (in any arrival order); of a corrected registration the
    version recorded last counts.
    """
    return sorted(current_history(events).events, key=_order)


def code_parts(ev: PathwayEvent) -> tuple[str | None, str | None]:
    """(event letter, outcome letter) of a national code such as D11CK -> ("C", "K")."""
    code = (ev.code or "").upper()
    prefix = len(ev.pathway_type) if code.startswith(ev.pathway_type.upper()) else 3
    letter = code[prefix : prefix + 1] or None
    outcome = code[prefix + 1 : prefix + 2] or None
    return letter, outcome


def consent_at(history: Sequence[PathwayEvent], trigger: PathwayEvent) -> bool:
    """Consent to involve the municipality in force when the trigger happened (latest dated <= it)."""
    latest: bool | None = None
    for ev in history:
        if ev.kind is EventKind.CONSENT_CHANGED and ev.occurred_at <= trigger.occurred_at:
            latest = bool(ev.consent_municipality)
    return bool(latest)


def trigger_of(ev: PathwayEvent) -> tuple[Trigger | None, str | None]:
    if ev.kind in _STAY_TRIGGERS:
        return _STAY_TRIGGERS[ev.kind], None
    if ev.kind is EventKind.PATHWAY_CODE:
        letter, outcome = code_parts(ev)
        return _LETTER_TRIGGERS.get(letter or ""), outcome
    return None, None


def owed_messages(
    events: Iterable[PathwayEvent],
    status: dict[str, Any] | None,
    directory: MunicipalityDirectory,
    gps: GpDirectory | None = None,
) -> list[OwedMessage]:
    """Every message the pathway's current history owes, sorted by trigger time then key."""
    history = effective_history(events)
    owed: dict[str, OwedMessage] = {}
    for ev in history:
        trigger, outcome = trigger_of(ev)
        if trigger is None:
            continue
        roles = _roles(ev, trigger, outcome)
        for role in roles:
            msg = _owed(ev, trigger, role, outcome, history, directory, gps, status)
            if msg is not None:
                owed.setdefault(msg.dedupe_key, msg)  # a redelivered registration owes nothing new
    return sorted(owed.values(), key=lambda m: (_order(m.event), m.dedupe_key))


def _roles(ev: PathwayEvent, trigger: Trigger, outcome: str | None) -> list[Role]:
    if trigger in (Trigger.ADMISSION, Trigger.DISCHARGE_READY, Trigger.DISCHARGED):
        return [Role.MUNICIPALITY] if ev.patient.receives_municipal_services else []
    roles: list[Role] = []
    if trigger is not Trigger.EVALUATION or ev.treatment_plan_changed:
        roles += [Role.GP, Role.REFERRER]
    if trigger is not Trigger.DECISION or outcome in _MUNICIPAL_OUTCOMES:
        roles.append(Role.MUNICIPALITY)
    return roles


def _owed(
    ev: PathwayEvent,
    trigger: Trigger,
    role: Role,
    outcome: str | None,
    history: Sequence[PathwayEvent],
    directory: MunicipalityDirectory,
    gps: GpDirectory | None,
    status: dict[str, Any] | None,
) -> OwedMessage | None:
    reg = registration_key(ev)
    recipient: Recipient | None = None
    reason: str | None = None
    consent = True
    gp_her = ev.gp.her_id if ev.gp else None
    if role is Role.GP:
        key = f"her:{gp_her}" if gp_her else "gp-of-patient"
        recipient = _event_party(gp_her, "Fastlege", gps, ev) if gp_her else None
        if recipient is None and gps is not None:
            recipient = gps.gp_for(ev.patient.national_id)
        if recipient is None:
            reason = "unresolved recipient: the patient's GP is not known (fastlegeregister)"
    elif role is Role.REFERRER:
        ref_her = ev.referrer.her_id if ev.referrer else None
        if not ref_her or ref_her == gp_her:
            return None  # no referrer, or the GP referred: the GP message covers it
        key = f"her:{ref_her}"
        recipient = _event_party(ref_her, "Henviser", gps, ev)
    else:
        kommune = ev.patient.municipality
        key = f"kommune:{kommune}"
        entry = directory.municipality(kommune)
        recipient = entry.recipient if entry else None
        if recipient is None:
            reason = f"unresolved recipient: no receiving service for municipality {kommune} in the address register"
        consent = consent_at(history, ev)
    details = {"outcome": outcome, "phase": (status or {}).get("phase"), "episode": (status or {}).get("episode_status")}
    return OwedMessage(
        # Unique across the whole table: registration ids are only unique within one source system.
        dedupe_key=f"{ev.pathway_key}/{reg}|{trigger.value}|{role.value}|{key}",
        registration_id=reg,
        trigger=trigger,
        role=role,
        recipient_key=key,
        recipient=recipient,
        event=ev,
        consent=consent,
        unresolved_reason=reason,
        details=details,
    )


def _event_party(her_id: str, name: str, gps: GpDirectory | None, ev: PathwayEvent) -> Recipient:
    """A party named by HER-id in the event; its office (two-level address) from the GP register when known."""
    known = gps.gp_for(ev.patient.national_id) if gps is not None and name == "Fastlege" else None
    if known is not None and known.her_id == her_id:
        return known
    return Recipient(her_id=her_id, name=name)
