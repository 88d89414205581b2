"""AppRecs: one row per AppRec however often it is delivered; one for a message never sent is kept,
not applied; a database that already holds duplicates is deduplicated by migration 11."""

from __future__ import annotations

from datetime import timedelta

from msgkit import NOW, payload
from sqlalchemy import func, insert, select, text

from forlop.storage import Store, schema
from services.messaging.adapters import repository
from services.messaging.adapters.apprec import build_apprec
from services.messaging.adapters.transport import DirectoryTransport
from services.messaging.handlers import Inbound, handle_apprec, handle_batch, handle_status_changed
from services.messaging.receipts import receipt_key
from services.messaging.relay import Relay


def _receipts(store: Store) -> list:
    with store.read() as conn:
        return conn.execute(select(schema.receipts).order_by(schema.receipts.c.id)).all()


def _by(store, key, role, trigger):
    with store.read() as conn:
        (row,) = [r for r in repository.rows_for_pathway(conn, key) if r["role"] == role and r["trigger"] == trigger]
    return row


class _NoMunicipalities:
    def municipality(self, kommunenummer: str) -> None:
        return None


def test_an_ok_apprec_for_a_message_never_sent_is_kept_and_changes_nothing(store, deps, examples):
    """A held message (its municipality unknown) and a queued one: an "ok" for either is `not-sent`."""
    events = examples["dips"]["PPR-1810111"]
    key = events[0].pathway_key
    known = deps.municipal
    deps.municipal = _NoMunicipalities()
    with store.transaction() as conn:
        handle_status_changed(conn, payload(events), NOW, deps)
    deps.municipal = known
    held = _by(store, key, "municipality", "evaluation")
    queued = _by(store, key, "gp", "decision")
    assert (held["status"], queued["status"]) == ("held", "queued")
    for row in (held, queued):
        with store.transaction() as conn:
            handle_apprec(conn, build_apprec(row["id"], "DIALOG_HELSEFAGLIG", "ok", NOW, f"r-{row['id']}"), NOW, deps)
    assert _by(store, key, "municipality", "evaluation")["status"] == "held"
    after = _by(store, key, "gp", "decision")
    assert after["status"] == "queued" and after["settled_at"] is None
    assert [(r.message_id, r.outcome) for r in _receipts(store)] == [(held["id"], "not-sent"), (queued["id"], "not-sent")]


def test_a_redelivered_apprec_is_stored_once(store, deps, examples, tmp_path):
    events = examples["dips"]["PPR-4745328"]
    with store.transaction() as conn:
        handle_status_changed(conn, payload(events), NOW, deps)
    Relay(store, DirectoryTransport(tmp_path / "out", tmp_path / "in"), deps).run_once()
    row = _by(store, events[0].pathway_key, "gp", "decision")
    ok = build_apprec(row["id"], "DIALOG_HELSEFAGLIG", "ok", NOW, "apprec-1")
    garbage = b"<not-an-apprec"
    without_id = ok.replace(b"<Id>apprec-1</Id>", b"")
    for _ in range(3):  # three deliveries of each, one batch each, and all of them in one batch
        for raw in (ok, garbage, without_id):
            with store.transaction() as conn:
                handle_apprec(conn, raw, NOW, deps)
    with store.transaction() as conn:
        handle_batch(conn, [Inbound(apprec=raw) for raw in (ok, garbage, without_id) * 2], NOW, deps)
    rows = _receipts(store)
    assert [(r.outcome, r.dedupe_key) for r in rows] == [
        ("applied", "id:apprec-1"), ("invalid", rows[1].dedupe_key), ("already-settled", rows[2].dedupe_key)]
    assert rows[1].dedupe_key.startswith("sha256:") and rows[2].dedupe_key.startswith("sha256:")
    assert _by(store, events[0].pathway_key, "gp", "decision")["status"] == "acknowledged"

    # The same AppRec Id with other content: kept beside the first (by its content), not applied.
    conflicting = build_apprec(row["id"], "DIALOG_HELSEFAGLIG", "rejected", NOW, "apprec-1", [("E21", "x")])
    with store.transaction() as conn:
        handle_apprec(conn, conflicting, NOW, deps)
        handle_apprec(conn, conflicting, NOW, deps)
    rows = _receipts(store)
    assert [r.outcome for r in rows] == ["applied", "invalid", "already-settled", "conflicting-duplicate"]
    assert _by(store, events[0].pathway_key, "gp", "decision")["status"] == "acknowledged"


def _before_migration_11(store: Store) -> None:
    """Take a migrated database back to version 10's receipts (no dedupe key) and no history versions."""
    with store.transaction() as conn:
        conn.execute(text("DROP INDEX ux_receipts_dedupe_key"))
        conn.execute(text("ALTER TABLE receipts DROP COLUMN dedupe_key"))
        conn.execute(text("DROP TABLE messaging_pathways"))
        conn.execute(schema.schema_migrations.delete().where(schema.schema_migrations.c.version == 11))


def test_migration_11_removes_stored_duplicates_and_keys_receipts(store):
    _before_migration_11(store)
    at = NOW
    old = [  # as release 10 stored them: the same AppRec three times, an unparseable twice, and a conflict
        ("m1", "a1", "<AppRec>1</AppRec>"), ("m1", "a1", "<AppRec>1</AppRec>"), ("m1", "a1", "<AppRec>1</AppRec>"),
        (None, None, "<garbage"), (None, None, "<garbage"), ("m2", "a2", "<AppRec>2</AppRec>"),
        ("m2", "a2", "<AppRec>2, other content</AppRec>"),
    ]
    with store.transaction() as conn:
        for i, (msg, apprec, raw) in enumerate(old):
            conn.execute(text("INSERT INTO receipts (message_id, apprec_msg_id, status, errors, outcome, raw, "
                              "received_at) VALUES (:m, :a, 'ok', '[]', 'applied', :raw, :at)"),
                         {"m": msg, "a": apprec, "raw": raw, "at": at + timedelta(seconds=i)})
    assert store.migrate() == [11]
    rows = _receipts(store)
    assert [(r.message_id, r.raw) for r in rows] == [
        ("m1", "<AppRec>1</AppRec>"), (None, "<garbage"), ("m2", "<AppRec>2</AppRec>"),
        ("m2", "<AppRec>2, other content</AppRec>")]
    assert [r.dedupe_key for r in rows] == [
        "id:a1", receipt_key(None, "<garbage"), "id:a2", receipt_key(None, "<AppRec>2, other content</AppRec>")]
    with store.transaction() as conn:  # the key is unique now
        stored = repository.insert_receipt(conn, message_id="m1", apprec_msg_id="a1", status="ok", errors=[],
                                           outcome="applied", raw="<AppRec>1</AppRec>", received_at=at,
                                           dedupe_key="id:a1")
        assert stored is False
        conn.execute(insert(schema.messaging_pathways).values(pathway_key="k", history_version=1, updated_at=at))
        assert conn.execute(select(func.count()).select_from(schema.receipts)).scalar_one() == 4
