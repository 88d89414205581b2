"""Apply a reconciliation to the stored rows: insert, move, correct, and (re)build the XML of queued messages.

The XML is built when a message becomes queued and stored with it: a resend is byte-identical
(same MsgId, same GenDate), as a retransmission must be.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from forlop.events import PathwayEvent
from forlop.logging import ctx
from services.messaging import metrics
from services.messaging.adapters import repository
from services.messaging.adapters.schemas import InvalidMessage
from services.messaging.deps import MessagingDeps
from services.messaging.domain.model import WITHDRAWN, MessageStatus, Recipient, Role, Trigger
from services.messaging.domain.owed import registration_key
from services.messaging.domain.plan import (
    SENT_WITHOUT_CONSENT,
    Cancel,
    Change,
    Correct,
    Flag,
    Insert,
    Transition,
    revise,
)
from services.messaging.render import CannotBuild, build_xml, correction_type, details_of, message_type

log = logging.getLogger(__name__)

# How a new row about to be queued gets its XML: (status, reason, xml), as `build_for` gives them.
# Built in the transaction (`build_for`), or taken from what a replay's worker built ahead
# (`prebuild.prebuilt_builder`, which may give the row the prebuilt message's id).
BuildNew = Callable[[dict[str, Any], MessagingDeps, datetime], tuple[str, str | None, str | None]]


def build_for(row: dict[str, Any], deps: MessagingDeps, now: datetime) -> tuple[str, str | None, str | None]:
    """(status, reason, xml) for a row about to be queued: queued with XML, held, or failed."""
    corrects = None
    if row["trigger"] == Trigger.CORRECTION:
        corrects = {"id": row["corrects"], "trigger": row["details"].get("original_trigger", "decision")}
    try:
        xml = build_xml(
            msg_id=row["id"], trigger=Trigger(row["trigger"]), role=Role(row["role"]), details=row["details"],
            sender=deps.sender, gen_date=now, schemas=deps.schemas, conversation_ref=row.get("conversation_ref"),
            corrects=corrects,
        )
    except CannotBuild as exc:
        return MessageStatus.HELD, str(exc), None
    except InvalidMessage as exc:
        log.error("built message does not validate", extra=ctx(message=row["id"], error=str(exc)[:500]))
        return MessageStatus.FAILED, str(exc)[:2000], None
    return MessageStatus.QUEUED, None, xml


def _finish(conn: Connection, row: dict[str, Any], status: str, reason: str | None, now: datetime,
            deps: MessagingDeps) -> None:
    if status == MessageStatus.FAILED:
        repository.emit_alert(conn, deps.topics.alerts, "message-failed", row, now, reason=reason)
    metrics.transitions.labels(status).inc()


def apply_changes(
    conn: Connection, changes: list[Change], pathway_key: str, pathway_id: str, now: datetime, deps: MessagingDeps,
    inserts: list[dict[str, Any]], build_new: BuildNew = build_for,
) -> None:
    """Apply the changes; new rows go to `inserts`, which the caller writes in one go.

    A move of a stored row is decided again on the row as it is now, under its lock (`plan.revise`):
    the plan may have been made from an older read (the relay may have sent the row since), and a
    message that has left is corrected or flagged, never rewritten as unsent.

    `build_new`: how a new queued row gets its XML."""
    for change in changes:
        if isinstance(change, Insert):
            _insert(conn, change, pathway_key, pathway_id, now, deps, inserts, build_new)
        elif isinstance(change, Transition | Cancel):
            row = repository.get(conn, change.message_id, lock=True)
            if row is not None:
                for revised in revise(change, row):
                    _apply_revised(conn, revised, row, now, deps, inserts)
        elif isinstance(change, Correct):
            _correct(conn, change, now, deps, inserts)
        elif isinstance(change, Flag):
            _flag(conn, change, now, deps)


def _apply_revised(conn: Connection, change: Change, row: dict[str, Any], now: datetime, deps: MessagingDeps,
                   inserts: list[dict[str, Any]]) -> None:
    if isinstance(change, Transition):
        _transition(conn, change, row, now, deps)
    elif isinstance(change, Cancel):
        _transition(conn, Transition(change.message_id, MessageStatus.SUPPRESSED, WITHDRAWN), row, now, deps)
    elif isinstance(change, Correct):
        _correct(conn, change, now, deps, inserts)
    elif isinstance(change, Flag):
        _flag(conn, change, now, deps)


def _insert(conn: Connection, c: Insert, pathway_key: str, pathway_id: str, now: datetime, deps: MessagingDeps,
            inserts: list[dict[str, Any]], build_new: BuildNew) -> None:
    o = c.owed
    row: dict[str, Any] = {
        "id": deps.id_factory(), "dedupe_key": o.dedupe_key, "pathway_key": pathway_key, "pathway_id": pathway_id,
        "registration_id": o.registration_id, "trigger": o.trigger.value, "role": o.role.value,
        "recipient_her_id": o.recipient.her_id if o.recipient else None, "message_type": message_type(o.trigger),
        "status": c.status.value, "status_reason": c.reason, "attempts": 0, "details": details_of(o),
        "created_at": now, "xml": None, "conversation_ref": None, "corrects": None,
    }
    if c.status is MessageStatus.QUEUED:
        row["status"], row["status_reason"], row["xml"] = build_new(row, deps, now)
    inserts.append(row)
    _finish(conn, row, row["status"], row["status_reason"], now, deps)


def _transition(conn: Connection, c: Transition, row: dict[str, Any], now: datetime, deps: MessagingDeps) -> None:
    """Move an unsent row (`row`: as read under its lock)."""
    values: dict[str, Any] = {"status": c.status.value, "status_reason": c.reason}
    if c.owed is not None:
        values["details"] = details_of(c.owed)
        values["recipient_her_id"] = c.owed.recipient.her_id if c.owed.recipient else None
    if c.status is MessageStatus.QUEUED:
        row.update(values)
        values["status"], values["status_reason"], values["xml"] = build_for(row, deps, now)
        values["next_attempt_at"] = None
    repository.update_message(conn, c.message_id, **values)
    _finish(conn, {**row, **values}, values["status"], values["status_reason"], now, deps)


def _correct(conn: Connection, c: Correct, now: datetime, deps: MessagingDeps,
             inserts: list[dict[str, Any]]) -> None:
    """A correction of a message that has left, once (a plan made from an older read may owe one
    that another reconciliation made meanwhile)."""
    if any(i["dedupe_key"] == c.dedupe_key for i in inserts) or repository.has_dedupe_key(conn, c.dedupe_key):
        return
    o = c.original
    row: dict[str, Any] = {
        "id": deps.id_factory(), "dedupe_key": c.dedupe_key, "pathway_key": o["pathway_key"],
        "pathway_id": o["pathway_id"], "registration_id": o["registration_id"], "trigger": Trigger.CORRECTION.value,
        "role": o["role"], "recipient_her_id": o["recipient_her_id"], "message_type": correction_type(o["trigger"]),
        "status": MessageStatus.QUEUED.value, "status_reason": None, "attempts": 0,
        "details": {**(o["details"] or {}), "original_trigger": o["trigger"]}, "created_at": now,
        "conversation_ref": o["id"], "corrects": o["id"],
    }
    row["status"], row["status_reason"], row["xml"] = build_for(row, deps, now)
    inserts.append(row)
    _finish(conn, row, row["status"], row["status_reason"], now, deps)


def _flag(conn: Connection, c: Flag, now: datetime, deps: MessagingDeps) -> None:
    """Keep the sent message; record in its details that no consent was in force (see `plan`), alert once."""
    row = repository.get(conn, c.message_id, lock=True)
    if row is None:
        return
    details = dict(row["details"] or {})
    if c.sent_without_consent:
        details[SENT_WITHOUT_CONSENT] = True
        details["sentWithoutConsentNotedAt"] = now.isoformat()
    else:
        details.pop(SENT_WITHOUT_CONSENT, None)
        details.pop("sentWithoutConsentNotedAt", None)
    repository.update_message(conn, c.message_id, details=details)
    if c.sent_without_consent:
        log.warning("message left without consent in force", extra=ctx(message=row["id"], pathway=row["pathway_key"]))
        repository.emit_alert(
            conn, deps.topics.alerts, "message-sent-without-consent", row, now,
            reason="consent to involve the municipality was not in force at the trigger (registered after sending)",
        )
        metrics.consent_flags.inc()


def resolve(row: dict[str, Any], deps: MessagingDeps) -> Recipient | None:
    """Look the recipient of a held message up again (the register may have been fixed)."""
    details = row["details"] or {}
    ev = PathwayEvent.from_dict(details["event"])
    role = Role(row["role"])
    if role is Role.MUNICIPALITY:
        entry = deps.municipal.municipality(ev.patient.municipality)
        return entry.recipient if entry else None
    if role is Role.GP:
        gp_her = ev.gp.her_id if ev.gp else None
        found = deps.gps.gp_for(ev.patient.national_id)
        if gp_her and (found is None or found.her_id != gp_her):
            return Recipient(her_id=gp_her, name="Fastlege")
        return found
    if details.get("recipient"):
        return Recipient(**details["recipient"])
    return Recipient(her_id=ev.referrer.her_id, name="Henviser") if ev.referrer and ev.referrer.her_id else None


def release_held(conn: Connection, now: datetime, deps: MessagingDeps, ids: list[str] | None = None) -> int:
    """Held messages whose recipient (or schema) is now available become queued; returns how many.

    The rows are locked at once, in id order (`repository.lock_messages`), as every path locks
    messages: two release passes (the relay's, a handler's) never wait for each other in a circle.
    Without `ids` (the relay's pass over all held messages) rows another transaction holds are
    skipped: they are that transaction's to release, or the next pass's."""
    if ids is None:
        rows = repository.lock_messages(conn, repository.held_ids(conn, 200), skip_locked=True)
    else:
        rows = repository.lock_messages(conn, ids)
    released = 0
    for row in rows:
        msg_id = row["id"]
        if row["status"] != MessageStatus.HELD:
            continue
        recipient = resolve(row, deps)
        if recipient is None:
            continue
        row["details"] = {**(row["details"] or {}), "recipient": asdict(recipient)}
        status, reason, xml = build_for(row, deps, now)
        if status == MessageStatus.HELD:
            continue
        repository.update_message(
            conn, msg_id, status=status, status_reason=reason, xml=xml, details=row["details"],
            recipient_her_id=recipient.her_id, next_attempt_at=None,
        )
        _finish(conn, row, status, reason, now, deps)
        released += status == MessageStatus.QUEUED
    return released


__all__ = ["BuildNew", "apply_changes", "build_for", "registration_key", "release_held", "resolve"]
