"""A batch of rows in one statement: arrays on PostgreSQL, executemany on SQLite.

An executemany, even through psycopg's pipeline, is one statement per row that PostgreSQL parses
(or binds), plans and executes, and that psycopg converts and sends one by one: under Kafka ingest
320,000 search-index rows a run went out so, and the pathway process waited on PostgreSQL a third
of its time. On PostgreSQL a batch
goes out as one array per column (`unnest`), key lists as one array (`= ANY`). SQLite runs in
the process: its executemany has no round trips to save.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    ColumnElement,
    Connection,
    Table,
    and_,
    any_,
    bindparam,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from forlop.storage import json_text


def unnest_arrays(conn: Connection, columns: Iterable[Column]) -> str:
    """`unnest(%b::T1[], %b::T2[], ..)`: the rows of a batch as one array parameter per column.

    `%b`: psycopg sends the arrays in the binary format. In the text format it quotes and escapes
    every element with regular expressions, which for JSON (quotes everywhere) cost 18 times the
    binary dump and more than the executemany it replaced.
    """
    return "unnest(" + ", ".join(f"%b::{c.type.compile(dialect=conn.dialect)}[]" for c in columns) + ")"


def _arrays(columns: Sequence[Column], rows: Sequence[Sequence[Any]]) -> tuple[list[Any], ...]:
    """One list per column; JSON values as their text (what the engine's serializer writes)."""
    out = tuple(list(values) for values in zip(*rows, strict=True))  # callers return early on no rows
    for i, column in enumerate(columns):
        if isinstance(column.type, JSON):
            out[i][:] = [json_text(v) for v in out[i]]
    return out


def insert_rows(conn: Connection, table: Table, rows: Sequence[tuple[Any, ...]], *,
                skip_existing: bool = False) -> None:
    """INSERT rows of plain values (in the table's column order); SQLite through the driver's
    executemany (SQLAlchemy's per-row parameter processing cost more than the insert itself for
    the search index, ~56 rows per pathway). `skip_existing`: a row whose key is there already is
    left as it is (ON CONFLICT DO NOTHING) instead of failing the transaction."""
    if not rows:
        return
    columns = list(table.columns)
    head = f"INSERT INTO {table.name} ({', '.join(c.name for c in columns)}) "
    tail = " ON CONFLICT DO NOTHING" if skip_existing else ""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(head + f"SELECT * FROM {unnest_arrays(conn, columns)}" + tail, _arrays(columns, rows))
        return
    conn.exec_driver_sql(head + f"VALUES ({', '.join(['?'] * len(columns))})" + tail, list(rows))


def delete_rows(conn: Connection, table: Table, key: Sequence[Column], rows: Sequence[tuple[Any, ...]]) -> None:
    """DELETE the rows whose `key` columns equal each tuple of `rows` (in the key's column order)."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        names = [c.name for c in key]
        conn.exec_driver_sql(
            f"DELETE FROM {table.name} USING {unnest_arrays(conn, key)} AS gone({', '.join(names)}) WHERE "
            + " AND ".join(f"{table.name}.{n} = gone.{n}" for n in names),
            _arrays(key, rows))
        return
    conn.exec_driver_sql(f"DELETE FROM {table.name} WHERE " + " AND ".join(f"{c.name} = ?" for c in key), list(rows))


def _defaults(table: Table, given: Iterable[str]) -> dict[str, Any]:
    """The Python-side defaults (`default=`) of the columns the rows leave out: SQLAlchemy fills them in
    on an executemany, and an array statement has to do the same."""
    out: dict[str, Any] = {}
    for column in table.columns:
        default = column.default
        if column.name in given or default is None or not (default.is_scalar or default.is_callable):
            continue
        out[column.name] = default.arg if default.is_scalar else default.arg(None)  # type: ignore[attr-defined]
    return out


def insert_many(conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]], *,
                skip_existing: bool = False, returning: Sequence[str] = ()) -> list[Any]:
    """INSERT dict rows (all with the same keys), in their order: on PostgreSQL a serial id is drawn
    in the rows' order (the outbox relays by id, and a patient's records must keep theirs).
    `skip_existing`: ON CONFLICT DO NOTHING; `returning`: the columns of the rows really inserted."""
    if not rows:
        return []
    tail = " ON CONFLICT DO NOTHING" if skip_existing else ""
    if conn.dialect.name != "postgresql" and returning:
        stmt = sqlite_insert(table).on_conflict_do_nothing() if skip_existing else insert(table)
        return conn.execute(stmt.returning(*(table.c[n] for n in returning)), list(rows)).all()
    defaults = _defaults(table, rows[0])
    names = [*rows[0], *defaults]
    columns = [table.c[name] for name in names]
    listed = ", ".join(names)
    if conn.dialect.name != "postgresql":
        # The driver's executemany, each value through its column type's own bind processor (JSON
        # text, SQLite's datetime text), as SQLAlchemy's executemany would, without its per-row
        # parameter machinery (~10 % of a replay's writing process).
        dialect = conn.dialect
        convert = [c.type.dialect_impl(dialect).bind_processor(dialect) for c in columns]
        given, extra = list(rows[0]), tuple(defaults.values())
        values = [tuple(f(v) if f else v for f, v in zip(convert, (*(row[n] for n in given), *extra), strict=True))
                  for row in rows]
        conn.exec_driver_sql(f"INSERT INTO {table.name} ({listed}) VALUES ({', '.join(['?'] * len(names))})" + tail,
                             values)
        return []
    values = [tuple(row[name] for name in rows[0]) + tuple(defaults.values()) for row in rows]
    result = conn.exec_driver_sql(
        f"INSERT INTO {table.name} ({listed}) SELECT {listed} FROM {unnest_arrays(conn, columns)} "
        f"WITH ORDINALITY AS batch({listed}, batch_row) ORDER BY batch_row" + tail
        + (f" RETURNING {', '.join(returning)}" if returning else ""),
        _arrays(columns, values),
    )
    return result.all() if returning else []


def update_many(conn: Connection, table: Table, key: str | Sequence[str], rows: Sequence[Mapping[str, Any]], *,
                row_by_row: bool = False) -> None:
    """UPDATE the rows whose `key` column(s) equal each row's "k_<key>" values to the row's other values.

    On PostgreSQL one UPDATE ... FROM the arrays: only where the transaction holds the rows' locks
    already, or no other writer takes them without holding the same lock first (a pathway's own
    rows, whose pathway row it reads FOR UPDATE first), since the join picks the order it locks in.
    `row_by_row`: an executemany in the rows' order instead, for rows two transactions may both
    lock (they must lock them in the same order).
    """
    if not rows:
        return
    keys = [key] if isinstance(key, str) else list(key)
    markers = [f"k_{k}" for k in keys]
    if conn.dialect.name != "postgresql" or row_by_row:
        conn.execute(update(table).where(*(table.c[k] == bindparam(m) for k, m in zip(keys, markers, strict=True))),
                     list(rows))
        return
    last = {tuple(row[m] for m in markers): row for row in rows}  # a key twice: the last row wins, as in an executemany
    names = [name for name in rows[0] if name not in markers]
    columns = [*(table.c[k] for k in keys), *(table.c[name] for name in names)]
    values = [(*k, *(row[name] for name in names)) for k, row in last.items()]
    conn.exec_driver_sql(
        f"UPDATE {table.name} SET {', '.join(f'{n} = batch.{n}' for n in names)} "
        f"FROM {unnest_arrays(conn, columns)} AS batch({', '.join([*markers, *names])}) "
        f"WHERE " + " AND ".join(f"{table.name}.{k} = batch.{m}" for k, m in zip(keys, markers, strict=True)),
        _arrays(columns, values),
    )


def rows_by_key(conn: Connection, table: Table, key: Sequence[Column], keys: Sequence[tuple[Any, ...]],
                *columns: Column) -> Any:
    """SELECT the key columns and `columns` of the rows whose composite `key` is one of `keys`.

    PostgreSQL gets the keys as one array per key column joined to the table, one primary-key probe
    each: given `a IN (..) AND b IN (..)` it probed by `a` alone and filtered `b`, reading every row
    of those `a` values (half of PostgreSQL's statement time under Kafka ingest, growing with the
    table: docs/performance.md). SQLite probes the key for each
    value pair of the IN lists, and the rows are filtered to the pairs asked for.
    """
    selected = select(*key, *columns)
    if conn.dialect.name != "postgresql":
        # the IN lists match every combination of their values: keep the pairs asked for
        asked = {tuple(k) for k in keys}
        rows = conn.execute(selected.where(*(c.in_(sorted({k[i] for k in keys})) for i, c in enumerate(key))))
        return [row for row in rows if tuple(row[: len(key)]) in asked]
    names = [c.name for c in key]
    wanted = func.unnest(*(literal([k[i] for k in keys], ARRAY(c.type)) for i, c in enumerate(key))
                         ).table_valued(*names).render_derived("wanted")
    return conn.execute(selected.select_from(table).join(
        wanted, and_(*(c == wanted.c[c.name] for c in key))))


def among(column: Column, values: Sequence[Any], dialect: str) -> ColumnElement[bool]:
    """`column IN (values)`; on PostgreSQL `column = ANY(array)`: one parameter, so one statement text
    for every batch size (an IN list of n values is a new text for each n, which psycopg converts
    and the server plans anew)."""
    if dialect == "postgresql":
        return column == any_(literal(list(values), ARRAY(column.type)))
    return column.in_(list(values))
