"""The pathway service's tables in SQL (SQLite and PostgreSQL alike): events, pathways, the refresh
queue, alerts and (through `fhir_repository`) the FHIR resources. `SqlUnitOfWork` joins them and the
outbox in the caller's transaction."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection, and_, bindparam, delete, select, update

from forlop.events import PathwayEvent
from forlop.storage import Store, schema
from forlop.storage.bulk import among, insert_many, update_many
from forlop.storage.outbox import SqlOutbox
from services.pathway.adapters.fhir_repository import upsert_many
from services.pathway.adapters.units_store import merge_units
from services.pathway.domain.units import UnitFacts
from services.pathway.ports import PathwayWrites, StoredPathway


def load_history(conn: Connection, pathway_keys: Iterable[str]) -> dict[str, list[PathwayEvent]]:
    """The pathways' stored events (their histories), by pathway key."""
    e = schema.pathway_events
    keys = list(pathway_keys)
    out: dict[str, list[PathwayEvent]] = {k: [] for k in keys}
    for i in range(0, len(keys), 500):
        chunk = keys[i : i + 500]
        for row in conn.execute(select(e.c.pathway_key, e.c.event).where(among(e.c.pathway_key, chunk, conn.dialect.name))):
            out[row.pathway_key].append(PathwayEvent.from_dict(row.event))
    return out


class SqlPathwayRepository:
    """`ports.PathwayRepository` on one connection, in its transaction."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.dialect = conn.dialect.name

    def add_events(self, events: Sequence[PathwayEvent], now: datetime) -> list[PathwayEvent]:
        e = schema.pathway_events
        unique = {ev.event_id: ev for ev in events}
        known = set(
            self.conn.execute(select(e.c.event_id).where(among(e.c.event_id, list(unique), self.dialect))).scalars()
        ) if unique else set()
        new = [ev for eid, ev in unique.items() if eid not in known]
        insert_many(
            self.conn, e,
            [
                {
                    "event_id": ev.event_id,
                    "pathway_key": ev.pathway_key,
                    "kind": ev.kind.value,
                    "occurred_on": ev.occurred_on,
                    "recorded_at": ev.recorded_at,
                    "stored_at": now,
                    "event": ev.to_dict(),
                }
                for ev in new
            ],
        )
        return new

    def histories(self, pathway_keys: Iterable[str]) -> dict[str, list[PathwayEvent]]:
        return load_history(self.conn, pathway_keys)

    def lock_stored(self, pathway_keys: Sequence[str]) -> dict[str, StoredPathway]:
        p = schema.pathways
        current = select(p.c.pathway_key, p.c.status, p.c.history_hash).where(
            among(p.c.pathway_key, list(pathway_keys), self.dialect))
        if self.dialect == "postgresql":
            current = current.with_for_update()  # serialise with the scanner and other replicas per pathway
        return {row.pathway_key: StoredPathway(row.pathway_key, row.status, row.history_hash)
                for row in self.conn.execute(current)}

    def stored(self, pathway_keys: Sequence[str]) -> list[StoredPathway]:
        p = schema.pathways
        rows = self.conn.execute(select(p.c.pathway_key, p.c.national_id, p.c.status)
                                 .where(among(p.c.pathway_key, list(pathway_keys), self.dialect)))
        return [StoredPathway(row.pathway_key, row.status, national_id=row.national_id) for row in rows]

    def save(self, writes: PathwayWrites, now: datetime) -> None:
        p = schema.pathways
        upsert_many(self.conn, writes.resources, now)
        insert_many(self.conn, p, writes.inserts)
        update_many(self.conn, p, "pathway_key", writes.updates)  # their rows are locked (`lock_stored`)

    def merge_units(self, seen: Mapping[str, UnitFacts]) -> dict[str, UnitFacts]:
        return merge_units(self.conn, seen)

    def due_for_check(self, today: date, limit: int) -> list[StoredPathway]:
        p = schema.pathways
        due = (
            select(p.c.pathway_key, p.c.status, p.c.national_id, p.c.unit_her_id)
            .where(and_(p.c.next_check_on.is_not(None), p.c.next_check_on <= today))
            .order_by(p.c.next_check_on)
            .limit(limit)
        )
        if self.dialect == "postgresql":
            # Several scanner replicas share the work: each claims rows the others have not locked.
            due = due.with_for_update(skip_locked=True)
        return [StoredPathway(row.pathway_key, row.status, national_id=row.national_id, unit_her_id=row.unit_her_id)
                for row in self.conn.execute(due)]

    def tasks(self, task_ids: Sequence[str]) -> list[dict[str, Any]]:
        r = schema.fhir_resources
        ids = sorted(task_ids)
        out: list[dict[str, Any]] = []
        for i in range(0, len(ids), 500):
            query = select(r.c.resource).where(r.c.resource_type == "Task", r.c.id.in_(ids[i : i + 500]))
            out += self.conn.execute(query).scalars()
        return out

    def save_tasks(self, tasks: list[dict[str, Any]], now: datetime) -> None:
        """Tasks of stored pathways changed in place: no owner, the pathways' other resources stay."""
        upsert_many(self.conn, [(None, tasks)], now)

    def save_clock(self, updates: Sequence[Mapping[str, Any]]) -> None:
        p = schema.pathways
        self.conn.execute(update(p).where(p.c.pathway_key == bindparam("k_pathway_key")), list(updates))

    def claim_queued(self, limit: int) -> list[str]:
        return self._claim(select(schema.pathway_refresh_queue.c.pathway_key), limit)

    def _claim(self, claim: Any, limit: int) -> list[str]:
        q = schema.pathway_refresh_queue
        claim = claim.order_by(q.c.pathway_key).limit(limit)
        if self.dialect == "postgresql":
            claim = claim.with_for_update(skip_locked=True)  # several workers share the queue
        return list(self.conn.execute(claim).scalars())

    def unqueue(self, pathway_keys: Sequence[str]) -> None:
        q = schema.pathway_refresh_queue
        if pathway_keys:
            self.conn.execute(delete(q).where(q.c.pathway_key.in_(list(pathway_keys))))

    def alerts_emitted(self, alert_keys: Sequence[str]) -> set[str]:
        a = schema.alerts
        seen: set[str] = set()
        for i in range(0, len(alert_keys), 500):
            seen.update(self.conn.execute(select(a.c.alert_key).where(
                among(a.c.alert_key, list(alert_keys[i : i + 500]), self.dialect))).scalars())
        return seen

    def add_alerts(self, rows: Sequence[Mapping[str, Any]]) -> None:
        insert_many(self.conn, schema.alerts, rows)


class SqlUnitOfWork:
    """`ports.UnitOfWork` in the caller's transaction (a consumer's batch, a request, a replay chunk):
    the caller commits it, with whatever else the transaction holds, or rolls it back."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.pathways = SqlPathwayRepository(conn)
        self.outbox = SqlOutbox(conn)

    @classmethod
    @contextmanager
    def begin(cls, store: Store) -> Iterator[SqlUnitOfWork]:
        """A unit of work in a transaction of its own: committed when the block ends, rolled back on error."""
        with store.transaction() as conn:
            yield cls(conn)
