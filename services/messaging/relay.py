"""The message relay: releases held messages, sends due ones, resends unanswered ones, gives up after N.

One message per transaction: claim (SKIP LOCKED on PostgreSQL), send, record. A crash between
send and record leaves the row due; the resend carries the same MsgId and the receiver dedupes it.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from forlop.logging import ctx
from forlop.storage import Store
from services.messaging import metrics
from services.messaging.adapters import repository
from services.messaging.adapters.transport import Transport, TransportError
from services.messaging.apply import release_held
from services.messaging.deps import MessagingDeps
from services.messaging.domain.model import MessageStatus
from services.messaging.receipts import apply_apprec

log = logging.getLogger(__name__)

class Relay:
    def __init__(self, store: Store, transport: Transport, deps: MessagingDeps, batch: int = 200) -> None:
        self.store = store
        self.transport = transport
        self.deps = deps
        self.batch = batch

    def run_once(self) -> int:
        """One pass; returns how many messages were released, sent or given up."""
        now = self.deps.clock()
        with self.store.transaction() as conn:
            done = release_held(conn, now, self.deps)
        with self.store.read() as conn:
            ids = repository.due_ids(conn, now, self.batch)
        for msg_id in ids:
            done += self._one(msg_id, now)
        return done

    def _one(self, msg_id: str, now: datetime) -> int:
        """Send one due message: note the hand-over first (its own commit), then send and record it.

        From the note on (`sent_at`) the message counts as possibly delivered: a withdrawal then owes
        a correction, never a cancellation, whether or not this process lives to record the send.
        The send itself holds the row's lock (another relay skips the row); a crash before its
        record leaves the row due: it is sent again, with the same MsgId."""
        with self.store.transaction() as conn:
            row = repository.claim(conn, msg_id, now)
            if row is None:
                return 0  # another relay has it, or it was settled meanwhile
            if row["attempts"] >= self.deps.max_attempts:
                reason = f"no AppRec after {row['attempts']} attempts"
                repository.update_message(conn, msg_id, status=MessageStatus.FAILED.value, status_reason=reason,
                                          settled_at=now, next_attempt_at=None)
                repository.emit_alert(conn, self.deps.topics.alerts, "message-failed", row, now, reason=reason)
                metrics.transitions.labels(MessageStatus.FAILED.value).inc()
                return 1
            if not row["xml"]:
                return 0
            attempts = row["attempts"] + 1
            repository.update_message(conn, msg_id, attempts=attempts, sent_at=row["sent_at"] or now)
        with self.store.transaction() as conn:
            row = repository.claim(conn, msg_id, now)
            if row is None or row["attempts"] != attempts:
                return 0  # settled meanwhile (an AppRec), or another relay took it over
            try:
                apprec = self.transport.send(msg_id, row["xml"].encode("utf-8"))
            except TransportError as exc:
                log.warning("send failed; will retry", extra=ctx(message=msg_id, error=str(exc)[:300]))
                metrics.sends.labels(self.deps.transport_name, "error").inc()
                repository.update_message(conn, msg_id, status_reason=str(exc)[:500],
                                          next_attempt_at=now + self._backoff(attempts, retry_s=60))
                return 0
            metrics.sends.labels(self.deps.transport_name, "sent").inc()
            repository.update_message(
                conn, msg_id, status=MessageStatus.SENT.value, status_reason=None, sent_at=now,
                next_attempt_at=now + self._backoff(attempts),
            )
            if row["status"] != MessageStatus.SENT.value:
                metrics.transitions.labels(MessageStatus.SENT.value).inc()
            if apprec:
                apply_apprec(conn, apprec, now, self.deps)
        return 1

    def _backoff(self, attempts: int, retry_s: int | None = None) -> timedelta:
        """Wait for the AppRec, doubling each time: timeout, 2x, 4x ... (transport errors: from a minute)."""
        base = retry_s or self.deps.apprec_timeout_s
        return timedelta(seconds=min(base * 2 ** (attempts - 1), 7 * 24 * 3600))

    def poll_receipts(self) -> int:
        """Read the next AppRec files from the directory transport's inbox (a bounded batch, one file
        in memory at a time), apply each, move it to processed/."""
        receipts = getattr(self.transport, "receipts", None)
        if receipts is None:
            return 0
        n = 0
        for path, raw in receipts():
            with self.store.transaction() as conn:
                apply_apprec(conn, raw, self.deps.clock(), self.deps)
            self.transport.done(path)  # type: ignore[attr-defined]
            n += 1
        return n


def describe(row: dict[str, Any]) -> str:
    return f"{row['id']} {row['role']}:{row['trigger']} {row['status']}"
