"""The data layer behaves the same on SQLite and PostgreSQL: migrations, transactions, FHIR search."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import delete, func, insert, inspect, select, text

from forlop.storage import SchemaNotReady, Store, migrations, schema
from services.pathway.adapters import fhir_repository, fhir_search
from tests.conftest import query_plan

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def test_migrations_are_recorded_and_idempotent(store: Store):
    assert store.migrate() == []  # the fixture applied them already
    with store.read() as conn:
        assert migrations.applied_versions(conn) == {v for v, _, _ in migrations.MIGRATIONS}
    store.check_schema()


def test_check_schema_refuses_an_empty_database(tmp_path):
    empty = Store(f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(SchemaNotReady, match="forlop migrate"):
        empty.check_schema()


def test_transaction_rolls_back_state_and_outbox_together(store: Store):
    with pytest.raises(RuntimeError), store.transaction() as conn:
        conn.execute(
            insert(schema.inbound_events).values(
                event_id="dips:1", source="dips", pathway_key="dips:P1", received_at=NOW, raw="{}"
            )
        )
        conn.execute(insert(schema.outbox).values(topic="t", record_key="k", value="v", headers={}, created_at=NOW))
        raise RuntimeError("crash before commit")
    with store.read() as conn:
        assert conn.execute(select(func.count()).select_from(schema.inbound_events)).scalar_one() == 0
        assert conn.execute(select(func.count()).select_from(schema.outbox)).scalar_one() == 0


def _episode(eid: str, status: str, org: str, patient: str = "p1") -> dict:
    return {
        "resourceType": "EpisodeOfCare",
        "id": eid,
        "identifier": [{"system": "https://forlop.no/fhir/NamingSystem/dips-pathway-id", "value": f"PPR-{eid}"}],
        "status": status,
        "type": [{"coding": [{"system": "urn:oid:2.16.578.1.12.4.1.1.9321", "code": "D11"}]}],
        "patient": {"reference": f"Patient/{patient}"},
        "managingOrganization": {"reference": f"Organization/{org}"},
    }


PATIENT = {
    "resourceType": "Patient",
    "id": "p1",
    "identifier": [{"system": "urn:oid:2.16.578.1.12.4.1.4.1", "value": "13837033319"}],
}


def test_fhir_upsert_versions_only_on_change_and_search(store: Store):
    with store.transaction() as conn:
        assert fhir_repository.upsert_resources(conn, [PATIENT, _episode("e1", "waitlist", "o1")], "dips:P1", NOW) == 2
        fhir_repository.upsert_resources(conn, [PATIENT, _episode("e2", "active", "o2")], "dips:P2", NOW)
    with store.transaction() as conn:  # same content: no new version
        assert fhir_repository.upsert_resources(conn, [PATIENT, _episode("e1", "waitlist", "o1")], "dips:P1", NOW) == 0
    with store.transaction() as conn:
        assert fhir_repository.upsert_resources(conn, [PATIENT, _episode("e1", "active", "o1")], "dips:P1", NOW) == 1
    with store.read() as conn:
        e1 = fhir_repository.read_resource(conn, "EpisodeOfCare", "e1")
        assert e1 is not None and e1.version_id == 2 and e1.with_meta()["meta"]["versionId"] == "2"
        total, found = fhir_search.search(conn, "EpisodeOfCare", [("status", ["active"])], 10, 0)
        assert total == 2 and [r.resource["id"] for r in found] == ["e1", "e2"]
        total, _ = fhir_search.search(conn, "EpisodeOfCare", [("status", ["active"]), ("organization", ["o2"])], 10, 0)
        assert total == 1
        total, _ = fhir_search.search(
            conn, "EpisodeOfCare", [("patient.identifier", ["urn:oid:2.16.578.1.12.4.1.4.1|13837033319"])], 10, 0
        )
        assert total == 2
        total, page = fhir_search.search(conn, "EpisodeOfCare", [], 1, 1)
        assert total == 2 and [r.resource["id"] for r in page] == ["e2"]
        total, _ = fhir_search.search(conn, "EpisodeOfCare", [("identifier", ["PPR-e1"])], 10, 0)
        assert total == 1


def test_resources_no_longer_produced_for_a_pathway_are_removed(store: Store):
    task = {"resourceType": "Task", "id": "t1", "status": "requested", "focus": {"reference": "EpisodeOfCare/e1"}}
    with store.transaction() as conn:
        fhir_repository.upsert_resources(conn, [_episode("e1", "active", "o1"), task], "dips:P1", NOW)
    with store.transaction() as conn:
        fhir_repository.upsert_resources(conn, [_episode("e1", "active", "o1")], "dips:P1", NOW)
    with store.read() as conn:
        assert fhir_repository.read_resource(conn, "Task", "t1") is None
        assert fhir_search.search(conn, "Task", [("focus", ["EpisodeOfCare/e1"])], 10, 0)[0] == 0


def _message_indexes(store: Store) -> set[str]:
    with store.read() as conn:
        return {i["name"] for i in inspect(conn).get_indexes("messages")}


def test_migration_7_reads_a_pathways_held_messages_by_pathway_and_status(store: Store):
    with store.transaction() as conn:  # the indexes as a database of before step 7 had them
        conn.execute(text("DROP INDEX ix_messages_pathway_status"))
        conn.execute(text("CREATE INDEX ix_messages_pathway_key ON messages (pathway_key)"))
        conn.execute(text("CREATE INDEX ix_messages_status ON messages (status)"))
        conn.execute(delete(schema.schema_migrations).where(schema.schema_migrations.c.version == 7))
    assert store.migrate() == [7]
    assert {"ix_messages_due", "ix_messages_pathway_status"} <= _message_indexes(store)
    assert not {"ix_messages_pathway_key", "ix_messages_status"} & _message_indexes(store)
    if store.dialect == "sqlite":  # PostgreSQL plans by its statistics
        m = schema.messages
        query = select(m.c.id).where(m.c.pathway_key == "dips:P1", m.c.status == "held")
        sql = str(query.compile(dialect=store.engine.dialect, compile_kwargs={"literal_binds": True}))
        with store.read() as conn:
            plan = query_plan(conn, sql)
        # not every held message of every pathway (the status index it took before)
        assert "ix_messages_pathway_status (pathway_key=? AND status=?)" in plan, plan


def _pathway_row(key: str, overdue: int) -> dict:
    return {"pathway_key": key, "source": "dips", "pathway_id": key, "pathway_type": "PHV", "national_id": "00000000000",
            "municipality": "0301", "unit_her_id": "1", "episode_status": "active", "overdue_milestones": overdue,
            "status": {}, "patient": {}, "history_hash": "h", "derived_at": NOW, "updated_at": NOW}


def test_migration_9_the_overdue_gauge_reads_only_the_pathways_with_overdue_milestones(store: Store):
    from prometheus_client import REGISTRY

    from forlop.metrics import overdue_milestones_query, refresh_gauges

    with store.transaction() as conn:  # a database of before step 9
        conn.execute(text("DROP INDEX ix_pathways_overdue"))
        conn.execute(delete(schema.schema_migrations).where(schema.schema_migrations.c.version == 9))
        conn.execute(insert(schema.pathways), [_pathway_row("dips:P1", 0), _pathway_row("dips:P2", 2),
                                               _pathway_row("dips:P3", 3)])
    assert store.migrate() == [9]
    assert "ix_pathways_overdue" in {i["name"] for i in inspect(store.engine).get_indexes("pathways")}
    refresh_gauges(store, NOW)
    assert REGISTRY.get_sample_value("forlop_milestones_overdue") == 5
    sql = str(overdue_milestones_query().compile(dialect=store.engine.dialect, compile_kwargs={"literal_binds": True}))
    with store.read() as conn:
        if store.dialect == "postgresql":  # on a table this small it would scan it anyway: can it use the index at all?
            conn.execute(text("SET LOCAL enable_seqscan = off"))
        plan = query_plan(conn, sql)
    assert "ix_pathways_overdue" in plan, plan  # not a scan of every pathway (0.42 s over 203k on SQLite)


def test_migration_10_keeps_the_dead_letters_and_events_of_before(store: Store):
    """A database of before step 10: its dead letters become ingest's, its events have no fingerprint."""
    added = {"dead_letters": ["stage", "raw_bytes", "error", "topic", "kafka_partition", "kafka_offset", "headers",
                              "outbox_id"],
             "inbound_events": ["fingerprint"], "outbox": ["parked_at", "park_reason"]}
    with store.transaction() as conn:
        conn.execute(text("DROP INDEX ix_dead_letters_record"))
        conn.execute(text("DROP INDEX ix_dead_letters_outbox"))
        for table, columns in added.items():
            for column in columns:
                conn.execute(text(f"ALTER TABLE {table} DROP COLUMN {column}"))
        conn.execute(delete(schema.schema_migrations).where(schema.schema_migrations.c.version == 10))
        conn.execute(text("INSERT INTO dead_letters (source, origin, raw, reasons, status, received_at) "
                          "VALUES ('esp', 'kafka:ehr.esp/0@3', '{}', '[]', 'open', :t)"), {"t": NOW})
        conn.execute(text("INSERT INTO inbound_events (event_id, source, pathway_key, received_at, raw) "
                          "VALUES ('esp:1', 'esp', 'esp:P', :t, '{}')"), {"t": NOW})
    assert store.migrate() == [10]
    assert store.migrate() == []
    for table, columns in added.items():
        assert set(columns) <= {c["name"] for c in inspect(store.engine).get_columns(table)}
    with store.read() as conn:
        old = conn.execute(select(schema.dead_letters)).one()
        assert (old.stage, old.source, old.raw_bytes, old.topic) == ("ingest", "esp", None, None)
        assert conn.execute(select(schema.inbound_events.c.fingerprint)).scalar_one() is None
    indexes = {i["name"] for i in inspect(store.engine).get_indexes("dead_letters")}
    assert {"ix_dead_letters_record", "ix_dead_letters_outbox"} <= indexes
