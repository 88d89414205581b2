"""`reconcile`: from the messages owed and the rows already stored to the changes to make. Pure.

The stored rows carry what history alone cannot know: whether a message already left.
So withdrawal of a sent registration owes a correction, of an unsent one a cancellation.

Consent that turns out not to have been in force (a consent withdrawal, or the withdrawal of the
consent registration, dated before the trigger and arriving after the message left) is *not* a
withdrawn registration, and owes no correction:

- the triggering registration (the evaluation, the decision ...) still stands: the correction text
  ("the registration was deleted as a mis-registration, disregard the message") would be false;
- a correction is itself a message about the patient to the municipality, which the history now
  says the patient has not consented to involve: sending one would disclose again, not undo;
- DOMAIN §5 owes corrections for withdrawn registrations only, and consent is judged "at the time
  of the event that triggers the message": what was sent in good faith stays sent.

Instead the sent row is marked (`Flag`): `sentWithoutConsentInForce` in its details, a note in
`forlop messages list` / `show` and the API, and one `message-sent-without-consent` alert so a person
can judge whether it is a deviation (avvik) to follow up. The mark follows the history like
everything else: a back-dated consent that puts consent in force again removes it. An unsent
message still goes back to suppressed (`Transition`), as before.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from services.messaging.domain.model import (
    DELIVERED,
    NO_CONSENT,
    WITHDRAWN,
    MessageStatus,
    OwedMessage,
    Trigger,
)


@dataclass(frozen=True, slots=True)
class Insert:
    owed: OwedMessage
    status: MessageStatus
    reason: str | None


@dataclass(frozen=True, slots=True)
class Transition:
    message_id: str
    status: MessageStatus
    reason: str | None
    owed: OwedMessage | None = None  # the current owed message, to (re)build the XML from


@dataclass(frozen=True, slots=True)
class Correct:
    original: Mapping[str, Any]  # the stored row being corrected
    dedupe_key: str


@dataclass(frozen=True, slots=True)
class Flag:
    """Mark (or unmark) a message that left although the history now says no consent was in force."""

    message_id: str
    sent_without_consent: bool


Change = Insert | Transition | Correct | Flag

SENT_WITHOUT_CONSENT = "sentWithoutConsentInForce"  # the key in the row's details, and the note shown


def target_status(owed: OwedMessage) -> tuple[MessageStatus, str | None]:
    if not owed.consent:
        return MessageStatus.SUPPRESSED, NO_CONSENT
    if owed.recipient is None:
        return MessageStatus.HELD, owed.unresolved_reason or "unresolved recipient"
    return MessageStatus.QUEUED, None


def reconcile(
    owed: Iterable[OwedMessage], rows: Iterable[Mapping[str, Any]], withdrawn: set[str]
) -> list[Change]:
    """Changes that bring the stored rows in line with the history. Idempotent: run twice, change once."""
    by_key = {r["dedupe_key"]: r for r in rows}
    owed = list(owed)
    owed_keys = {o.dedupe_key for o in owed}
    changes: list[Change] = []
    for o in owed:
        row = by_key.get(o.dedupe_key)
        status, reason = target_status(o)
        if row is None:
            changes.append(Insert(o, status, reason))
            continue
        current = MessageStatus(row["status"])
        if _may_move(current, row.get("status_reason"), status):
            changes.append(Transition(row["id"], status, reason, o))
        if _has_left(row):
            flagged = bool((row.get("details") or {}).get(SENT_WITHOUT_CONSENT))
            if flagged == o.consent:  # flagged but consent in force again, or unflagged without consent
                changes.append(Flag(row["id"], not o.consent))
    for row in by_key.values():
        if row["trigger"] == Trigger.CORRECTION or row["dedupe_key"] in owed_keys:
            continue
        if row.get("registration_id") not in withdrawn:
            continue
        current = MessageStatus(row["status"])
        if current in (MessageStatus.QUEUED, MessageStatus.HELD) or (
            current is MessageStatus.SUPPRESSED and row.get("status_reason") != WITHDRAWN
        ):
            changes.append(Transition(row["id"], MessageStatus.SUPPRESSED, WITHDRAWN))
        elif current in DELIVERED:
            key = correction_key(row)
            if key not in by_key:
                changes.append(Correct(row, key))
    return changes


def correction_key(row: Mapping[str, Any]) -> str:
    reg, _trigger, role, recipient = row["dedupe_key"].split("|", 3)
    return f"{reg}|{Trigger.CORRECTION.value}|{role}|{recipient}"


def _has_left(row: Mapping[str, Any]) -> bool:
    """Handed over to the transport at least once (whatever its status now: sent, acknowledged, rejected ...)."""
    return row.get("sent_at") is not None


def _may_move(current: MessageStatus, reason: str | None, target: MessageStatus) -> bool:
    """Only unsent rows follow the history; a queued row never falls back to held."""
    if current == target or reason == WITHDRAWN:
        return False
    if current is MessageStatus.SUPPRESSED:
        return True  # consent arrived (back-dated): release
    if current is MessageStatus.HELD:
        return target in (MessageStatus.QUEUED, MessageStatus.SUPPRESSED)
    if current is MessageStatus.QUEUED:
        return target is MessageStatus.SUPPRESSED  # consent no longer in force for the trigger
    return False
