"""Schema migrations: an ordered list, each applied once and recorded in schema_migrations.

A new version appends a step; steps never change once released. Works the same on
SQLite and PostgreSQL because each step is expressed with SQLAlchemy.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import Connection, insert, inspect, select, text

from forlop.storage import schema

Step = Callable[[Connection], None]


def _initial(conn: Connection) -> None:
    tables = [t for t in schema.metadata.sorted_tables if t.name != "schema_migrations"]
    schema.metadata.create_all(conn, tables=tables)


def _refresh_queue(conn: Connection) -> None:
    schema.pathway_refresh_queue.create(conn, checkfirst=True)  # a new database has it from step 1


def _search_index_by_resource(conn: Connection) -> None:
    conn.execute(text("DROP INDEX IF EXISTS ix_fhir_search_resource"))  # its prefix (resource_type, id)
    next(i for i in schema.fhir_search_index.indexes if i.name == "ix_fhir_search_by_resource").create(
        conn, checkfirst=True
    )


def _search_index_match(conn: Connection) -> None:
    conn.execute(text("DROP INDEX IF EXISTS ix_fhir_search"))  # its prefix (resource_type, param, value)
    conn.execute(text("DROP INDEX IF EXISTS ix_pathways_unit_her_id"))  # the prefix (unit_her_id)
    for table, name in ((schema.fhir_search_index, "ix_fhir_search_match"), (schema.pathways, "ix_pathways_unit_status")):
        next(i for i in table.indexes if i.name == name).create(conn, checkfirst=True)


MIGRATIONS: list[tuple[int, str, Step]] = [
    (1, "initial schema: inbound, dead letters, outbox, pathways, FHIR, alerts, messages", _initial),
    (2, "pathway refresh queue (replay derives each pathway once)", _refresh_queue),
    (3, "search index keyed by the whole row of a resource", _search_index_by_resource),
    (4, "FHIR search reads matching ids in order from (resource_type, param, value, id); worklist index",
     _search_index_match),
]


def applied_versions(conn: Connection) -> set[int]:
    if not inspect(conn).has_table("schema_migrations"):
        return set()
    return set(conn.execute(select(schema.schema_migrations.c.version)).scalars())


def migrate(conn: Connection) -> list[int]:
    """Apply pending migrations in order; return the versions applied now."""
    schema.schema_migrations.create(conn, checkfirst=True)
    done = applied_versions(conn)
    applied = []
    for version, name, step in MIGRATIONS:
        if version in done:
            continue
        step(conn)
        conn.execute(
            insert(schema.schema_migrations).values(version=version, name=name, applied_at=datetime.now(UTC))
        )
        applied.append(version)
    return applied


def latest_version() -> int:
    return MIGRATIONS[-1][0]
