"""Shared fixtures: the two stores (SQLite and PostgreSQL), the bundled broker, the shared contracts."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from forlop.storage import Store

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
POSTGRES_URL = os.environ.get("FORLOP_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
# The pathway service skips the fhir.resources check in production's hot path; the suite keeps it on,
# so every resource any test maps or stores is proven valid R4.
os.environ.setdefault("FORLOP_FHIR_VALIDATE", "1")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"../shared not found at {SHARED}: tests read the contracts and schemas from it")
    return SHARED


def _postgres_store() -> Iterator[Store]:
    """A fresh schema in the test database per test: isolated, dropped afterwards."""
    schema_name = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema_name}"'))
    except Exception as exc:  # pragma: no cover - the CI machine runs PostgreSQL
        admin.dispose()
        if os.environ.get("FORLOP_TEST_SKIP_POSTGRES") == "1":
            pytest.skip(f"PostgreSQL not reachable at {POSTGRES_URL}: {exc}")
        pytest.fail(f"PostgreSQL not reachable at {POSTGRES_URL} (set FORLOP_TEST_SKIP_POSTGRES=1 to skip): {exc}")
    sep = "&" if "?" in POSTGRES_URL else "?"
    store = Store(f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema_name}")
    store.migrate()
    try:
        yield store
    finally:
        store.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema_name}" CASCADE'))
        admin.dispose()


def _sqlite_store(path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{path}")
    s.migrate()
    yield s
    s.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """The same test runs against the embedded default and the production store."""
    if request.param == "sqlite":
        yield from _sqlite_store(tmp_path / "forlop.db")
    else:
        yield from _postgres_store()


@pytest.fixture
def another_store(store: Store, tmp_path: Path) -> Iterator[Store]:
    """A second empty store of the same kind as `store`: two ways to one state, compared."""
    if store.dialect == "sqlite":
        yield from _sqlite_store(tmp_path / "another.db")
    else:
        yield from _postgres_store()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    yield from _sqlite_store(tmp_path / "forlop.db")


@pytest.fixture(scope="session")
def broker() -> Iterator[str]:
    """The bundled Tansu broker, started once per test session; yields its bootstrap address."""
    from forlop.broker import EmbeddedBroker

    with EmbeddedBroker() as b:
        yield b.bootstrap


def query_plan(conn, sql: object) -> str:  # noqa: ANN001 - a SQLAlchemy Connection
    """The plan the database chooses for `sql` (compiled with literal binds), its lines joined by " / "."""
    if conn.dialect.name == "sqlite":
        rows = [row[-1] for row in conn.execute(text(f"EXPLAIN QUERY PLAN {sql}"))]
    else:
        rows = [row[0] for row in conn.execute(text(f"EXPLAIN {sql}"))]
    return " / ".join(str(r) for r in rows)
