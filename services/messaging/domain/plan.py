"""`reconcile`: from the messages owed and the rows already stored to the changes to make. Pure.

The stored rows carry what history alone cannot know: whether a message already left.
So withdrawal of a sent registration owes a correction, of an unsent one a cancellation.
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


Change = Insert | Transition | Correct


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
