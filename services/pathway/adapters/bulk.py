"""The bulk adapter: the pathway tables as a replay loads them, in two phases.

A replay stores every batch's events and only queues the pathways they touch
(`pathway_refresh_queue`, in the same transaction); it then derives each queued pathway once,
however many batches touched it, a chunk per transaction. A replay stopped between the phases is
finished by the next one, or by the scanner's `refresh_queued`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from forlop.storage import Store, schema
from forlop.storage.bulk import among
from forlop.storage.outbox import SqlOutbox
from services.pathway.adapters.repository import SqlPathwayRepository


class BulkPathwayRepository(SqlPathwayRepository):
    """`ports.PathwayRepository` with the replay's queue of pathways to derive."""

    def queue(self, pathway_keys: Sequence[str], now: datetime) -> None:
        """Queue pathways for one derivation; one already queued (by this or a concurrent replay) stays."""
        if not pathway_keys:
            return
        q = schema.pathway_refresh_queue
        dialect_insert = pg_insert if self.dialect == "postgresql" else sqlite_insert
        self.conn.execute(dialect_insert(q).on_conflict_do_nothing(index_elements=["pathway_key"]),
                          [{"pathway_key": k, "queued_at": now} for k in pathway_keys])

    def claim_queued_among(self, pathway_keys: Sequence[str], limit: int) -> list[str]:
        """Those of these pathways still queued (a chunk read ahead of its transaction), claimed."""
        q = schema.pathway_refresh_queue
        return self._claim(select(q.c.pathway_key).where(among(q.c.pathway_key, list(pathway_keys), self.dialect)),
                           limit)


class BulkUnitOfWork:
    """A replay's unit of work in the caller's transaction: the bulk repository and the outbox."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.pathways = BulkPathwayRepository(conn)
        self.outbox = SqlOutbox(conn)


def queued_count(store: Store) -> int:
    with store.read() as conn:
        return conn.execute(select(func.count()).select_from(schema.pathway_refresh_queue)).scalar_one()


def queued_after(store: Store, after: str | None, limit: int) -> list[str]:
    """The next `limit` queued pathways in key order after `after`, read without claiming them."""
    q = schema.pathway_refresh_queue
    claim = select(q.c.pathway_key).order_by(q.c.pathway_key).limit(limit)
    with store.read() as conn:
        return list(conn.execute(claim if after is None else claim.where(q.c.pathway_key > after)).scalars())
