"""Dead letters: every rejected record, with its reasons, inspectable and replayable.

`replay` runs the very same raw record through the ingest flow again, so once the
cause is fixed (a code list update, a corrected rule, a vendor fix) it processes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, select, update

from forlop.config import Topics
from forlop.storage import schema
from services.ingest.service import InboundRecord, ingest


@dataclass(frozen=True, slots=True)
class ReplayOutcome:
    id: int
    status: str  # replayed | duplicate | still-rejected
    reasons: list[dict]


def list_dead_letters(conn: Connection, status: str | None = "open", limit: int = 500) -> list[dict]:
    d = schema.dead_letters
    query = select(d).order_by(d.c.id).limit(limit)
    if status:
        query = query.where(d.c.status == status)
    return [dict(row._mapping) for row in conn.execute(query)]


def replay_dead_letter(conn: Connection, dl_id: int, now: datetime, topics: Topics) -> ReplayOutcome:
    d = schema.dead_letters
    row = conn.execute(select(d).where(d.c.id == dl_id)).first()
    if row is None:
        raise KeyError(f"no dead letter with id {dl_id}")
    record = InboundRecord(row.raw, f"dlq:{dl_id}:{row.origin}", row.record_key)
    result = ingest(conn, row.source, [record], now, topics, dead_letter=False)
    if result.rejected:
        reasons = [{"field": p.field, "rule": p.rule, "message": p.message} for p in result.rejected[0][1]]
        conn.execute(update(d).where(d.c.id == dl_id).values(reasons=reasons, status="open"))
        return ReplayOutcome(dl_id, "still-rejected", reasons)
    conn.execute(update(d).where(d.c.id == dl_id).values(status="replayed", replayed_at=now))
    return ReplayOutcome(dl_id, "replayed" if result.accepted else "duplicate", [])
