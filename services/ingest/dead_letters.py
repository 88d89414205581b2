"""Replaying ingest's dead letters: the very same raw record through the ingest flow again.

Once the cause is fixed (a code list update, a corrected rule, a vendor fix) it processes. The
dead letters of every stage, and replay of the others, are in `forlop.dead_letters` and `app.dlq`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from forlop import dead_letters
from forlop.config import Topics
from services.ingest.adapters.repository import SqlIngestUnitOfWork
from services.ingest.handlers import InboundRecord, ingest


@dataclass(frozen=True, slots=True)
class ReplayOutcome:
    id: int
    status: str  # replayed | duplicate | requeued | still-rejected | still-failing
    reasons: list[dict]


def replay_dead_letter(conn: Connection, row: Mapping[str, Any], now: datetime, topics: Topics) -> ReplayOutcome:
    """Run an ingest dead letter's record through the ingest flow again, in the caller's transaction."""
    dl_id = int(row["id"])
    record = InboundRecord(dead_letters.record_bytes(row), f"dlq:{dl_id}:{row['origin']}", row["record_key"])
    result = ingest(SqlIngestUnitOfWork(conn), row["source"], [record], now, topics, dead_letter=False)
    if result.rejected:
        reasons = [{"field": p.field, "rule": p.rule, "message": p.message} for p in result.rejected[0][1]]
        dead_letters.mark_failing(conn, dl_id, "still-rejected", reasons)
        return ReplayOutcome(dl_id, "still-rejected", reasons)
    dead_letters.mark_replayed(conn, dl_id, now)
    return ReplayOutcome(dl_id, "replayed" if result.accepted else "duplicate", [])
