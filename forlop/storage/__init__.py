"""The data layer: one engine, explicit transactions, the same code on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url

from forlop.codec import json_text
from forlop.collector import collector_paused
from forlop.storage import migrations, schema

__all__ = ["Store", "json_text", "schema"]


class SchemaNotReady(RuntimeError):
    pass


class Store:
    """Owns the engine. `transaction()` is the unit of work: one commit or nothing."""

    # pool_size: connections kept open between uses (opened only when needed). An API process serves
    # with FORLOP_HTTP_THREADS request threads (default 2) beside the metrics worker and the outbox
    # relay: a pool smaller than that opened and closed connections request by request (connect,
    # PRAGMAs, schema read).
    # sqlite_cache_mb: each SQLite connection's page cache (SQLite's default is 2 MiB). A bulk load
    # (`forlop replay`) inserts into B-trees far bigger than that and read pages back from the OS
    # again and again (a larger cache halved a replay's system time: docs/performance.md).
    # statement_timeout_ms (PostgreSQL): every statement on this store's connections is cancelled by
    # the server after this long (`with_statement_timeout`); 0: no limit.
    def __init__(self, database_url: str, *, pool_size: int = 10, sqlite_cache_mb: int | None = None,
                 statement_timeout_ms: int = 0) -> None:
        url = make_url(database_url)
        self.url = url
        self.dialect = url.get_backend_name()
        self.pool_size = pool_size
        self.statement_timeout_ms = statement_timeout_ms
        if self.dialect == "sqlite":
            if url.database and url.database != ":memory:":
                Path(url.database).parent.mkdir(parents=True, exist_ok=True)
            self.engine: Engine = create_engine(
                url, connect_args={"check_same_thread": False, "timeout": 60}, pool_size=pool_size,
                json_serializer=json_text, json_deserializer=orjson.loads,
            )
            _sqlite_immediate_transactions(self.engine, sqlite_cache_mb)
        else:
            if url.drivername == "postgresql":
                url = url.set(drivername="postgresql+psycopg")
            connect_args = {}
            if statement_timeout_ms > 0:
                # A startup option of the session (no round trip, and no transaction's ROLLBACK undoes
                # it), beside any the URL gives.
                given = url.query.get("options")
                connect_args["options"] = " ".join(
                    [*([given] if isinstance(given, str) else list(given or ())),
                     f"-c statement_timeout={int(statement_timeout_ms)}"])
            self.engine = create_engine(url, pool_size=pool_size, max_overflow=10, pool_pre_ping=True,
                                        json_serializer=json_text, json_deserializer=orjson.loads,
                                        connect_args=connect_args)
            # An executemany INSERT goes out through psycopg's pipeline: one statement text, converted
            # once and prepared by the server, for every row. SQLAlchemy's multi-row INSERT ... VALUES
            # pages were a new text per row count, which psycopg converts anew (it caches statements
            # of up to 4 KB and 50 parameters) and the server parses anew (the gain in Kafka ingest:
            # docs/performance.md). The search index rows, for which pages were chosen once, go
            # through `insert_rows` now.
            self.engine.dialect.use_insertmanyvalues_wo_returning = False

    def with_statement_timeout(self, timeout_ms: int) -> Store:
        """A store on the same database (its own pool) whose every statement the server cancels after
        `timeout_ms` (PostgreSQL's statement_timeout; the driver raises QueryCanceled, SQLSTATE 57014).
        This store itself where that is moot: SQLite (no such setting), or `timeout_ms` 0."""
        if self.dialect != "postgresql" or timeout_ms <= 0 or timeout_ms == self.statement_timeout_ms:
            return self
        return Store(self.url.render_as_string(hide_password=False), pool_size=self.pool_size,
                     statement_timeout_ms=timeout_ms)

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        # A unit of work is a batch (a consumer poll, a replay chunk, a scanner pass): the cyclic
        # collector waits until its objects are freed (forlop.collector).
        with collector_paused(), self.engine.begin() as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection for reading: each statement sees the data committed when it starts.

        That is what PostgreSQL's READ COMMITTED gives a transaction. On SQLite a read is no
        transaction at all (each statement is its own, on a WAL snapshot): BEGIN IMMEDIATE took the
        write lock, so every API request queued behind the writers and the other readers, and even
        a deferred BEGIN tripled the cost of a search with eight threads reading at once.
        """
        with self.engine.connect() as conn:
            yield conn.execution_options(forlop_read=True) if self.dialect == "sqlite" else conn  # see _on_begin

    def analyze(self) -> list[str]:
        """Refresh PostgreSQL's planner statistics of every table, after a bulk load (`forlop replay`);
        return the tables analyzed (none on SQLite, whose plans here need no statistics).

        A database loaded by a replay had none until autovacuum came round (never, where it is off):
        the API then planned its searches over 15k pathways as if the tables were empty, 32 requests/s
        against 476 after ANALYZE. ANALYZE reads a sample of each table (30,000 rows by default), so
        its cost does not grow with the load.
        """
        if self.dialect != "postgresql":
            return []
        tables = [t.name for t in schema.metadata.sorted_tables]
        with self.transaction() as conn:
            for name in tables:
                conn.execute(text(f'ANALYZE "{name}"'))
        return tables

    def migrate(self) -> list[int]:
        with self.transaction() as conn:
            return migrations.migrate(conn)

    def check_schema(self) -> None:
        """Refuse to run against a database whose schema is behind this code."""
        with self.read() as conn:
            done = migrations.applied_versions(conn)
        if migrations.latest_version() not in done:
            raise SchemaNotReady(
                f"database schema is at {max(done, default=0)}, this forlop needs "
                f"{migrations.latest_version()}: run 'forlop migrate'"
            )

    def ping(self) -> bool:
        try:
            with self.read() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except Exception:
            return False

    def dispose(self) -> None:
        self.engine.dispose()


def _sqlite_immediate_transactions(engine: Engine, cache_mb: int | None = None) -> None:
    """WAL and BEGIN IMMEDIATE: several service threads write to one SQLite file.

    pysqlite's own transaction handling defers BEGIN, which turns concurrent writers
    into lock-upgrade deadlocks; taking the write lock at BEGIN makes them queue instead.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.execute("PRAGMA foreign_keys=ON")
        if cache_mb:
            cur.execute(f"PRAGMA cache_size=-{int(cache_mb) * 1024}")  # negative: KiB
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # type: ignore[no-untyped-def]
        # A read (`Store.read`) begins nothing: with isolation_level None each statement is its own
        # read transaction on a WAL snapshot, waiting for no writer and holding no reader up.
        if not conn.get_execution_options().get("forlop_read"):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
