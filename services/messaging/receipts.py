"""Apply an AppRec to the message it answers; record every receipt once, also the unknown and the malicious.

A receipt is stored once however often it is delivered (`receipt_key`: its own Id, or its content
when it has none or cannot be parsed). One that answers a message not sent (held, suppressed,
queued and never handed over) changes nothing: it is kept with the outcome `not-sent`.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime

from sqlalchemy import Connection

from forlop.logging import ctx
from services.messaging import metrics
from services.messaging.adapters import repository
from services.messaging.adapters.apprec import AppRec, InvalidAppRec, parse_apprec
from services.messaging.deps import MessagingDeps
from services.messaging.domain.model import MessageStatus
from services.messaging.domain.plan import has_left

log = logging.getLogger(__name__)

SETTLED = (MessageStatus.ACKNOWLEDGED, MessageStatus.REJECTED, MessageStatus.SUPPRESSED)
_RAW_LIMIT = 64 * 1024


def _raw_text(raw: bytes) -> str:
    # PostgreSQL text cannot hold NUL; a hostile receipt must still be recorded, not crash the consumer.
    return raw[:_RAW_LIMIT].decode("utf-8", "replace").replace("\x00", "\ufffd")


def content_key(raw_text: str) -> str:
    return "sha256:" + hashlib.sha256(raw_text.encode("utf-8", "replace")).hexdigest()


def receipt_key(rec: AppRec | None, raw_text: str) -> str:
    """One row per AppRec: by its own Id, or (none given, or not an AppRec at all) by its content."""
    if rec is not None and rec.apprec_id:
        return "id:" + rec.apprec_id[:100]
    return content_key(raw_text)


def parse(raw: bytes) -> AppRec | InvalidAppRec:
    try:
        return parse_apprec(raw)
    except InvalidAppRec as exc:
        return exc


def apply_apprec(conn: Connection, raw: bytes, now: datetime, deps: MessagingDeps) -> str:
    """Returns the receipt's outcome (see `apply_parsed`)."""
    return apply_parsed(conn, raw, parse(raw), now, deps)


def apply_parsed(conn: Connection, raw: bytes, parsed: AppRec | InvalidAppRec, now: datetime,
                 deps: MessagingDeps) -> str:
    """Returns the outcome: applied | unknown-message | already-settled | not-sent | invalid (stored),
    duplicate (stored already: nothing changes) or conflicting-duplicate (an AppRec Id seen before with
    other content: stored by its content, the message unchanged)."""
    text = _raw_text(raw)
    if isinstance(parsed, InvalidAppRec):
        log.warning("invalid AppRec recorded and ignored", extra=ctx(error=str(parsed)[:300]))
        stored = repository.insert_receipt(
            conn, message_id=None, apprec_msg_id=None, status="unparseable",
            errors=[{"text": str(parsed)[:500].replace("\x00", "")}], outcome="invalid", raw=text, received_at=now,
            dedupe_key=content_key(text),
        )
        return _count("unparseable", "invalid" if stored else "duplicate")
    rec = parsed
    key = receipt_key(rec, text)
    seen = repository.receipt_raw(conn, key)
    if seen is not None:
        if seen == text:
            return _count(rec.status, "duplicate")
        log.warning("AppRec Id seen before with other content: kept, not applied",
                    extra=ctx(message=rec.original_msg_id[:36]))
        stored = _store(conn, rec, text, "conflicting-duplicate", content_key(text), now)
        return _count(rec.status, "conflicting-duplicate" if stored else "duplicate")
    row = repository.get(conn, rec.original_msg_id, lock=True)
    if row is None:
        outcome = "unknown-message"
    elif not has_left(row):
        log.warning("AppRec for a message that was never sent: kept, not applied",
                    extra=ctx(message=row["id"], status=row["status"]))
        outcome = "not-sent"
    elif row["status"] in SETTLED:
        outcome = "already-settled"
    else:
        outcome = "applied"
    if not _store(conn, rec, text, outcome, key, now):
        return _count(rec.status, "duplicate")  # a concurrent delivery of the same AppRec stored it first
    if outcome == "applied":
        _settle(conn, row, rec, now, deps)
    return _count(rec.status, outcome)


def _store(conn: Connection, rec: AppRec, text: str, outcome: str, key: str, now: datetime) -> bool:
    return repository.insert_receipt(
        conn, message_id=rec.original_msg_id[:36], apprec_msg_id=(rec.apprec_id or "")[:100] or None,
        status=rec.status, errors=rec.errors, outcome=outcome, raw=text, received_at=now, dedupe_key=key,
    )


def _count(status: str, outcome: str) -> str:
    metrics.apprecs.labels(status, outcome).inc()
    return outcome


def _settle(conn: Connection, row: dict, rec: AppRec, now: datetime, deps: MessagingDeps) -> None:
    errors = "; ".join(f"{e['code']} {e['text']}".strip() for e in rec.errors)
    if rec.status == "rejected":
        status, reason = MessageStatus.REJECTED, f"rejected by receiver: {errors or 'no error given'}"
        repository.emit_alert(conn, deps.topics.alerts, "message-rejected", row, now, errors=rec.errors)
    elif rec.status == "ok-with-errors":
        status, reason = MessageStatus.ACKNOWLEDGED, f"acknowledged with errors: {errors}"
    else:
        status, reason = MessageStatus.ACKNOWLEDGED, None
    repository.update_message(
        conn, row["id"], status=status.value, status_reason=reason, settled_at=now, next_attempt_at=None
    )
    metrics.transitions.labels(status.value).inc()
