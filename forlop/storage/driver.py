"""Statements run on the driver's cursor, under SQLAlchemy: for the hot read paths (FHIR search) whose
per-execute cost in SQLAlchemy (cache key, execution context, result and row wrappers) is as large
as the query itself.

This reaches into SQLAlchemy's compiled statement (`positiontup`, `literal_execute_params`,
`post_compile_params`, `_bind_processors`) and the pool's DBAPI connection: it is tested against
the SQLAlchemy version pinned in pyproject.toml (tests/platform/test_storage_driver.py), and a new
SQLAlchemy release must pass that test before the pin moves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from psycopg.pq import TransactionStatus
from sqlalchemy import Connection, Dialect
from sqlalchemy.exc import DBAPIError


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A search statement compiled once for one dialect, to run on the driver's cursor."""

    sql: str
    order: tuple[str, ...] | None  # a positional paramstyle's parameter names in order; None: by name
    fixed: dict[str, Any]  # the values the statement binds itself (resource type, parameter names)
    processors: tuple[Callable[[Any], Any] | None, ...]  # per column: what SQLAlchemy applies to a value


@lru_cache(maxsize=512)
def _prepared(statement: Any, dialect: Dialect) -> _Prepared | None:
    """None where the compiled form needs SQLAlchemy at execution (expanding or literal parameters,
    bind processors, an unusual paramstyle): those run through `Connection.execute`."""
    compiled = statement.compile(dialect=dialect)
    if dialect.paramstyle in ("qmark", "format"):
        order = tuple(compiled.positiontup or ())
    elif dialect.paramstyle in ("pyformat", "named"):
        order = None
    else:
        return None
    if compiled.literal_execute_params or compiled.post_compile_params or getattr(compiled, "_bind_processors", None):
        return None
    processors = tuple(c.type.dialect_impl(dialect).result_processor(dialect, None)
                       for c in statement.selected_columns)
    return _Prepared(compiled.string, order, dict(compiled.params), processors)


def fetch_all(conn: Connection, statement: Any, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    """All rows of a search statement, their values what `conn.execute(statement, params)` gives.

    Executed on the driver's cursor of the same connection (its transaction, if any): SQLAlchemy's
    execute (the statement's cache key, an execution context, the result and row wrappers) cost
    more than SQLite's query and as much as PostgreSQL's round trip, on every search. A driver
    error is raised as SQLAlchemy's (`DBAPIError`), and a lost connection is invalidated, as there.
    """
    prepared = _prepared(statement, conn.dialect)
    if prepared is None:
        return [tuple(row) for row in conn.execute(statement, params)]
    values = {**prepared.fixed, **params}
    args = values if prepared.order is None else tuple(values[name] for name in prepared.order)
    dbapi_conn = conn.connection.dbapi_connection
    assert dbapi_conn is not None
    alone = _outside_transaction(conn, dbapi_conn)
    if alone:
        dbapi_conn.autocommit = True
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute(prepared.sql, args)
        rows = cursor.fetchall()
    except conn.dialect.loaded_dbapi.Error as exc:
        lost = conn.dialect.is_disconnect(exc, dbapi_conn, cursor)
        if lost:
            conn.invalidate(exc)
        raise DBAPIError.instance(prepared.sql, args, exc, conn.dialect.loaded_dbapi.Error,
                                  connection_invalidated=lost, dialect=conn.dialect) from exc
    finally:
        cursor.close()
        if alone and not dbapi_conn.closed:
            dbapi_conn.autocommit = False
    if not rows or not any(prepared.processors):
        return rows
    # Column by column (as SQLAlchemy, each processor is given every value, None included)
    columns = [col if process is None else list(map(process, col))
               for process, col in zip(prepared.processors, zip(*rows, strict=True), strict=True)]
    return list(zip(*columns, strict=True))


def _outside_transaction(conn: Connection, dbapi_conn: Any) -> bool:
    """PostgreSQL (psycopg), no transaction open: the statement may run on its own (autocommit).

    Else psycopg sends BEGIN before it and the pool ROLLBACK after it, two more round trips per
    search for what a single statement sees anyway under READ COMMITTED (the data committed when
    it starts). Inside a transaction (`Store.transaction`, or a statement run before on `conn`)
    it runs in that transaction, as before.
    """
    if conn.dialect.driver != "psycopg" or conn.in_transaction() or dbapi_conn.autocommit:
        return False
    return dbapi_conn.info.transaction_status == TransactionStatus.IDLE


