"""`forlop.storage.driver` reaches under SQLAlchemy (its compiled statement's internals and the pool's
DBAPI connection). These tests pin it to the installed SQLAlchemy: the version is the one
pyproject.toml pins, the fast path is really taken for the search statements, and it gives what
`Connection.execute` gives, errors included, on both stores.
"""

from __future__ import annotations

import re
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy
from sqlalchemy import bindparam, select, text
from sqlalchemy.exc import DBAPIError

from forlop.storage import Store, schema
from forlop.storage.driver import _prepared, fetch_all
from services.pathway.adapters import fhir_repository, fhir_search

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def _pinned(name: str) -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    found = [d for d in deps if re.match(rf"{name}(\[.*\])?==", d, re.IGNORECASE)]
    assert found, f"{name} is not pinned in pyproject.toml"
    return found[0].split("==", 1)[1]


def test_installed_sqlalchemy_is_the_pinned_one():
    # A new SQLAlchemy release moves the pin only with this module's tests passing on it.
    assert sqlalchemy.__version__ == _pinned("SQLAlchemy")


def _resources() -> list[dict]:
    return [{"resourceType": "Patient", "id": f"p{i}", "identifier": [{"system": "urn:x", "value": f"v{i}"}],
             "name": [{"text": "Ægir Ørn Åsen"}]} for i in range(5)]


def test_search_statements_take_the_driver_path(store: Store):
    page = fhir_search._page_statement("Patient", (("identifier", 1),), True, store.dialect)
    count = fhir_search._count_statement("Patient", (("identifier", 2),), False, store.dialect)
    for statement in (page, count):
        assert _prepared(statement, store.engine.dialect) is not None


def test_fetch_all_gives_what_execute_gives(store: Store):
    with store.transaction() as conn:
        fhir_repository.upsert_resources(conn, _resources(), None, NOW)
    statements = [
        (fhir_search._page_statement("Patient", (), True, store.dialect), {"after": "p1", "lim": 3, "off": 0}),
        (fhir_search._page_statement("Patient", (("identifier", 1),), False, store.dialect),
         {"v0_0": "urn:x|v2", "lim": 10, "off": 0}),
        (fhir_search._count_statement("Patient", (), False, store.dialect), {}),
    ]
    # outside a transaction (PostgreSQL: autocommit for the one statement) and inside one
    for inside in (False, True):
        with store.read() as conn:
            if inside:
                conn.execute(text("SELECT 1"))
            for statement, params in statements:
                expected = [tuple(row) for row in conn.execute(statement, params)]
                assert expected  # the case is not empty
                assert fetch_all(conn, statement, params) == expected
    with store.read() as conn:
        rows = fetch_all(conn, statements[0][0], statements[0][1])
    resource, version_id, last_updated = rows[0]
    assert resource["name"][0]["text"] == "Ægir Ørn Åsen"  # the JSON column's result processor ran
    assert version_id == 1 and isinstance(last_updated, datetime)


def test_fetch_all_falls_back_for_expanding_parameters(store: Store):
    r = schema.fhir_resources
    statement = select(r.c.id).where(r.c.id.in_(bindparam("ids", expanding=True))).order_by(r.c.id)
    assert _prepared(statement, store.engine.dialect) is None
    with store.transaction() as conn:
        fhir_repository.upsert_resources(conn, _resources(), None, NOW)
    with store.read() as conn:
        assert fetch_all(conn, statement, {"ids": ["p3", "p1"]}) == [("p1",), ("p3",)]


def test_a_driver_error_is_raised_as_sqlalchemys(store: Store):
    with store.read() as conn, pytest.raises(DBAPIError):
        fetch_all(conn, select(text("no_such_column")).select_from(schema.fhir_resources), {})
    with store.read() as conn:  # the connection is usable again
        assert conn.execute(text("SELECT 1")).scalar_one() == 1
