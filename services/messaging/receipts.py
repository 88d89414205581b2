"""Apply an AppRec to the message it answers; record every receipt, also the unknown and the malicious."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import Connection

from forlop.logging import ctx
from services.messaging import metrics, repository
from services.messaging.adapters.apprec import AppRec, InvalidAppRec, parse_apprec
from services.messaging.deps import MessagingDeps
from services.messaging.domain.model import MessageStatus

log = logging.getLogger(__name__)

SETTLED = (MessageStatus.ACKNOWLEDGED, MessageStatus.REJECTED, MessageStatus.SUPPRESSED)
_RAW_LIMIT = 64 * 1024


def _raw_text(raw: bytes) -> str:
    # PostgreSQL text cannot hold NUL; a hostile receipt must still be recorded, not crash the consumer.
    return raw[:_RAW_LIMIT].decode("utf-8", "replace").replace("\x00", "\ufffd")


def apply_apprec(conn: Connection, raw: bytes, now: datetime, deps: MessagingDeps) -> str:
    """Returns the receipt's outcome: applied | unknown-message | already-settled | invalid."""
    try:
        rec = parse_apprec(raw)
    except InvalidAppRec as exc:
        log.warning("invalid AppRec recorded and ignored", extra=ctx(error=str(exc)[:300]))
        repository.insert_receipt(
            conn, message_id=None, apprec_msg_id=None, status="unparseable", errors=[{"text": str(exc)[:500].replace("\x00", "")}],
            outcome="invalid", raw=_raw_text(raw), received_at=now,
        )
        metrics.apprecs.labels("unparseable", "invalid").inc()
        return "invalid"
    row = repository.get(conn, rec.original_msg_id, lock=True)
    outcome = "applied"
    if row is None:
        outcome = "unknown-message"
    elif row["status"] in SETTLED:
        outcome = "already-settled"
    else:
        _settle(conn, row, rec, now, deps)
    repository.insert_receipt(
        conn, message_id=rec.original_msg_id[:36], apprec_msg_id=(rec.apprec_id or "")[:100] or None,
        status=rec.status, errors=rec.errors, outcome=outcome, raw=_raw_text(raw), received_at=now,
    )
    metrics.apprecs.labels(rec.status, outcome).inc()
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
