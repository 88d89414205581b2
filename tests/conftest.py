"""Shared fixtures: the two stores (SQLite and PostgreSQL), the bundled broker, the vendor contracts' examples.

Everything a test reads is in the repository: the vendor example streams and their expected status
under `tests/fixtures/contracts`, the official e-message schemas in `profiles/xsd`.

PostgreSQL (FORLOP_TEST_POSTGRES_URL, default postgresql://postgres@127.0.0.1:5432/test) is probed
once: when it cannot be reached, every PostgreSQL-parametrised test is skipped with one reason,
unless FORLOP_TEST_REQUIRE_POSTGRES=1 (CI), which makes it an error.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from forlop.logging import JsonFormatter, MaskingFilter
from forlop.storage import Store

ROOT = Path(__file__).resolve().parents[1]
CONTRACTS = ROOT / "tests" / "fixtures" / "contracts"
POSTGRES_URL = os.environ.get("FORLOP_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
# The pathway service skips the fhir.resources check in production's hot path; the suite keeps it on,
# so every resource any test maps or stores is proven valid R4.
os.environ.setdefault("FORLOP_FHIR_VALIDATE", "1")


@pytest.fixture(scope="session")
def contracts_dir() -> Path:
    """The vendor example streams (`dips-examples.ndjson`, `esp-examples.ndjson`) and `expected-status.json`."""
    return CONTRACTS


@functools.cache
def postgres_unreachable() -> str | None:
    """Why PostgreSQL cannot be used (None: it can), asked once per test session."""
    engine = create_engine(POSTGRES_URL.replace("postgresql://", "postgresql+psycopg://", 1),
                           connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return None
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    finally:
        engine.dispose()


def require_postgres() -> None:
    """Skip the calling test (one clear reason) when PostgreSQL is unreachable; fail instead in CI."""
    problem = postgres_unreachable()
    if problem is None:
        return
    message = f"PostgreSQL not reachable at {POSTGRES_URL} ({problem})"
    if os.environ.get("FORLOP_TEST_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"{message}; FORLOP_TEST_REQUIRE_POSTGRES=1 demands it")
    pytest.skip(f"{message}: the PostgreSQL half of the suite is skipped")


def _postgres_store() -> Iterator[Store]:
    """A fresh schema in the test database per test: isolated, dropped afterwards."""
    require_postgres()
    schema_name = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL.replace("postgresql://", "postgresql+psycopg://", 1))
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema_name}"'))
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
def postgres_store() -> Iterator[Store]:
    """A PostgreSQL store alone, for what only PostgreSQL has (its statement timeout)."""
    yield from _postgres_store()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    yield from _sqlite_store(tmp_path / "forlop.db")


@pytest.fixture(scope="session")
def broker() -> Iterator[str]:
    """The bundled Tansu broker, started once per test session; yields its bootstrap address."""
    from forlop_devtools.broker import EmbeddedBroker

    with EmbeddedBroker() as b:
        yield b.bootstrap


def query_plan(conn, sql: object) -> str:  # noqa: ANN001 - a SQLAlchemy Connection
    """The plan the database chooses for `sql` (compiled with literal binds), its lines joined by " / "."""
    if conn.dialect.name == "sqlite":
        rows = [row[-1] for row in conn.execute(text(f"EXPLAIN QUERY PLAN {sql}"))]
    else:
        rows = [row[0] for row in conn.execute(text(f"EXPLAIN {sql}"))]
    return " / ".join(str(r) for r in rows)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test marked `postgres` that does not take the `store` fixture is skipped (or failed) the same way."""
    if item.get_closest_marker("postgres") is not None:
        require_postgres()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    problem = postgres_unreachable.cache_info().currsize and postgres_unreachable()
    if problem:
        terminalreporter.write_line(
            f"PostgreSQL at {POSTGRES_URL} was not reachable ({problem}): its half of the suite was skipped. "
            "Start it (see the README) or set FORLOP_TEST_POSTGRES_URL.", yellow=True)


@contextlib.contextmanager
def production_logs(level: int = logging.INFO) -> Iterator[io.StringIO]:
    """The root logger's output, as the production handler writes it (masking filter + JSON), meanwhile."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(MaskingFilter())
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(level)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


@pytest.fixture
def root_logging() -> Iterator[None]:
    """`cli.main` points the root logger at the captured stderr: give the handlers back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
