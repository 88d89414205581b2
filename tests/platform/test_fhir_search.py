"""FHIR search over the index table: the same matches as a plain filter, page by page, on both stores.

A page is read through the covering index (resource_type, param, value, id) without counting
every match; these tests pin what a search returns (AND across parameters, OR across values,
ordered by id), the paging (offset and keyset), and when the total is known.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest
from sqlalchemy import delete, insert, inspect, select, text

from forlop.storage import Store, migrations, schema
from services.pathway.adapters import fhir_repository, fhir_search
from services.pathway.domain import search_index
from tests.conftest import query_plan

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
PATHWAY_TYPE = "urn:oid:2.16.578.1.12.4.1.1.9321"
DEADLINE = "https://forlop.no/fhir/CodeSystem/deadline-status"
FNR = "urn:oid:2.16.578.1.12.4.1.4.1"


def _patient(n: int) -> dict:
    return {"resourceType": "Patient", "id": f"p{n}", "identifier": [{"system": FNR, "value": f"{n:011d}"}]}


def _episode(i: int, rng: random.Random) -> dict:
    return {
        "resourceType": "EpisodeOfCare",
        "id": f"e{i:03d}",
        "identifier": [{"system": "https://forlop.no/fhir/sid/pathway/dips", "value": f"PPR-{i}"}],
        "status": rng.choice(["waitlist", "active", "active", "active", "finished"]),
        "type": [{"coding": [{"system": PATHWAY_TYPE, "code": rng.choice(["D11", "D11", "D12", "D01"])}]}],
        "patient": {"reference": f"Patient/p{i % 7}"},
        "managingOrganization": {"reference": f"Organization/o{rng.randrange(4)}"},
    }


def _task(episode: dict, milestone: str, rng: random.Random) -> dict:
    return {
        "resourceType": "Task",
        "id": f"t-{episode['id']}-{milestone}",
        "status": rng.choice(["requested", "completed"]),
        "focus": {"reference": f"EpisodeOfCare/{episode['id']}"},
        "for": episode["patient"],
        "code": {"coding": [{"system": "https://forlop.no/fhir/CodeSystem/milestone", "code": milestone}]},
        "businessStatus": {
            "coding": [{"system": DEADLINE, "code": rng.choice(["pending", "due-soon", "overdue", "met", "late"])}]
        },
        "owner": episode["managingOrganization"],
    }


@pytest.fixture
def stocked(store: Store) -> tuple[Store, list[dict]]:
    """150 episodes with 3 Tasks each, over 7 patients and 4 units, in random order of id."""
    rng = random.Random(7)
    patients = [_patient(n) for n in range(7)]
    everything: list[dict] = list(patients)
    batch = []
    for i in rng.sample(range(150), 150):
        episode = _episode(i, rng)
        tasks = [_task(episode, m, rng) for m in ("first-attendance", "decision-basic", "evaluation")]
        patient = patients[i % 7]
        batch.append((f"dips:P{i}", [patient, episode, *tasks]))
        everything += [episode, *tasks]
    with store.transaction() as conn:
        fhir_repository.upsert_many(conn, batch, NOW)
    return store, everything


def _matches(rtype: str, param: str, wanted: str, indexed: str) -> bool:
    """FHIR's reference search: "Type/id" as it is, a bare id of any type, an absolute URL by its Type/id."""
    if (rtype, param) not in search_index.REFERENCE_TARGETS:
        return wanted == indexed
    return wanted == indexed or indexed.endswith(f"/{wanted}") or wanted.endswith(f"/{indexed}")


def _expected(everything: list[dict], rtype: str, criteria: list[tuple[str, list[str]]]) -> list[str]:
    """The matches by a plain filter over each resource's index values: AND across, OR within."""
    patients = {f"Patient/{r['id']}": r for r in everything if r["resourceType"] == "Patient"}
    out = []
    for res in everything:
        if res["resourceType"] != rtype:
            continue
        pairs = search_index.index_values(res, patients)
        if all(any(p == param and _matches(rtype, param, v, have) for v in values for p, have in pairs)
               for param, values in criteria):
            out.append(res["id"])
    return sorted(set(out))


SEARCHES: list[tuple[str, list[tuple[str, list[str]]]]] = [
    ("EpisodeOfCare", []),
    ("EpisodeOfCare", [("status", ["active"])]),
    ("EpisodeOfCare", [("status", ["waitlist", "finished"])]),
    ("EpisodeOfCare", [("type", ["D11"]), ("status", ["waitlist"])]),
    ("EpisodeOfCare", [("status", ["finished"]), ("type", ["D01", f"{PATHWAY_TYPE}|D01", "D12"])]),
    ("EpisodeOfCare", [("organization", ["Organization/o1", "o2"]), ("status", ["active"]), ("type", ["D11"])]),
    ("EpisodeOfCare", [("patient.identifier", [f"{FNR}|{3:011d}"])]),
    ("EpisodeOfCare", [("identifier", ["PPR-42"]), ("status", ["active", "waitlist", "finished"])]),
    ("EpisodeOfCare", [("status", ["active"]), ("status", ["finished"])]),  # the same parameter twice: AND
    ("EpisodeOfCare", [("status", ["no-such-status"])]),
    ("Task", [("business-status", ["overdue"])]),
    ("Task", [("business-status", ["overdue", f"{DEADLINE}|overdue", "due-soon"]), ("status", ["requested"])]),
    ("Task", [("code", ["evaluation"]), ("owner", ["o3"]), ("business-status", ["met", "late"])]),
    ("Task", [("focus", ["EpisodeOfCare/e007"])]),
    ("Task", [("focus", ["e007", "https://elsewhere.example/fhir/EpisodeOfCare/e011"])]),  # bare id, URL
    ("Task", [("owner", ["Organization/o3", "o1"]), ("patient", ["p4"])]),
    ("EpisodeOfCare", [("patient", ["p5"]), ("organization", ["o0", "Organization/o2"])]),
    ("Task", [("patient", ["Patient/p2"]), ("status", ["completed"])]),
    # more values than are merged as ranges: one scan, a sort
    ("Task", [("focus", [f"EpisodeOfCare/e{i:03d}" for i in range(0, 150, 3)]), ("status", ["requested"])]),
]


@pytest.mark.parametrize(("rtype", "criteria"), SEARCHES, ids=[f"{r}:{c}" for r, c in SEARCHES])
def test_pages_hold_exactly_the_matches_of_a_plain_filter(stocked, rtype, criteria) -> None:
    store, everything = stocked
    expected = _expected(everything, rtype, criteria)
    with store.read() as conn:
        total, first = fhir_search.search(conn, rtype, criteria, 10, 0)  # the counted form
        assert total == len(expected) and [r.resource["id"] for r in first] == expected[:10]

        # keyset: each page starts after the last id of the one before
        seen: list[str] = []
        after = None
        while True:
            page = fhir_search.search_page(conn, rtype, criteria, 7, after=after)
            ids = [r.resource["id"] for r in page.resources]
            seen += ids
            assert page.more == (len(seen) < len(expected))
            # the total is known without counting only on a last page reached from the first match
            assert page.total == (len(expected) if after is None and not page.more else None)
            if not page.more:
                break
            after = ids[-1]
        assert seen == expected

        # offset paging and the counted total agree with it
        for offset in (0, 5, len(expected) - 1, len(expected), len(expected) + 3):
            page = fhir_search.search_page(conn, rtype, criteria, 5, max(0, offset), count_total=True)
            assert [r.resource["id"] for r in page.resources] == expected[max(0, offset) : max(0, offset) + 5]
            assert page.total == len(expected) and page.more == (max(0, offset) + 5 < len(expected))
        counted = fhir_search.search_page(conn, rtype, criteria, 0)
        assert (counted.resources, counted.more, counted.total) == ([], False, len(expected))


def test_a_parameter_without_values_matches_nothing(stocked) -> None:
    store, _ = stocked
    with store.read() as conn:
        page = fhir_search.search_page(conn, "EpisodeOfCare", [("status", [])], 10)
    assert (page.resources, page.more, page.total) == ([], False, 0)


def test_keyset_pages_neither_skip_nor_repeat_when_earlier_matches_leave(stocked) -> None:
    """Offset paging would skip a match when one before the page boundary leaves; a cursor does not."""
    store, everything = stocked
    criteria = [("status", ["active"])]
    expected = _expected(everything, "EpisodeOfCare", criteria)
    with store.read() as conn:
        first = fhir_search.search_page(conn, "EpisodeOfCare", criteria, 10)
    cursor = first.resources[-1].resource["id"]
    gone = [first.resources[0].resource["id"], first.resources[3].resource["id"]]
    with store.transaction() as conn:  # two matches of page one finish
        for eid in gone:
            res = next(r for r in everything if r["id"] == eid)
            fhir_repository.upsert_resources(conn, [dict(res, status="finished")], None, NOW)
    with store.read() as conn:
        second = fhir_search.search_page(conn, "EpisodeOfCare", criteria, 10, after=cursor)
        by_offset = fhir_search.search_page(conn, "EpisodeOfCare", criteria, 10, 10)
    assert [r.resource["id"] for r in second.resources] == expected[10:20]
    assert [r.resource["id"] for r in by_offset.resources] == expected[12:22]  # what offset paging would give


def test_search_reads_the_covering_index_in_id_order(stocked) -> None:
    store, _ = stocked
    if store.dialect != "sqlite":
        pytest.skip("the plan text is SQLite's; PostgreSQL plans by its statistics")
    for shape in ((("status", 1),), (("type", 1), ("status", 1)), (("code", 1), ("business-status", 2)),
                  (("business-status", 2), ("code", 1))):
        ids = fhir_search._matching_ids("Task", shape, True, "sqlite")
        values = {f"v{i}_{j}": "x" for i, (_, n) in enumerate(shape) for j in range(n)}
        stmt = ids.order_by(ids.selected_columns.id).limit(21).params(**values, after="a")
        sql = stmt.compile(store.engine, compile_kwargs={"literal_binds": True})
        with store.read() as conn:
            plan = query_plan(conn, sql)
        # the ids come in order from the table's key (WITHOUT ROWID): no sort of all matches, no scan
        assert "fhir_search_index USING PRIMARY KEY" in plan and "TEMP B-TREE" not in plan, (shape, plan)
        assert "SCAN" not in plan.replace("SCAN (subquery", ""), (shape, plan)


def _indexes(store: Store) -> set[str]:
    with store.read() as conn:
        return {i["name"] for t in ("fhir_search_index", "pathways") for i in inspect(conn).get_indexes(t)}


def _search_index_rows(store: Store) -> list[tuple]:
    with store.read() as conn:
        return sorted(tuple(row) for row in conn.execute(select(schema.fhir_search_index)))


def test_migrations_4_and_6_rebuild_a_database_of_before_step_4(stocked) -> None:
    """Step 4 swapped the search and worklist indexes; step 6 keys the search index by (resource_type,
    param, value, id) (on SQLite a WITHOUT ROWID table, rebuilt; a row held twice is kept once);
    step 8 drops the index by resource that steps 3 and 6 made."""
    store, everything = stocked
    rows = _search_index_rows(store)
    assert "ix_pathways_unit_status" in _indexes(store)
    assert not {"ix_fhir_search", "ix_fhir_search_match", "ix_pathways_unit_her_id", "ix_fhir_search_by_resource"
                } & _indexes(store)
    idx = schema.fhir_search_index
    with store.transaction() as conn:  # the table and indexes as a database migrated to step 3 had them
        conn.execute(text("DROP TABLE fhir_search_index"))
        conn.execute(text("CREATE TABLE fhir_search_index (resource_type VARCHAR(40) NOT NULL, id VARCHAR(64) NOT NULL, "
                          "param VARCHAR(40) NOT NULL, value VARCHAR(300) NOT NULL)"))
        conn.execute(text("CREATE INDEX ix_fhir_search ON fhir_search_index (resource_type, param, value)"))
        conn.execute(text("CREATE INDEX ix_fhir_search_by_resource ON fhir_search_index (resource_type, id, param, value)"))
        conn.execute(text("DROP INDEX ix_pathways_unit_status"))
        conn.execute(text("CREATE INDEX ix_pathways_unit_her_id ON pathways (unit_her_id)"))
        conn.execute(insert(idx), [dict(zip(("resource_type", "id", "param", "value"), r, strict=True)) for r in rows])
        conn.execute(insert(idx), [dict(zip(("resource_type", "id", "param", "value"), rows[0], strict=True))])  # twice
        conn.execute(delete(schema.schema_migrations).where(schema.schema_migrations.c.version.in_([4, 5, 6, 8])))
    assert store.migrate() == [4, 5, 6, 8]
    assert "ix_pathways_unit_status" in _indexes(store)
    assert not {"ix_fhir_search", "ix_fhir_search_match", "ix_pathways_unit_her_id", "ix_fhir_search_by_resource"
                } & _indexes(store)
    assert _search_index_rows(store) == rows
    with store.read() as conn:
        assert inspect(conn).get_pk_constraint("fhir_search_index")["constrained_columns"] == [
            "resource_type", "param", "value", "id"]
        if store.dialect == "sqlite":
            sql = conn.execute(text("SELECT sql FROM sqlite_master WHERE name = 'fhir_search_index'")).scalar_one()
            assert "WITHOUT ROWID" in sql
        total, _ = fhir_search.search(conn, "Task", [("status", ["requested"])], 10, 0)
    assert total == len(_expected(everything, "Task", [("status", ["requested"])]))
    assert migrations.latest_version() >= 8


def test_a_reference_is_indexed_once_and_migration_5_drops_the_bare_id_rows(stocked) -> None:
    store, everything = stocked
    idx = schema.fhir_search_index
    params = {param for _, param in search_index.REFERENCE_TARGETS}
    with store.read() as conn:
        values = [row.value for row in conn.execute(idx.select().where(idx.c.param.in_(params)))]
    assert values and all("/" in v for v in values)
    with store.transaction() as conn:  # a database indexed before step 5: each reference's bare id too
        bare = [{"resource_type": rtype, "id": rid, "param": param, "value": value.split("/", 1)[1]}
                for rtype, rid, param, value in conn.execute(
                    select(idx.c.resource_type, idx.c.id, idx.c.param, idx.c.value))
                if (rtype, param) in search_index.REFERENCE_TARGETS]
        conn.execute(insert(idx), bare)
        conn.execute(delete(schema.schema_migrations).where(schema.schema_migrations.c.version == 5))
    assert store.migrate() == [5]
    with store.read() as conn:
        again = [row.value for row in conn.execute(idx.select().where(idx.c.param.in_(params)))]
        assert sorted(again) == sorted(values)
        owner = fhir_search.search_page(conn, "Task", [("owner", ["o1"])], 500).resources
    assert sorted(r.resource["id"] for r in owner) == _expected(everything, "Task", [("owner", ["Organization/o1"])])


def test_a_search_gives_what_sqlalchemy_gives_and_reads_inside_an_open_transaction(stocked) -> None:
    """The page and count statements run on the driver's cursor; their rows are SQLAlchemy's, and in a
    transaction they see its own writes (on PostgreSQL a read outside one runs as one autocommit
    statement, the connection handed back as it was given)."""
    store, everything = stocked
    criteria = [("status", ["active"]), ("type", ["D11", "D12"])]
    with store.read() as conn:
        page = fhir_search.search_page(conn, "EpisodeOfCare", criteria, 10, count_total=True)
        assert not conn.in_transaction()
        if store.dialect == "postgresql":
            from psycopg.pq import TransactionStatus

            dbapi_conn = conn.connection.dbapi_connection
            assert dbapi_conn.autocommit is False and dbapi_conn.info.transaction_status == TransactionStatus.IDLE
        shape = ("EpisodeOfCare", (("type", 2), ("status", 1)), False, conn.dialect.name)
        params = {"v0_0": "D11", "v0_1": "D12", "v1_0": "active", "lim": 11, "off": 0}
        rows = conn.execute(fhir_search._page_statement(*shape), params).all()
    assert [(r.resource, r.version_id, r.last_updated) for r in page.resources] == [tuple(row) for row in rows[:10]]
    assert page.total == len(_expected(everything, "EpisodeOfCare", criteria))
    first = page.resources[0].resource
    with store.transaction() as conn:
        fhir_repository.upsert_resources(conn, [dict(first, status="finished")], None, NOW)
        inside = fhir_search.search_page(conn, "EpisodeOfCare", criteria, 10)
        assert first["id"] not in [r.resource["id"] for r in inside.resources]
        conn.rollback()
    with store.read() as conn:
        again = fhir_search.search_page(conn, "EpisodeOfCare", criteria, 10)
    assert again.resources == page.resources


def test_two_replicas_changing_one_shared_resource_at_once_both_commit(store: Store) -> None:
    """PostgreSQL: B reads the Patient and its index before A commits the same change, then waits on
    A's row lock. B's index rows are A's too: with the table's key they would be a unique-key error
    (before the key, a duplicate); they are skipped, and the index holds each row once."""
    if store.dialect != "postgresql":
        pytest.skip("SQLite has one writer at a time: no two transactions interleave")
    import threading
    import time

    patient = _patient(1)
    with store.transaction() as conn:
        fhir_repository.upsert_resources(conn, [patient], None, NOW)
    moved = dict(patient, identifier=[{"system": FNR, "value": "01010112345"}])
    b_done, errors = threading.Event(), []

    def replica_b() -> None:
        try:
            with store.transaction() as conn:
                conn.execute(text("SET application_name = 'replica-b'"))
                fhir_repository.upsert_resources(conn, [moved], None, NOW)
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            b_done.set()

    with store.transaction() as conn:
        fhir_repository.upsert_resources(conn, [moved], None, NOW)  # A: the row is locked until commit
        b = threading.Thread(target=replica_b)
        b.start()
        with store.read() as watch:  # until B waits on A's lock (no wall-clock wait in the outcome)
            for _ in range(500):
                # pg_stat_activity is read once per transaction and kept: without clearing it, a
                # first look before B got to its UPDATE never saw B wait (1 run in 6 failed so).
                watch.execute(text("SELECT pg_stat_clear_snapshot()"))
                waiting = watch.execute(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'replica-b' "
                    "AND wait_event_type = 'Lock'")).scalar_one()
                if waiting or b_done.is_set():
                    break
                time.sleep(0.01)
        assert waiting, f"replica B never waited on A's row lock (B: {errors or 'no error'}, done: {b_done.is_set()})"
    b.join(30)
    assert not errors, errors
    rows = _search_index_rows(store)
    assert len(rows) == len(set(rows))
    assert ("Patient", "p1", "identifier", "01010112345") in rows
    assert ("Patient", "p1", "identifier", f"{1:011d}") not in rows
    with store.read() as conn:
        stored = fhir_repository.read_resource(conn, "Patient", "p1")
    assert stored is not None and stored.resource["identifier"] == moved["identifier"]
