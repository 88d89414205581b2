"""Whose fault: real errors from PostgreSQL, SQLite, Kafka and Python, classified as the record's or the
infrastructure's (forlop.failures). A record's database error (a value too long, NUL in PostgreSQL text,
an index row too large, a statement cancelled) must be isolated and dead-lettered; a database that is
down, locked or behind the code must be waited for, never blamed on a record."""

from __future__ import annotations

import os
import sqlite3
from datetime import UTC, datetime, timedelta, timezone

import pytest
from kafka.errors import KafkaConnectionError, KafkaTimeoutError, MessageSizeTooLargeError
from sqlalchemy import insert, text

from forlop.failures import Failure, component, is_infrastructure
from forlop.storage import Store, schema
from forlop_devtools.broker import free_port


def _raised(store: Store, statement) -> Exception:  # noqa: ANN001 - (Connection) -> object
    try:
        with store.transaction() as conn:
            statement(conn)
    except Exception as exc:
        return exc
    raise AssertionError("the statement did not fail")


def _alert_row(pathway_key: str) -> dict:
    return {"alert_key": "k", "pathway_key": pathway_key, "milestone_key": "m", "to_status": "overdue",
            "emitted_at": datetime(2026, 1, 5, tzinfo=UTC)}


def test_database_errors_a_record_causes_are_the_records(store: Store) -> None:
    duplicate = _raised(store, lambda c: [c.execute(insert(schema.alerts).values(**_alert_row("p")))
                                          for _ in range(2)])
    assert not is_infrastructure(duplicate)
    if store.dialect == "postgresql":
        too_long = _raised(store, lambda c: c.execute(insert(schema.alerts).values(**_alert_row("p" * 300))))
        nul = _raised(store, lambda c: c.execute(text("SELECT :v"), {"v": "a\x00b"}))
        index_row = _raised(store, lambda c: (
            c.execute(text("CREATE TEMP TABLE big (v text)")), c.execute(text("CREATE INDEX ON big (v)")),
            c.execute(text("INSERT INTO big VALUES (:v)"), {"v": os.urandom(300_000).hex()})))
        cancelled = _raised(store, lambda c: (c.execute(text("SET LOCAL statement_timeout = 20")),
                                              c.execute(text("SELECT pg_sleep(2)"))))
        for exc, state in ((too_long, "22001"), (index_row, "54000"), (cancelled, "57014")):
            assert exc.orig.sqlstate == state  # type: ignore[attr-defined]
            assert not is_infrastructure(exc), state
        assert "NUL" in str(nul) and not is_infrastructure(nul)
        failure = Failure.of(too_long)
        assert failure.type == "DataError (psycopg.errors.StringDataRightTruncation)"
        assert failure.message.startswith("value too long") and "pppp" not in failure.message  # no parameters
        assert failure.traceback and all(" in " in frame for frame in failure.traceback)


def test_a_database_that_is_down_locked_or_behind_the_code_is_infrastructure(store: Store, tmp_path) -> None:
    missing_table = _raised(store, lambda c: c.execute(text("SELECT * FROM no_such_table")))
    assert is_infrastructure(missing_table) and component(missing_table) == "database"
    if store.dialect == "postgresql":
        down = Store(f"postgresql://postgres@127.0.0.1:{free_port()}/test")
        refused = _raised(down, lambda c: None)
        assert is_infrastructure(refused) and component(refused) == "database"
        with store.engine.connect() as holder:  # a row lock held by another transaction
            holder.execute(text("CREATE TABLE locked (id int primary key)"))
            holder.execute(text("INSERT INTO locked VALUES (1)"))
            holder.commit()
            holder.execute(text("SELECT * FROM locked WHERE id = 1 FOR UPDATE"))
            busy = _raised(store, lambda c: c.execute(text("SELECT * FROM locked WHERE id = 1 FOR UPDATE NOWAIT")))
            holder.rollback()
        assert busy.orig.sqlstate == "55P03" and is_infrastructure(busy)  # type: ignore[attr-defined]
    else:
        directory = tmp_path / "a-directory"
        directory.mkdir()
        cannot_open = _raised(Store(f"sqlite:///{directory}"), lambda c: None)
        assert is_infrastructure(cannot_open)
        path = tmp_path / "locked.db"
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("CREATE TABLE t (v)")
        holder.execute("BEGIN IMMEDIATE")
        other = sqlite3.connect(path, timeout=0.05, isolation_level=None)
        with pytest.raises(sqlite3.OperationalError) as locked:
            other.execute("BEGIN IMMEDIATE")
        holder.close()
        other.close()
        assert is_infrastructure(locked.value)


def test_python_and_kafka_errors() -> None:
    year_one = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14)))
    with pytest.raises(OverflowError) as overflow:
        year_one.astimezone(UTC)
    assert not is_infrastructure(overflow.value)
    assert not is_infrastructure(RecursionError("maximum recursion depth exceeded"))
    assert not is_infrastructure(MessageSizeTooLargeError("too large"))  # the record's
    assert is_infrastructure(KafkaConnectionError()) and component(KafkaConnectionError()) == "broker"
    assert is_infrastructure(KafkaTimeoutError())
    assert is_infrastructure(ConnectionRefusedError()) and component(ConnectionRefusedError()) == "network"
    try:  # an infrastructure error behind a handler's own exception (`raise ... from`)
        try:
            raise ConnectionResetError("peer went away")
        except ConnectionResetError as inner:
            raise RuntimeError("could not store") from inner
    except RuntimeError as wrapped:
        assert is_infrastructure(wrapped)


def test_the_same_failure_is_the_same_type_and_message() -> None:
    a, b = Failure.of(ValueError("bad date")), Failure.of(ValueError("bad date"))
    assert a.same_as(b) and not a.same_as(Failure.of(ValueError("other"))) and not a.same_as(None)
    assert not a.same_as(Failure.of(TypeError("bad date")))
