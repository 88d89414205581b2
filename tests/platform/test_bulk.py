"""Batch writes (`forlop.storage.bulk`): the same rows on both stores as SQLAlchemy's executemany."""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import insert, select

from forlop.storage import Store, schema
from forlop.storage.bulk import among, delete_rows, insert_many, insert_rows, rows_by_key, update_many

NOW = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)


def _event(i: int, pathway: str) -> dict:
    return {"event_id": f"dips:e{i}", "pathway_key": pathway, "kind": "milestone",
            "occurred_on": date(2026, 10, i % 28 + 1), "recorded_at": NOW, "stored_at": NOW,
            "event": {"n": i, "text": 'a "quoted" \\ value', "nested": {"list": [1, None]}}}


def test_insert_many_keeps_order_values_and_defaults(store: Store) -> None:
    o = schema.outbox
    records = [{"topic": "t", "record_key": f"k{i % 3}", "value": f'{{"n": {i}, "s": "\\"x\\""}}',
                "created_at": NOW} for i in range(700)]  # no "headers": its Python default applies
    with store.transaction() as conn:
        insert_many(conn, o, records)
        insert_many(conn, o, [])
    with store.read() as conn:
        rows = conn.execute(select(o).order_by(o.c.id)).all()
    # ids are drawn in the rows' order: the relay publishes by id, per-patient order depends on it
    assert [r.value for r in rows] == [r["value"] for r in records]
    assert [r.record_key for r in rows] == [r["record_key"] for r in records]
    assert all(r.headers == {} and r.published_at is None for r in rows)
    assert rows[0].created_at.replace(tzinfo=rows[0].created_at.tzinfo or UTC) == NOW


def test_insert_many_reads_back_as_an_executemany_wrote(store: Store) -> None:
    e = schema.pathway_events
    with store.transaction() as conn:
        insert_many(conn, e, [_event(i, "p1") for i in range(5)])
        conn.execute(insert(e), [_event(i, "p2") for i in range(5, 10)])
    with store.read() as conn:
        rows = {r.event_id: r for r in conn.execute(select(e))}
    for i in range(10):
        row, want = rows[f"dips:e{i}"], _event(i, "p1" if i < 5 else "p2")
        assert (row.pathway_key, row.kind, row.occurred_on, row.event) == (
            want["pathway_key"], want["kind"], want["occurred_on"], want["event"])


def test_insert_many_stores_the_very_values_sqlalchemy_stores(store: Store) -> None:
    """Read back raw, through the driver: the same text for datetimes (SQLite keeps them as text,
    and queries compare it), JSON (None as JSON null) and the Python-side defaults."""
    m = schema.messages

    def message(i: int) -> dict:
        return {"id": f"m{i}", "dedupe_key": f"k{i}", "pathway_key": "p", "pathway_id": "1", "registration_id": None,
                "trigger": "decision", "role": "gp", "recipient_her_id": None, "message_type": "DIALOG_HELSEFAGLIG",
                "status": "held", "status_reason": "no GP", "details": {"event": {"n": i % 2, "æøå": None}, "list": []},
                "created_at": NOW, "next_attempt_at": None, "xml": None}  # no "attempts": its default applies

    with store.transaction() as conn:
        insert_many(conn, m, [message(1), message(2)])
        conn.execute(insert(m), [message(3), message(4)])
        insert_many(conn, schema.receipts, [])
    with store.read() as conn:
        raw = {row[0]: row[1:] for row in conn.exec_driver_sql(
            "SELECT id, attempts, details, created_at, next_attempt_at, xml, registration_id FROM messages")}
    assert raw["m1"] == raw["m3"] and raw["m2"] == raw["m4"] and raw["m1"] != raw["m2"]
    assert raw["m1"][0] == 0


def test_update_many_sets_each_row_by_its_key_and_the_last_row_of_a_key_wins(store: Store) -> None:
    a = schema.alerts
    base = {"milestone_key": "m", "to_status": "due_soon", "emitted_at": NOW}
    with store.transaction() as conn:
        conn.execute(insert(a), [{"alert_key": f"a{i}", "pathway_key": f"p{i}", **base} for i in range(4)])
        update_many(conn, a, "alert_key", [
            {"k_alert_key": "a1", "to_status": "overdue", "milestone_key": "m1"},
            {"k_alert_key": "a2", "to_status": "overdue", "milestone_key": "m2"},
            {"k_alert_key": "a2", "to_status": "met", "milestone_key": "m2b"},
            {"k_alert_key": "missing", "to_status": "overdue", "milestone_key": "x"},
        ])
    with store.read() as conn:
        got = {r.alert_key: (r.to_status, r.milestone_key, r.pathway_key) for r in conn.execute(select(a))}
    assert got == {"a0": ("due_soon", "m", "p0"), "a1": ("overdue", "m1", "p1"),
                   "a2": ("met", "m2b", "p2"), "a3": ("due_soon", "m", "p3")}


def test_insert_rows_skips_existing_keys_and_among_matches_a_key_list(store: Store) -> None:
    idx = schema.fhir_search_index
    rows = [("Task", f"t{i}", "status", "ready" if i % 2 else 'with "quotes"') for i in range(6)]
    with store.transaction() as conn:
        insert_rows(conn, idx, rows[:4])
        insert_rows(conn, idx, rows, skip_existing=True)
    with store.read() as conn:
        assert sorted(conn.execute(select(idx)).all()) == sorted(rows)
        wanted = ["t1", "t4", "nope"]
        found = conn.execute(select(idx.c.id).where(among(idx.c.id, wanted, conn.dialect.name))).scalars().all()
        assert sorted(found) == ["t1", "t4"]
        assert conn.execute(select(idx.c.id).where(among(idx.c.id, [], conn.dialect.name))).all() == []


def test_insert_many_skipping_existing_returns_only_the_rows_it_inserted(store: Store) -> None:
    r = schema.fhir_resources

    def resource(i: int, text: str) -> dict:
        return {"resource_type": "Patient", "id": f"p{i}", "pathway_key": None, "version_id": 1,
                "last_updated": NOW, "resource": {"resourceType": "Patient", "id": f"p{i}", "text": text}}

    with store.transaction() as conn:
        insert_many(conn, r, [resource(1, "first")])
        done = insert_many(conn, r, [resource(i, "second") for i in range(3)], skip_existing=True,
                           returning=("resource_type", "id"))
    assert sorted(tuple(row) for row in done) == [("Patient", "p0"), ("Patient", "p2")]
    with store.read() as conn:
        texts = {row.id: row.resource["text"] for row in conn.execute(select(r))}
    assert texts == {"p0": "second", "p1": "first", "p2": "second"}  # the row already there stands


def test_delete_rows_deletes_by_the_whole_key(store: Store) -> None:
    idx = schema.fhir_search_index
    rows = [("Task", f"t{i}", "status", v) for i in range(3) for v in ("ready", 'a "b"')]
    key = [idx.c.resource_type, idx.c.id, idx.c.param, idx.c.value]
    with store.transaction() as conn:
        insert_rows(conn, idx, rows)
        delete_rows(conn, idx, key, [("Task", "t1", "status", "ready"), ("Task", "t2", "status", 'a "b"'),
                                     ("Task", "t9", "status", "ready")])
        delete_rows(conn, idx, key, [])
    with store.read() as conn:
        left = sorted(tuple(row) for row in conn.execute(select(idx.c.resource_type, idx.c.id, idx.c.param,
                                                                 idx.c.value)))
    assert left == sorted(set(rows) - {("Task", "t1", "status", "ready"), ("Task", "t2", "status", 'a "b"')})


def test_rows_by_key_gives_the_pairs_asked_for_not_every_combination(store: Store) -> None:
    r = schema.fhir_resources
    rows = [{"resource_type": t, "id": i, "pathway_key": None, "version_id": 1, "last_updated": NOW,
             "resource": {"resourceType": t, "id": i}} for t in ("Patient", "Task") for i in ("a", "b")]
    with store.transaction() as conn:
        insert_many(conn, r, rows)
        found = sorted(tuple(row) for row in rows_by_key(conn, r, [r.c.resource_type, r.c.id],
                                                          [("Patient", "a"), ("Task", "b"), ("Task", "x")]))
    assert found == [("Patient", "a"), ("Task", "b")]  # not ("Patient", "b") nor ("Task", "a")
