"""Re-planning messages stored under earlier trigger rules, without waiting for a new event.

When the trigger rules change (issue #25: the PLO logistics messages follow municipal services,
no longer the pathway's consent), rows written before hold what the old rules said: a logistics
message suppressed with "no consent". The next status change of the pathway re-plans it by the
usual reconciliation, but a pathway may never change again. So the messaging service looks, at
start and then now and again, for rows suppressed by a gate the current rules never apply to
their trigger and role, and asks for a re-plan of their pathways: a status-changed record with the
pathway's stored status and history, through the outbox (`services.pathway.handlers.republish`).

The re-plan itself is the consumer's ordinary handling of that record, in order with the pathway's
other records on its partition: no second writer of a pathway's messages, so nothing can go twice
(the reconciliation is idempotent; a record handled twice changes nothing the second time).
Each process asks once per pathway; a row that stays as it is (no longer owed at all) is not
asked about again until the next start.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime

from sqlalchemy import Connection, and_, or_, select

from forlop.logging import ctx
from forlop.storage import Store, schema
from services.messaging.domain.model import NO_CONSENT, MessageStatus
from services.messaging.domain.triggers import Gate, TriggerBook

log = logging.getLogger(__name__)

CAUSE = "message-rules"  # the status-changed record's "cause"
CHUNK = 500  # pathways per transaction

# (conn, pathway keys, now) -> records written: asks for the pathways' status changes again
RequestReplan = Callable[[Connection, Sequence[str], datetime], int]


def stale_pathways(conn: Connection, triggers: TriggerBook) -> list[str]:
    """Pathways with a row suppressed for want of consent where the rules gate its trigger and role otherwise."""
    m = schema.messages
    pairs = sorted(triggers.never_gated_by(Gate.CONSENT))
    if not pairs:
        return []
    q = (select(m.c.pathway_key).distinct()
         .where(m.c.status == MessageStatus.SUPPRESSED.value, m.c.status_reason == NO_CONSENT,
                or_(*(and_(m.c.trigger == t.value, m.c.role == r.value) for t, r in pairs)))
         .order_by(m.c.pathway_key))
    return list(conn.execute(q).scalars())


class Replanner:
    """One pass: find the stale pathways not asked about yet, ask for them in chunks; returns how many."""

    def __init__(self, store: Store, triggers: TriggerBook, request: RequestReplan,
                 clock: Callable[[], datetime]) -> None:
        self.store = store
        self.triggers = triggers
        self.request = request
        self.clock = clock
        self.asked: set[str] = set()

    def run_once(self) -> int:
        with self.store.read() as conn:
            keys = [k for k in stale_pathways(conn, self.triggers) if k not in self.asked]
        asked = 0
        for i in range(0, len(keys), CHUNK):
            chunk = keys[i : i + CHUNK]
            with self.store.transaction() as conn:
                asked += self.request(conn, chunk, self.clock())
            self.asked.update(chunk)
        if keys:
            log.info("asked for a re-plan of messages stored under earlier rules", extra=ctx(pathways=asked))
        return asked
