"""The ingest service's tables in SQL (SQLite and PostgreSQL alike): the inbound log and, through the
platform's `forlop.dead_letters`, the dead letters. `SqlIngestUnitOfWork` joins them and the outbox
in the caller's transaction."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from forlop import dead_letters
from forlop.dead_letters import DeadLetter
from forlop.storage import schema
from forlop.storage.bulk import among, insert_many
from forlop.storage.outbox import SqlOutbox


class SqlInboundLog:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def fingerprints(self, event_ids: Sequence[str]) -> dict[str, str | None]:
        if not event_ids:
            return {}
        e = schema.inbound_events
        rows = self.conn.execute(select(e.c.event_id, e.c.fingerprint).where(
            among(e.c.event_id, list(event_ids), self.conn.dialect.name))).all()
        return {row.event_id: row.fingerprint for row in rows}

    def raw_records(self, event_ids: Sequence[str]) -> dict[str, str]:
        e = schema.inbound_events
        rows = self.conn.execute(select(e.c.event_id, e.c.raw).where(
            among(e.c.event_id, list(event_ids), self.conn.dialect.name)))
        return {row.event_id: row.raw for row in rows}

    def add(self, rows: Sequence[Mapping[str, Any]]) -> None:
        insert_many(self.conn, schema.inbound_events, rows)


class SqlDeadLetters:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def add(self, letter: DeadLetter, now: datetime, topic: str) -> int:
        return dead_letters.write(self.conn, letter, now, topic)


class SqlIngestUnitOfWork:
    """`ports.UnitOfWork` in the caller's transaction (a consumer's batch, a request, a replay batch)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.inbound = SqlInboundLog(conn)
        self.dead_letters = SqlDeadLetters(conn)
        self.outbox = SqlOutbox(conn)
