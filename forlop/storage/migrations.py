"""Schema migrations: an ordered list, each applied once and recorded in schema_migrations.

A new version appends a step; steps never change once released. Works the same on
SQLite and PostgreSQL because each step is expressed with SQLAlchemy.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Connection,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    bindparam,
    case,
    delete,
    exists,
    func,
    insert,
    inspect,
    literal,
    select,
    text,
    update,
)
from sqlalchemy.types import TypeEngine

from forlop.storage import schema

Step = Callable[[Connection], None]


def _initial(conn: Connection) -> None:
    tables = [t for t in schema.metadata.sorted_tables if t.name != "schema_migrations"]
    schema.metadata.create_all(conn, tables=tables)


def _refresh_queue(conn: Connection) -> None:
    schema.pathway_refresh_queue.create(conn, checkfirst=True)  # a new database has it from step 1


_CREATE_BY_RESOURCE = ("CREATE INDEX IF NOT EXISTS ix_fhir_search_by_resource "
                       "ON fhir_search_index (resource_type, id, param, value)")  # steps 3 and 6; gone in 8


def _search_index_by_resource(conn: Connection) -> None:
    conn.execute(text("DROP INDEX IF EXISTS ix_fhir_search_resource"))  # its prefix (resource_type, id)
    conn.execute(text(_CREATE_BY_RESOURCE))


def _search_index_match(conn: Connection) -> None:
    conn.execute(text("DROP INDEX IF EXISTS ix_fhir_search"))  # its prefix (resource_type, param, value)
    conn.execute(text("DROP INDEX IF EXISTS ix_pathways_unit_her_id"))  # the prefix (unit_her_id)
    next(i for i in schema.pathways.indexes if i.name == "ix_pathways_unit_status").create(conn, checkfirst=True)
    if not _search_index_keyed(conn):  # a table made before step 6 (since then its key is this order)
        # SQL, not an Index of the schema's table (that would add it to the table for good)
        conn.execute(text("CREATE INDEX IF NOT EXISTS ix_fhir_search_match "
                          "ON fhir_search_index (resource_type, param, value, id)"))


def _search_index_references_once(conn: Connection) -> None:
    # A reference was indexed twice, as "Type/id" and as the bare id; searches now ask for "Type/id".
    # The parameters are written out (search_index.REFERENCE_TARGETS of this release): a released step
    # never changes, and storage does not import a service.
    idx = schema.fhir_search_index
    for resource_type, param in (("EpisodeOfCare", "patient"), ("EpisodeOfCare", "organization"),
                                 ("Task", "focus"), ("Task", "patient"), ("Task", "owner")):
        conn.execute(delete(idx).where(idx.c.resource_type == resource_type, idx.c.param == param,
                                       idx.c.value.not_like("%/%")))


def _search_index_keyed(conn: Connection) -> bool:
    return bool(inspect(conn).get_pk_constraint("fhir_search_index")["constrained_columns"])


def _search_index_primary_key(conn: Connection) -> None:
    """The search index keyed by (resource_type, param, value, id); on SQLite the table is that key's
    B-tree (WITHOUT ROWID), rebuilt here in key order; a row that was there twice is kept once."""
    if not _search_index_keyed(conn):
        if conn.dialect.name == "sqlite":
            new = schema.fhir_search_index.to_metadata(MetaData(), name="fhir_search_index_keyed")
            new.indexes.clear()  # its index's name is the old table's until that is dropped
            new.create(conn)
            conn.execute(text(
                "INSERT OR IGNORE INTO fhir_search_index_keyed (resource_type, id, param, value) "
                "SELECT resource_type, id, param, value FROM fhir_search_index ORDER BY resource_type, param, value, id"
            ))
            conn.execute(text("DROP TABLE fhir_search_index"))
            conn.execute(text("ALTER TABLE fhir_search_index_keyed RENAME TO fhir_search_index"))
        else:
            conn.execute(text(
                "DELETE FROM fhir_search_index a USING fhir_search_index b WHERE a.ctid < b.ctid "
                "AND (a.resource_type, a.id, a.param, a.value) = (b.resource_type, b.id, b.param, b.value)"
            ))
            conn.execute(text("ALTER TABLE fhir_search_index ADD CONSTRAINT pk_fhir_search_index "
                              "PRIMARY KEY (resource_type, param, value, id)"))
    conn.execute(text("DROP INDEX IF EXISTS ix_fhir_search_match"))  # the key's order, now the key's own index
    conn.execute(text(_CREATE_BY_RESOURCE))


def _search_index_without_by_resource(conn: Connection) -> None:
    # A resource's rows are worked out from its JSON and deleted by the key (fhir_repository.upsert_many).
    conn.execute(text("DROP INDEX IF EXISTS ix_fhir_search_by_resource"))


def _messages_by_pathway_and_status(conn: Connection) -> None:
    conn.execute(text("DROP INDEX IF EXISTS ix_messages_status"))  # the prefix of ix_messages_due
    conn.execute(text("DROP INDEX IF EXISTS ix_messages_pathway_key"))  # the prefix of the new one
    conn.execute(text("CREATE INDEX IF NOT EXISTS ix_messages_pathway_status ON messages (pathway_key, status)"))


def _pathways_overdue(conn: Connection) -> None:
    next(i for i in schema.pathways.indexes if i.name == "ix_pathways_overdue").create(conn, checkfirst=True)


def _units(conn: Connection) -> None:
    schema.fhir_units.create(conn, checkfirst=True)  # a new database has it from step 1


def _add_columns(conn: Connection, table: str, columns: list[tuple[str, TypeEngine, str]]) -> None:
    """ALTER TABLE ... ADD COLUMN for each (name, type, extra SQL) the table lacks (a database made by
    step 1 of a later release has them already)."""
    present = {c["name"] for c in inspect(conn).get_columns(table)}
    for name, type_, extra in columns:
        if name not in present:
            ddl = type_.compile(dialect=conn.dialect)
            conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {name} {ddl} {extra}".rstrip()))


def _isolation(conn: Connection) -> None:
    # Every stage's dead letters in one table, with the record's Kafka coordinates, exact bytes and
    # the exception; the rows before this step were all ingest's.
    _add_columns(conn, "dead_letters", [
        ("stage", String(20), "NOT NULL DEFAULT 'ingest'"),
        ("raw_bytes", LargeBinary(), ""),
        ("error", JSON(), ""),
        ("topic", String(255), ""),
        ("kafka_partition", Integer(), ""),
        ("kafka_offset", BigInteger(), ""),
        ("headers", JSON(), ""),
        ("outbox_id", BigInteger(), ""),
    ])
    conn.execute(text("CREATE INDEX IF NOT EXISTS ix_dead_letters_record "
                      "ON dead_letters (topic, kafka_partition, kafka_offset)"))
    conn.execute(text("CREATE INDEX IF NOT EXISTS ix_dead_letters_outbox ON dead_letters (outbox_id)"))
    # An accepted event's content fingerprint; rows before this step have none and are compared by
    # their stored raw record instead (services.ingest.handlers).
    _add_columns(conn, "inbound_events", [("fingerprint", String(64), "")])
    # The relay parks a row the broker will never accept.
    _add_columns(conn, "outbox", [("parked_at", DateTime(timezone=True), ""), ("park_reason", Text(), "")])
def _receipts_once_and_history_versions(conn: Connection) -> None:
    """Receipts keyed by their AppRec (one row per AppRec however often delivered); messaging's
    newest reconciled history per pathway.

    A database may already hold the same AppRec several times (redeliveries were stored again):
    exact copies are deleted, keeping the first; rows that share an AppRec Id but differ in content
    are all kept, the later ones keyed by their content (the key rule of this release is written
    out here: a released step never changes, and storage does not import a service)."""
    if "dedupe_key" not in {c["name"] for c in inspect(conn).get_columns("receipts")}:
        conn.execute(text("ALTER TABLE receipts ADD COLUMN dedupe_key VARCHAR(200)"))
    r = schema.receipts
    conn.execute(update(r).where(r.c.dedupe_key.is_(None), r.c.apprec_msg_id.is_not(None))
                 .values(dedupe_key=literal("id:") + r.c.apprec_msg_id))

    def by_content(raw: str) -> str:
        return "sha256:" + hashlib.sha256(raw.encode("utf-8", "replace")).hexdigest()

    while rows := conn.execute(select(r.c.id, r.c.raw).where(r.c.dedupe_key.is_(None)).order_by(r.c.id)
                               .limit(1000)).all():
        conn.execute(update(r).where(r.c.id == bindparam("k_id")),
                     [{"k_id": row.id, "dedupe_key": by_content(row.raw)} for row in rows])
    conn.execute(text("CREATE INDEX IF NOT EXISTS ix_receipts_dedupe_step ON receipts (dedupe_key)"))
    conn.execute(text("DELETE FROM receipts WHERE EXISTS (SELECT 1 FROM receipts b WHERE "
                      "b.dedupe_key = receipts.dedupe_key AND b.raw = receipts.raw AND b.id < receipts.id)"))
    shared = select(r.c.dedupe_key).group_by(r.c.dedupe_key).having(func.count() > 1)
    firsts = select(func.min(r.c.id)).group_by(r.c.dedupe_key)
    later = select(r.c.id, r.c.raw).where(r.c.dedupe_key.in_(shared), r.c.id.not_in(firsts))
    for row in conn.execute(later).all():
        conn.execute(update(r).where(r.c.id == row.id).values(dedupe_key=by_content(row.raw)))
    conn.execute(text("DROP INDEX IF EXISTS ix_receipts_dedupe_step"))
    conn.execute(text("CREATE UNIQUE INDEX IF NOT EXISTS ux_receipts_dedupe_key ON receipts (dedupe_key)"))
    schema.messaging_pathways.create(conn, checkfirst=True)


def _fhir_history(conn: Connection) -> None:
    """The history of FHIR resources and their deletions. What is stored is each resource's current
    version (its earlier ones were not kept before this step): one history row each, a created
    resource's (POST) when it is at version 1, else an update's (PUT)."""
    schema.fhir_history.create(conn, checkfirst=True)
    schema.fhir_deleted.create(conn, checkfirst=True)
    conn.execute(text("CREATE INDEX IF NOT EXISTS ix_fhir_resources_updated "
                      "ON fhir_resources (resource_type, last_updated, id)"))
    r, h = schema.fhir_resources, schema.fhir_history
    method = case((r.c.version_id == 1, literal("POST")), else_=literal("PUT"))
    conn.execute(insert(h).from_select(
        ["resource_type", "id", "version_id", "last_updated", "method", "resource"],
        select(r.c.resource_type, r.c.id, r.c.version_id, r.c.last_updated, method, r.c.resource)
        .where(~exists().where(h.c.resource_type == r.c.resource_type, h.c.id == r.c.id,
                               h.c.version_id == r.c.version_id))))


def _deleted_pathway(conn: Connection) -> None:
    """Each deleted resource's pathway, so a tenant that reaches it is told of the deletion. Rows
    written before: the pathway of the EpisodeOfCare their last version's focus names."""
    _add_columns(conn, "fhir_deleted", [("pathway_key", String(200), "")])
    fd, h, r = schema.fhir_deleted, schema.fhir_history, schema.fhir_resources
    for row in conn.execute(select(fd.c.resource_type, fd.c.id).where(fd.c.pathway_key.is_(None))).all():
        last = conn.execute(select(h.c.resource).where(
            h.c.resource_type == row.resource_type, h.c.id == row.id, h.c.method != "DELETE")
            .order_by(h.c.version_id.desc()).limit(1)).scalar()
        focus = ((last or {}).get("focus") or {}).get("reference", "")
        if row.resource_type == "EpisodeOfCare":
            episode = row.id
        elif focus.startswith("EpisodeOfCare/"):
            episode = focus.split("/", 1)[1]
        else:
            continue
        key = conn.execute(select(r.c.pathway_key).where(r.c.resource_type == "EpisodeOfCare",
                                                          r.c.id == episode)).scalar()
        if key is not None:
            conn.execute(update(fd).where(fd.c.resource_type == row.resource_type, fd.c.id == row.id)
                         .values(pathway_key=key))


_AUDIT_REFUSED = "audit records are append-only"
# A row may be deleted only below the newest retention checkpoint (forlop.audit.prune).
_RELEASED = "(SELECT COALESCE(MAX(first_kept_id), 0) FROM audit_checkpoints)"


def _audit_trail(conn: Connection) -> None:
    for table in (schema.audit_log, schema.audit_patients, schema.audit_checkpoints):
        table.create(conn, checkfirst=True)  # a new database has them from step 1
    guarded = {"audit_log": "id", "audit_patients": "audit_id", "audit_checkpoints": None}
    if conn.dialect.name == "postgresql":
        # Besides the released rows, the retention pass must say who it is (SET LOCAL
        # forlop.audit_retention): no other statement of the application deletes a row by mistake.
        for table, column in guarded.items():
            released = (f"TG_OP = 'DELETE' AND current_setting('forlop.audit_retention', true) = 'on' "
                        f"AND OLD.{column} < {_RELEASED}") if column else "false"
            conn.execute(text(f"""
                CREATE OR REPLACE FUNCTION forlop_guard_{table}() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                  IF TG_LEVEL = 'ROW' AND {released} THEN RETURN OLD; END IF;
                  RAISE EXCEPTION '{_AUDIT_REFUSED}: % on %', TG_OP, TG_TABLE_NAME
                    USING ERRCODE = 'insufficient_privilege';
                END $$"""))
            conn.execute(text(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}"))
            conn.execute(text(f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                              f"FOR EACH ROW EXECUTE FUNCTION forlop_guard_{table}()"))
            conn.execute(text(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}"))
            conn.execute(text(f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                              f"FOR EACH STATEMENT EXECUTE FUNCTION forlop_guard_{table}()"))
        return
    for table, column in guarded.items():
        conn.execute(text(f"CREATE TRIGGER IF NOT EXISTS {table}_no_update BEFORE UPDATE ON {table} "
                          f"BEGIN SELECT RAISE(ABORT, '{_AUDIT_REFUSED}: UPDATE on {table}'); END"))
        when = f" WHEN OLD.{column} >= {_RELEASED}" if column else ""
        conn.execute(text(f"CREATE TRIGGER IF NOT EXISTS {table}_no_delete BEFORE DELETE ON {table}{when} "
                          f"BEGIN SELECT RAISE(ABORT, '{_AUDIT_REFUSED}: DELETE on {table}'); END"))


MIGRATIONS: list[tuple[int, str, Step]] = [
    (1, "initial schema: inbound, dead letters, outbox, pathways, FHIR, alerts, messages", _initial),
    (2, "pathway refresh queue (replay derives each pathway once)", _refresh_queue),
    (3, "search index keyed by the whole row of a resource", _search_index_by_resource),
    (4, "FHIR search reads matching ids in order from (resource_type, param, value, id); worklist index",
     _search_index_match),
    (5, "search index: a reference once, as Type/id (not also the bare id)", _search_index_references_once),
    (6, "search index keyed by (resource_type, param, value, id); on SQLite WITHOUT ROWID",
     _search_index_primary_key),
    (7, "a pathway's messages by (pathway_key, status); no index on status alone", _messages_by_pathway_and_status),
    (8, "search index: no second index by resource", _search_index_without_by_resource),
    (9, "the pathways with overdue milestones (partial index; the gauge reads them only)", _pathways_overdue),
    (10, "dead letters of every stage (Kafka coordinates, exact bytes, exception); event fingerprints; "
         "parked outbox rows", _isolation),
    (11, "receipts: one row per AppRec (dedupe_key, unique; duplicates removed); messaging's newest history "
         "per pathway", _receipts_once_and_history_versions),
    (20, "FHIR resource history (every version, deletions too), deleted resources; resources by lastUpdated",
     _fhir_history),
    (25, "what every pathway saw of each treating unit: name and trust's organisation number (stable "
         "Organizations)", _units),
    (35, "audit trail: hash-chained records, their patients, retention checkpoints; UPDATE and DELETE refused "
         "by triggers", _audit_trail),
    (36, "a deleted resource's pathway (a tenant that reaches it is told of the deletion)", _deleted_pathway),
]


def applied_versions(conn: Connection) -> set[int]:
    if not inspect(conn).has_table("schema_migrations"):
        return set()
    return set(conn.execute(select(schema.schema_migrations.c.version)).scalars())


def migrate(conn: Connection) -> list[int]:
    """Apply pending migrations in order; return the versions applied now."""
    schema.schema_migrations.create(conn, checkfirst=True)
    done = applied_versions(conn)
    applied = []
    for version, name, step in MIGRATIONS:
        if version in done:
            continue
        step(conn)
        conn.execute(
            insert(schema.schema_migrations).values(version=version, name=name, applied_at=datetime.now(UTC))
        )
        applied.append(version)
    return applied


def latest_version() -> int:
    return MIGRATIONS[-1][0]
