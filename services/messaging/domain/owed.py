"""`owed_messages(events, status, directory)`: the e-messages a pathway's history owes (DOMAIN §5).

Which registration owes what to whom is data (`services.messaging.domain.triggers`). Pure: the
same history (in any arrival order) gives the same list. Withdrawn registrations
are as if they never happened; whether a correction is owed depends on what was already
sent, which `plan.reconcile` decides from the stored rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from forlop.events import EventKind, PathwayEvent
from forlop.history import current_history
from forlop.status import PathwayStatus
from services.messaging.domain.model import (
    GpDirectory,
    MunicipalityDirectory,
    OwedMessage,
    Recipient,
    Role,
    Trigger,
)
from services.messaging.domain.triggers import Gate, TriggerBook, trigger_book


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


def consent_at(history: Sequence[PathwayEvent], trigger: PathwayEvent) -> bool:
    """Consent to involve the municipality in force when the trigger happened (latest dated <= it)."""
    latest: bool | None = None
    for ev in history:
        if ev.kind is EventKind.CONSENT_CHANGED and ev.occurred_at <= trigger.occurred_at:
            latest = bool(ev.consent_municipality)
    return bool(latest)


def owed_messages(
    events: Iterable[PathwayEvent],
    status: PathwayStatus | None,
    directory: MunicipalityDirectory,
    gps: GpDirectory | None = None,
    triggers: TriggerBook | None = None,
) -> list[OwedMessage]:
    """Every message the pathway's current history owes, sorted by trigger time then key.

    Who gets what, and on which condition, is data (`triggers`, by default
    ``profiles/messaging/triggers.json``): the version in force on the day of each trigger.
    """
    book = triggers or trigger_book()
    history = effective_history(events)
    owed: dict[str, OwedMessage] = {}
    for ev in history:
        match = book.for_day(ev.occurred_on).match(ev)
        if match is None:
            continue
        for rule in match.rule.recipients:
            if not rule.applies(ev, match.outcome):
                continue
            if rule.gate is Gate.MUNICIPAL_SERVICES and not ev.patient.receives_municipal_services:
                continue  # not owed at all: the regulation's notice is for patients with municipal services
            consent = consent_at(history, ev) if rule.gate is Gate.CONSENT else True
            msg = _owed(ev, match.rule.trigger, rule.role, match.outcome, history, directory, gps, status, consent)
            if msg is not None:
                owed.setdefault(msg.dedupe_key, msg)  # a redelivered registration owes nothing new
    return sorted(owed.values(), key=lambda m: (_order(m.event), m.dedupe_key))


def _owed(
    ev: PathwayEvent,
    trigger: Trigger,
    role: Role,
    outcome: str | None,
    history: Sequence[PathwayEvent],
    directory: MunicipalityDirectory,
    gps: GpDirectory | None,
    status: PathwayStatus | None,
    consent: bool,
) -> OwedMessage | None:
    reg = registration_key(ev)
    recipient: Recipient | None = None
    reason: str | None = None
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
    details = {"outcome": outcome, "phase": status.phase if status else None,
               "episode": status.episode_status.value if status else None}
    if ev.kind is EventKind.DISCHARGE_READY:
        details["admittedAt"] = _admitted_at(history, ev)
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


def _admitted_at(history: Sequence[PathwayEvent], ev: PathwayEvent) -> str | None:
    """When the stay began (its admission, if in the history): a discharge-ready notice repeats it."""
    admitted = [e.occurred_at for e in history if e.kind is EventKind.ADMISSION_STARTED and e.stay_id == ev.stay_id]
    return min(admitted).isoformat() if admitted else None


def _event_party(her_id: str, name: str, gps: GpDirectory | None, ev: PathwayEvent) -> Recipient:
    """A party named by HER-id in the event; its office (two-level address) from the GP register when known."""
    known = gps.gp_for(ev.patient.national_id) if gps is not None and name == "Fastlege" else None
    if known is not None and known.her_id == her_id:
        return known
    return Recipient(her_id=her_id, name=name)
