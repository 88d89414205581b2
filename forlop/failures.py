"""What went wrong when a record could not be handled: the record's fault, or the infrastructure's.

A consumer that cannot handle a record must decide whether to blame the record (retry it on its
own, then dead-letter it and go on) or the world around it (the database or broker is down:
back off, report not ready, and blame nothing). Getting this wrong either way is costly:
blaming the record during an outage dead-letters every record that arrives meanwhile; blaming
the world for a poison record stalls the consumer for good. So the rule is narrow:

* **Infrastructure** is what says nothing about the record: the connection could not be made or
  was lost (SQLAlchemy marks it `connection_invalidated`; psycopg errors without a SQLSTATE are
  client-side connection failures; SQLSTATE classes 08 connection, 53 insufficient resources,
  57P operator intervention, 58 system error, XX internal error), contention that goes away on
  its own (class 40 deadlock/serialization, 55P03 lock not available), a database that is
  read-only (25006, a failover to a standby) or whose schema or grants are behind the code
  (3D000, 3F000, 42P01 undefined table, 42703 undefined column, 42501 privilege, class 28
  authorization), SQLite busy, locked, I/O, full, cannot-open and not-a-database, the connection
  pool exhausted, a retriable Kafka error, and an OS-level ConnectionError or TimeoutError.
* **Everything else is the record's**, also database errors a record causes: class 22 data
  exceptions (a value too long, NUL in PostgreSQL text, a number out of range), class 23
  constraint violations, 54 program limits (an index row too large), 57014 a statement
  cancelled for running too long, SQLite's TOOBIG, and every Python exception from the
  handler's own code (OverflowError on a year-1 date, RecursionError on deep nesting, MemoryError
  on a record that needs more than the process has).
  Being wrong here is cheap: a record is only dead-lettered after failing twice the same way
  on its own, so a one-off (a unique violation from a concurrent replica) passes on the retry.
"""

from __future__ import annotations

import sqlite3
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from kafka.errors import KafkaError
from sqlalchemy import exc as sa_exc

# PostgreSQL SQLSTATEs (or their two-character classes) that say the database, not the record, failed.
_PG_INFRA_CLASSES = ("08", "53", "58", "XX", "40", "28")
_PG_INFRA_STATES = ("57P01", "57P02", "57P03", "57P04", "57P05", "55P03", "25006", "3D000", "3F000",
                    "42P01", "42703", "42501")
# SQLite result codes (primary names, extended ones start with them) that say the same of SQLite.
_SQLITE_INFRA = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_IOERR", "SQLITE_FULL", "SQLITE_CANTOPEN",
                 "SQLITE_NOMEM", "SQLITE_READONLY", "SQLITE_PROTOCOL", "SQLITE_NOTADB", "SQLITE_CORRUPT")
_SQLITE_SCHEMA_BEHIND = ("no such table", "no such column")

MESSAGE_LIMIT = 2000  # characters of an exception's message kept with a dead letter
TRACEBACK_FRAMES = 8  # innermost frames kept: where it failed, not the whole call chain


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception, the DBAPI error SQLAlchemy wrapped and the explicit causes (`raise ... from`)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < 10:
        seen.add(id(current))
        yield current
        orig = getattr(current, "orig", None)
        if isinstance(orig, BaseException) and id(orig) not in seen:
            seen.add(id(orig))
            yield orig
        current = current.__cause__


def _infrastructure(e: BaseException) -> bool:
    if isinstance(e, sa_exc.DBAPIError) and e.connection_invalidated:
        return True
    if isinstance(e, sa_exc.DisconnectionError | sa_exc.InterfaceError | sa_exc.TimeoutError):
        return True  # TimeoutError: no connection free in the pool
    if isinstance(e, psycopg.Error):
        if isinstance(e, psycopg.InterfaceError):
            return True
        state = e.sqlstate
        if state is None:  # no answer from a server: the connection failed or broke
            return isinstance(e, psycopg.OperationalError)
        return state[:2] in _PG_INFRA_CLASSES or state in _PG_INFRA_STATES
    if isinstance(e, sqlite3.Error):
        name = getattr(e, "sqlite_errorname", "") or ""
        return name.startswith(_SQLITE_INFRA) or str(e).startswith(_SQLITE_SCHEMA_BEHIND)
    if isinstance(e, KafkaError):
        return bool(getattr(e, "retriable", False))
    return isinstance(e, ConnectionError | TimeoutError)


def is_infrastructure(exc: BaseException) -> bool:
    """True when `exc` says the database, broker or network failed, not the record (module docstring)."""
    return any(_infrastructure(e) for e in _chain(exc))


def component(exc: BaseException) -> str:
    """What an infrastructure failure is about, for readiness and logs: database, broker or network."""
    for e in _chain(exc):
        if isinstance(e, sa_exc.SQLAlchemyError | psycopg.Error | sqlite3.Error):
            return "database"
        if isinstance(e, KafkaError):
            return "broker"
    return "network"


def _message(exc: BaseException) -> str:
    # A SQLAlchemy error's text carries the statement and its parameters (a whole record); the
    # driver's own message says what failed.
    inner = getattr(exc, "orig", None) if isinstance(exc, sa_exc.StatementError) else None
    text = str(inner if isinstance(inner, BaseException) else exc)
    return text[:MESSAGE_LIMIT]


def _type_name(exc: BaseException) -> str:
    inner = getattr(exc, "orig", None) if isinstance(exc, sa_exc.StatementError) else None
    name = type(exc).__name__
    if isinstance(inner, BaseException):
        name += f" ({type(inner).__module__}.{type(inner).__name__})"
    return name


def _frames(exc: BaseException) -> list[str]:
    """Where it failed: "dir/dir/file.py:line in function" of the innermost frames; no locals and no
    values (no personal data)."""
    return [f"{'/'.join(Path(frame.filename).parts[-3:])}:{frame.lineno} in {frame.name}"
            for frame in traceback.extract_tb(exc.__traceback__)[-TRACEBACK_FRAMES:]]


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed attempt at a record: what the dead letter keeps of the exception."""

    type: str
    message: str
    traceback: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, exc: BaseException) -> Failure:
        return cls(_type_name(exc), _message(exc), _frames(exc))

    def same_as(self, other: Failure | None) -> bool:
        """Failed the same way: the same exception type and message."""
        return other is not None and (self.type, self.message) == (other.type, other.message)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "message": self.message, "traceback": list(self.traceback)}

    def summary(self, limit: int = 200) -> str:
        return f"{self.type}: {self.message[:limit]}"
