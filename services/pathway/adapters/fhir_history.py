"""The versions of FHIR resources (`fhir_history`, written by `fhir_repository.upsert_many`): vread, an
instance's history, a type's changes since an instant (the change feed), and deleted resources."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select, tuple_

from forlop.clock import as_utc, stored_instant
from forlop.storage import schema
from forlop.tenants import Reach
from services.pathway.adapters.fhir_repository import StoredResource
from services.pathway.adapters.reach import reached


@dataclass(frozen=True, slots=True)
class Version:
    """One version of a resource: created (POST), changed (PUT) or deleted (DELETE, no resource)."""

    resource_type: str
    id: str
    version_id: int
    last_updated: datetime
    method: str
    resource: dict[str, Any] | None

    @property
    def updated_at(self) -> datetime:
        return as_utc(self.last_updated)

    @property
    def deleted(self) -> bool:
        return self.method == "DELETE"

    def stored(self) -> StoredResource:
        assert self.resource is not None, "a deletion has no resource"
        return StoredResource(self.resource, self.version_id, self.last_updated)


@dataclass(frozen=True, slots=True)
class HistoryPage:
    versions: list[Version]  # newest first
    more: bool  # versions after the page's last (the next link)


def _columns() -> tuple[Any, ...]:
    h = schema.fhir_history
    return h.c.resource_type, h.c.id, h.c.version_id, h.c.last_updated, h.c.method, h.c.resource


def read_version(conn: Connection, resource_type: str, resource_id: str, version_id: int) -> Version | None:
    h = schema.fhir_history
    row = conn.execute(select(*_columns()).where(h.c.resource_type == resource_type, h.c.id == resource_id,
                                                 h.c.version_id == version_id)).first()
    return None if row is None else Version(*row)


def deletion(conn: Connection, resource_type: str, resource_id: str, reach: Reach | None = None) -> Version | None:
    """The deletion of a resource that was deleted and not made again (and, with `reach`, was of a
    pathway the tenant reaches); None otherwise."""
    fd = schema.fhir_deleted
    row = conn.execute(select(fd.c.version_id, fd.c.last_updated)
                       .where(fd.c.resource_type == resource_type, fd.c.id == resource_id,
                              reached(resource_type, fd.c.id, reach))).first()
    return None if row is None else Version(resource_type, resource_id, row.version_id, row.last_updated,
                                            "DELETE", None)


def instance_history(conn: Connection, resource_type: str, resource_id: str, count: int, *,
                     since: datetime | None = None, before: int | None = None) -> HistoryPage:
    """A resource's versions, newest first: those at or after `since`, below version `before` (paging)."""
    h = schema.fhir_history
    query = select(*_columns()).where(h.c.resource_type == resource_type, h.c.id == resource_id)
    if since is not None:
        query = query.where(h.c.last_updated >= stored_instant(since))
    if before is not None:
        query = query.where(h.c.version_id < before)
    rows = conn.execute(query.order_by(h.c.version_id.desc()).limit(count + 1)).all()
    return HistoryPage([Version(*row) for row in rows[:count]], len(rows) > count)


def type_history(conn: Connection, resource_type: str, count: int, *, since: datetime | None = None,
                 after: tuple[datetime, str, int] | None = None, reach: Reach | None = None) -> HistoryPage:
    """A type's versions, newest first (lastUpdated, then id and version, descending): those at or after
    `since`, and after the paging position `after` (the last entry of the page before) in that order.

    One range of the index (resource_type, last_updated, id, version_id), read backwards from the
    position and stopped at count + 1: a page costs the same however long the history is.
    `reach` (a tenant's): only the versions of resources it reaches now, restricted in the query; a
    deleted resource's (its DELETE too) when the tenant reaches the pathway it was of.
    """
    rows = conn.execute(type_history_statement(resource_type, count + 1, since, after, reach)).all()
    return HistoryPage([Version(*row) for row in rows[:count]], len(rows) > count)


def type_history_statement(resource_type: str, limit: int, since: datetime | None,
                           after: tuple[datetime, str, int] | None, reach: Reach | None = None) -> Any:
    h = schema.fhir_history
    query = select(*_columns()).where(h.c.resource_type == resource_type)
    if reach is not None:
        query = query.where(reached(resource_type, h.c.id, reach))
    if since is not None:
        query = query.where(h.c.last_updated >= stored_instant(since))
    if after is not None:
        at, resource_id, version_id = after
        query = query.where(tuple_(h.c.last_updated, h.c.id, h.c.version_id)
                            < tuple_(stored_instant(at), resource_id, version_id))
    return query.order_by(h.c.last_updated.desc(), h.c.id.desc(), h.c.version_id.desc()).limit(limit)
