"""The history the repository writes, on both stores: a version per change (several in one batch
too), a deletion as a version with its tombstone, a resource made again going on from it; and the
type-level change feed read from its index, checked in the query plan (EXPLAIN on PostgreSQL,
EXPLAIN QUERY PLAN on SQLite)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, text

from forlop.storage import Store, migrations, schema
from services.pathway.adapters import fhir_history, fhir_repository
from tests.conftest import query_plan

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def _task(tid: str, status: str = "requested") -> dict:
    return {"resourceType": "Task", "id": tid, "status": status, "intent": "plan"}


def _versions(store: Store, rtype: str, rid: str) -> list[tuple[int, str]]:
    with store.read() as conn:
        page = fhir_history.instance_history(conn, rtype, rid, 100)
    return [(v.version_id, v.method) for v in page.versions]


def test_every_change_is_a_version_and_a_deletion_too(store: Store):
    patient = {"resourceType": "Patient", "id": "p1", "identifier": [{"value": "1"}]}
    with store.transaction() as conn:
        fhir_repository.upsert_resources(conn, [patient, _task("t1"), _task("t2")], "dips:P1", NOW)
        # two pathways of one batch change the shared Patient: two versions
        fhir_repository.upsert_many(conn, [("dips:P2", [dict(patient, gender="male")]),
                                           ("dips:P3", [dict(patient, gender="female")])], NOW + timedelta(1))
    assert _versions(store, "Patient", "p1") == [(3, "PUT"), (2, "PUT"), (1, "POST")]
    with store.transaction() as conn:
        fhir_repository.upsert_resources(conn, [_task("t1", "completed")], "dips:P1", NOW + timedelta(2))
    assert _versions(store, "Task", "t2") == [(2, "DELETE"), (1, "POST")]
    with store.read() as conn:
        gone = fhir_history.deletion(conn, "Task", "t2")
        assert gone is not None and gone.version_id == 2 and gone.updated_at == NOW + timedelta(2)
        assert fhir_history.read_version(conn, "Task", "t2", 1).resource == _task("t2")
    with store.transaction() as conn:  # made again: its versions go on, the tombstone goes
        fhir_repository.upsert_resources(conn, [_task("t1", "completed"), _task("t2")], "dips:P1", NOW + timedelta(3))
    assert _versions(store, "Task", "t2") == [(3, "PUT"), (2, "DELETE"), (1, "POST")]
    with store.read() as conn:
        assert fhir_history.deletion(conn, "Task", "t2") is None
        assert fhir_repository.read_resource(conn, "Task", "t2").version_id == 3
        # nothing changed: no version
        assert conn.execute(select(func.count()).select_from(schema.fhir_history)).scalar_one() == 3 + 2 + 3  # Patient, t1, t2


def test_the_migration_keeps_the_current_versions(store: Store):
    with store.transaction() as conn:
        fhir_repository.upsert_resources(conn, [_task("t1")], "dips:P1", NOW)
        fhir_repository.upsert_resources(conn, [_task("t1", "completed")], "dips:P1", NOW + timedelta(1))
        conn.execute(text("DROP TABLE fhir_history"))
        conn.execute(text("DROP TABLE fhir_deleted"))
        conn.execute(schema.schema_migrations.delete().where(schema.schema_migrations.c.version == 20))
    assert store.migrate() == [20]
    assert _versions(store, "Task", "t1") == [(2, "PUT")]  # the earlier one was never kept


def test_type_history_pages_by_keyset_newest_first(store: Store):
    with store.transaction() as conn:
        for i in range(7):
            fhir_repository.upsert_resources(conn, [_task(f"t{i % 3}", f"s{i}")], None, NOW + timedelta(minutes=i // 2))
    seen, after = [], None
    with store.read() as conn:
        while True:
            page = fhir_history.type_history(conn, "Task", 2, since=NOW + timedelta(minutes=1), after=after)
            seen += [(v.updated_at, v.id, v.version_id) for v in page.versions]
            if not page.more:
                break
            last = page.versions[-1]
            after = (last.updated_at, last.id, last.version_id)
    assert seen == sorted(seen, reverse=True) and len(seen) == len(set(seen)) == 5
    assert min(at for at, _, _ in seen) == NOW + timedelta(minutes=1)


def test_the_change_feed_reads_its_index(store: Store):
    """`_since` and the paging position are a range of ix_fhir_history_since, read in its order (no sort)."""
    statement = fhir_history.type_history_statement("Task", 51, NOW, (NOW + timedelta(days=1), "t9", 3))
    sql = str(statement.compile(dialect=store.engine.dialect, compile_kwargs={"literal_binds": True}))
    with store.read() as conn:
        if store.dialect == "postgresql":  # an empty table would be scanned anyway: is the index usable?
            conn.execute(text("SET LOCAL enable_seqscan = off"))
        plan = query_plan(conn, sql)
    assert "ix_fhir_history_since" in plan, plan
    if store.dialect == "sqlite":
        assert "last_updated>" in plan.replace(" ", "") or "last_updated<" in plan.replace(" ", ""), plan
        assert "TEMP B-TREE" not in plan, plan
    else:
        assert "Index Cond" in plan and "last_updated >=" in plan, plan
        assert "Sort" not in plan.replace("Sort Key", ""), plan
    assert 20 in {v for v, _, _ in migrations.MIGRATIONS}


def test_a_deletion_keeps_its_pathway_and_the_migration_finds_it_for_older_ones(store: Store):
    episode = {"resourceType": "EpisodeOfCare", "id": "e1", "status": "active"}
    with store.transaction() as conn:
        fhir_repository.upsert_resources(conn, [episode, dict(_task("t1"), focus={"reference": "EpisodeOfCare/e1"})],
                                         "dips:P1", NOW)
        fhir_repository.upsert_resources(conn, [episode], "dips:P1", NOW + timedelta(1))  # t1 withdrawn
    fd = schema.fhir_deleted
    with store.transaction() as conn:
        assert conn.execute(select(fd.c.pathway_key).where(fd.c.id == "t1")).scalar_one() == "dips:P1"
        # as a database written before step 36 holds it
        conn.execute(fd.update().values(pathway_key=None))
        conn.execute(schema.schema_migrations.delete().where(schema.schema_migrations.c.version == 36))
    assert store.migrate() == [36]
    with store.read() as conn:
        assert conn.execute(select(fd.c.pathway_key).where(fd.c.id == "t1")).scalar_one() == "dips:P1"
