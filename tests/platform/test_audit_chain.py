"""The audit trail's storage (forlop.audit) on both stores: the hash chain and its verification,
tampering detected, retention that keeps the chain verifiable, appends from concurrent writers."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from forlop import audit
from forlop.audit import AuditRecord
from forlop.fhir.ids import patient_id
from forlop.storage import Store

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
NID = "15907918537"  # synthetic


def record(at: datetime, *patients: str, client: str = "ehr-a", status: int = 200) -> AuditRecord:
    return AuditRecord(at, client, client, "983974899", None, None, "GET", "/fhir/EpisodeOfCare",
                       "/fhir/EpisodeOfCare", "TREAT", status, tuple(patient_id(p) for p in patients),
                       ("EpisodeOfCare/x",), "c-1")


def _drop_guards(conn, store: Store) -> None:  # noqa: ANN001 - a SQLAlchemy Connection
    """What an intruder with the database owner's rights would do first."""
    if store.dialect == "postgresql":
        conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER USER"))
    else:
        conn.execute(text("DROP TRIGGER audit_log_no_update"))
        conn.execute(text("DROP TRIGGER audit_log_no_delete"))


def test_the_chain_verifies_and_each_kind_of_tampering_is_found(store: Store):
    for i in range(6):
        audit.write(store, record(T0 + timedelta(minutes=i), NID))
    with store.read() as conn:
        assert audit.verify(conn) == audit.Verified(6)
        ids = [s.id for s in audit.all_records(conn)]
    tampering = [
        (f"UPDATE audit_log SET record = replace(record, 'ehr-a', 'ehr-b') WHERE id = {ids[2]}", ids[2], "content"),
        (f"DELETE FROM audit_log WHERE id = {ids[3]}", ids[4], "prev_hash"),
        (f"UPDATE audit_log SET recorded_at = recorded_at - interval '1 day' WHERE id = {ids[1]}"
         if store.dialect == "postgresql" else
         f"UPDATE audit_log SET recorded_at = '2020-01-01 00:00:00.000000' WHERE id = {ids[1]}", ids[1], "recorded_at"),
    ]
    for statement, broken_at, reason in tampering:
        with store.transaction() as conn:
            _drop_guards(conn, store)
            conn.execute(text(statement))
            checked = audit.verify(conn)
            assert not checked.ok and checked.broken_at == broken_at and reason in (checked.reason or "")
            conn.rollback()  # each kind on the intact chain


def test_a_rewritten_record_with_a_recomputed_hash_breaks_the_next_link(store: Store):
    for i in range(3):
        audit.write(store, record(T0 + timedelta(minutes=i), NID))
    with store.transaction() as conn:
        first = next(audit.all_records(conn))
        _drop_guards(conn, store)
        forged = AuditRecord.parse(first.record.canonical().replace("ehr-a", "ehr-z"))
        prev = conn.execute(text(f"SELECT prev_hash FROM audit_log WHERE id = {first.id}")).scalar()
        conn.execute(text("UPDATE audit_log SET record = :r, hash = :h WHERE id = :i"),
                     {"r": forged.canonical(), "h": audit.chain_hash(prev, forged.canonical()), "i": first.id})
    with store.read() as conn:
        checked = audit.verify(conn)
    assert checked.broken_at == first.id + 1 and "prev_hash" in (checked.reason or "")


def test_retention_removes_a_prefix_and_the_rest_still_verifies(store: Store):
    for day in range(10):
        audit.write(store, record(T0 + timedelta(days=day), NID, "01017000027" if day % 2 else NID))
    assert audit.prune(store, T0 + timedelta(days=10), retention_days=0) == 0  # 0: keep everything
    removed = audit.prune(store, T0 + timedelta(days=10), retention_days=4)
    assert removed == 6
    with store.read() as conn:
        kept = list(audit.all_records(conn))
        assert [s.record.recorded for s in kept] == [T0 + timedelta(days=d) for d in range(6, 10)]
        assert audit.verify(conn) == audit.Verified(4)
        assert len(audit.records_for(conn, patient_id(NID))) == 4
    # Appends go on from the kept chain; a second pass, then one that removes all, then a new record.
    audit.write(store, record(T0 + timedelta(days=11), NID))
    assert audit.prune(store, T0 + timedelta(days=30), retention_days=4) == 5
    audit.write(store, record(T0 + timedelta(days=31), NID))
    with store.read() as conn:
        assert audit.verify(conn) == audit.Verified(1)
    # A checkpoint releases only the rows below it: the kept ones still cannot be deleted.
    with pytest.raises(Exception, match="append-only"), store.transaction() as conn:
        if store.dialect == "postgresql":
            conn.execute(text("SET LOCAL forlop.audit_retention = 'on'"))
        conn.execute(text("DELETE FROM audit_log"))


def test_the_kept_chain_is_checked_from_its_checkpoint(store: Store):
    for day in range(4):
        audit.write(store, record(T0 + timedelta(days=day), NID))
    audit.prune(store, T0 + timedelta(days=4), retention_days=2)
    with store.transaction() as conn:  # the first kept record removed as well, behind the pass's back
        _drop_guards(conn, store)
        conn.execute(text("DELETE FROM audit_log WHERE id = (SELECT MIN(id) FROM audit_log)"))
        checked = audit.verify(conn)
    assert not checked.ok and "prev_hash" in (checked.reason or "")


@pytest.mark.postgres
def test_concurrent_writers_on_postgresql_form_one_chain(postgres_store: Store):
    """Eight writers, each with its own engine (as API processes have), appending at once."""
    url = postgres_store.url.render_as_string(hide_password=False)
    stores = [Store(url, pool_size=1) for _ in range(8)]
    start = threading.Barrier(len(stores))
    errors: list[BaseException] = []

    def writer(n: int, store: Store) -> None:
        try:
            start.wait()
            for i in range(25):
                audit.write(store, record(T0 + timedelta(seconds=i), NID, client=f"ehr-{n}"))
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n, s)) for n, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for s in stores:
        s.dispose()
    assert not errors
    with postgres_store.read() as conn:
        assert audit.verify(conn) == audit.Verified(200)
        clients = {s.record.client_id for s in audit.all_records(conn)}
    assert clients == {f"ehr-{n}" for n in range(8)}


def test_without_the_lock_concurrent_appends_would_fork_the_chain(store: Store):
    """The check that verify() would catch what the lock prevents: two records on the same head."""
    audit.write(store, record(T0, NID))
    with store.transaction() as conn:
        head = conn.execute(text("SELECT hash FROM audit_log")).scalar()
        _drop_guards(conn, store)
        canonical = record(T0, NID, client="ehr-b").canonical()
        for _ in range(2):
            conn.execute(text("INSERT INTO audit_log (recorded_at, record, prev_hash, hash) "
                              "VALUES (:t, :r, :p, :h)"),
                         {"t": T0 if store.dialect == "postgresql" else "2026-01-05 09:00:00.000000",
                          "r": canonical, "p": head, "h": audit.chain_hash(head, canonical)})
        checked = audit.verify(conn)
    assert not checked.ok and checked.records == 2


@pytest.mark.postgres
def test_on_postgresql_only_the_retention_pass_may_delete_released_rows(postgres_store: Store):
    store = postgres_store
    for day in range(3):
        audit.write(store, record(T0 + timedelta(days=day), NID))
    with store.transaction() as conn:
        conn.execute(text("INSERT INTO audit_checkpoints (created_at, first_kept_id, anchor_hash, removed) "
                          "SELECT now(), MAX(id), 'x', 0 FROM audit_log"))
    with pytest.raises(Exception, match="append-only"), store.transaction() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE id = (SELECT MIN(id) FROM audit_log)"))  # released, but
    with store.transaction() as conn:  # not said to be the retention pass; now it is
        conn.execute(text("SET LOCAL forlop.audit_retention = 'on'"))
        conn.execute(text("DELETE FROM audit_patients WHERE audit_id = (SELECT MIN(id) FROM audit_log)"))
        deleted = conn.execute(text("DELETE FROM audit_log WHERE id = (SELECT MIN(id) FROM audit_log)")).rowcount
    assert deleted == 1
