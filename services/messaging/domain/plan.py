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


@dataclass(frozen=True, slots=True)
class Cancel:
    """An unsent message whose registration was withdrawn: suppressed, never to be sent."""

    message_id: str


Change = Insert | Transition | Correct | Flag | Cancel

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
    """Changes that bring the stored rows in line with the history. Idempotent: run twice, change once.

    A row that has left (`has_left`) is never moved back to an unsent state: its withdrawal owes a
    correction, a consent found not in force a `Flag`."""
    by_key = {r["dedupe_key"]: r for r in rows}
    owed = list(owed)
    owed_keys = {o.dedupe_key for o in owed}
    changes: list[Change] = []
    for o in owed:
        row = by_key.get(o.dedupe_key)
        status, reason = target_status(o)
        if row is None:
            changes.append(Insert(o, status, reason))
        elif has_left(row):
            changes += _flag(row, o.consent)
        elif _may_move(MessageStatus(row["status"]), row.get("status_reason"), status):
            changes.append(Transition(row["id"], status, reason, o))
    for row in by_key.values():
        if row["trigger"] == Trigger.CORRECTION or row["dedupe_key"] in owed_keys:
            continue
        if row.get("registration_id") in withdrawn:
            changes += _withdraw(row, set(by_key))
    return changes


def revise(change: Transition | Cancel, row: Mapping[str, Any]) -> list[Change]:
    """A planned move decided again on the row as it is now (read under lock): what it still owes.

    Between a plan and its application the relay may have sent the row, or another reconciliation
    moved it. A correction this returns may exist already: applying it checks (`apply._correct`)."""
    if isinstance(change, Cancel):
        return _withdraw(row, set())
    if has_left(row):
        return _flag(row, change.owed.consent) if change.owed is not None else []
    if _may_move(MessageStatus(row["status"]), row.get("status_reason"), change.status):
        return [change]
    return []


def _flag(row: Mapping[str, Any], consent: bool) -> list[Change]:
    flagged = bool((row.get("details") or {}).get(SENT_WITHOUT_CONSENT))
    # flagged but consent in force again, or unflagged without consent
    return [Flag(row["id"], not consent)] if flagged == consent else []


def _withdraw(row: Mapping[str, Any], existing_keys: set[str]) -> list[Change]:
    """What the withdrawal of a row's registration owes: a correction once it has left (unless the
    receiver rejected it: nothing of it is in force there), else its cancellation."""
    current = MessageStatus(row["status"])
    if has_left(row):
        key = correction_key(row)
        return [] if current is MessageStatus.REJECTED or key in existing_keys else [Correct(row, key)]
    if current in (MessageStatus.QUEUED, MessageStatus.HELD) or (
        current is MessageStatus.SUPPRESSED and row.get("status_reason") != WITHDRAWN
    ):
        return [Cancel(row["id"])]
    return []


def correction_key(row: Mapping[str, Any]) -> str:
    reg, _trigger, role, recipient = row["dedupe_key"].split("|", 3)
    return f"{reg}|{Trigger.CORRECTION.value}|{role}|{recipient}"


def has_left(row: Mapping[str, Any]) -> bool:
    """A hand-over to the transport has begun at least once (whatever its status now: queued again
    after a crash, sent, acknowledged, failed ...): it may have reached the recipient."""
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
