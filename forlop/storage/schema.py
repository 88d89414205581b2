"""Tables of the one data layer, shared by the services (SQLAlchemy Core, SQLite and PostgreSQL).

Each service owns its tables: ingest the inbound log and dead letters, pathway the
history, statuses, FHIR resources and alerts, messaging the messages and receipts.
The outbox belongs to whoever writes it, in the same transaction as the state change.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    text,
)

metadata = MetaData()

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL wants BIGINT for long-lived logs.
AutoId = BigInteger().with_variant(Integer(), "sqlite")


def _ts(name: str, **kw) -> Column:
    return Column(name, DateTime(timezone=True), **kw)


schema_migrations = Table(
    "schema_migrations",
    metadata,
    Column("version", Integer, primary_key=True),
    Column("name", String(200), nullable=False),
    _ts("applied_at", nullable=False),
)

# --- ingest -----------------------------------------------------------------------------
inbound_events = Table(
    "inbound_events",
    metadata,
    Column("event_id", String(200), primary_key=True),  # "<source>:<vendor event id>"
    Column("source", String(20), nullable=False),
    Column("pathway_key", String(200), nullable=False, index=True),
    _ts("received_at", nullable=False),
    Column("raw", Text, nullable=False),  # the vendor record exactly as received
    # sha256 of the vendor record in canonical JSON (services.ingest.fingerprint): the same event id
    # again with another fingerprint is a conflicting duplicate. None: stored before migration 10.
    Column("fingerprint", String(64)),
)

# Every record a consumer or the outbox relay could not process, to be inspected and replayed
# (`forlop dlq`): ingest's rejections (with every reason) and any stage's poison records (with the
# exception that stopped them).
dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column("stage", String(20), nullable=False, server_default="ingest"),  # ingest|pathway|messaging|receipts|relay
    Column("source", String(20), nullable=False),  # the vendor (ingest) or the stage
    Column("origin", String(200), nullable=False),  # "kafka:<topic>/<partition>@<offset>", "http", "replay:<file>", "outbox:<id>"
    Column("record_key", Text),
    Column("raw", Text, nullable=False),  # the record as text, for reading (capped; NUL replaced)
    Column("raw_bytes", LargeBinary),  # the record's bytes exactly (None: a Kafka tombstone, or a row before migration 10)
    Column("reasons", JSON, nullable=False),  # [{"field","rule","message"}]
    Column("error", JSON),  # the exception that stopped it: {"type","message","traceback"}; None for a rejection
    Column("topic", String(255)),  # where a consumer read it, or where the relay was to publish it
    Column("kafka_partition", Integer),
    Column("kafka_offset", BigInteger),
    Column("headers", JSON),
    Column("outbox_id", BigInteger),  # the relay's parked outbox row
    Column("status", String(20), nullable=False, default="open"),  # open | replayed | still-rejected | still-failing
    _ts("received_at", nullable=False),
    _ts("replayed_at"),
    Index("ix_dead_letters_status", "status"),
    # a redelivered record is dead-lettered once (forlop.dead_letters.write)
    Index("ix_dead_letters_record", "topic", "kafka_partition", "kafka_offset"),
    Index("ix_dead_letters_outbox", "outbox_id"),
)

# --- outbox (every service) ---------------------------------------------------------------
outbox = Table(
    "outbox",
    metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column("topic", String(200), nullable=False),
    Column("record_key", Text),
    Column("value", Text, nullable=False),
    Column("headers", JSON, nullable=False, default=dict),
    _ts("created_at", nullable=False),
    _ts("published_at"),
    # A row the broker will never accept (too large): moved aside so the rows behind it go out;
    # `forlop dlq replay` of its relay dead letter queues it again.
    _ts("parked_at"),
    Column("park_reason", Text),
    Index("ix_outbox_unpublished", "published_at", "id"),
)

# --- pathway --------------------------------------------------------------------------------
pathway_events = Table(
    "pathway_events",
    metadata,
    Column("event_id", String(200), primary_key=True),
    Column("pathway_key", String(200), nullable=False, index=True),
    Column("kind", String(40), nullable=False),
    Column("occurred_on", Date, nullable=False),
    _ts("recorded_at", nullable=False),
    _ts("stored_at", nullable=False),
    Column("event", JSON, nullable=False),  # PathwayEvent.to_dict()
)

pathways = Table(
    "pathways",
    metadata,
    Column("pathway_key", String(200), primary_key=True),
    Column("source", String(20), nullable=False),
    Column("pathway_id", String(200), nullable=False),
    Column("pathway_type", String(20), nullable=False),
    Column("national_id", String(11), nullable=False, index=True),
    Column("municipality", String(4), nullable=False, index=True),
    Column("unit_her_id", String(40), nullable=False),
    Column("consent_municipality", Boolean, nullable=False, default=False),
    Column("episode_status", String(30), nullable=False, index=True),
    Column("start_date", Date),
    Column("next_check_on", Date, index=True),
    Column("overdue_milestones", Integer, nullable=False, default=0),  # when the scanner must look again (None: never)
    Column("status", JSON, nullable=False),  # PathwayStatus.to_dict()
    Column("patient", JSON, nullable=False),  # latest patient/unit/gp facts for the worklist
    Column("history_hash", String(64), nullable=False),  # what the status was derived from
    _ts("derived_at", nullable=False),
    _ts("updated_at", nullable=False),
    # A unit's worklist reads its open pathways only, not the finished ones piling up beside them.
    Index("ix_pathways_unit_status", "unit_her_id", "episode_status"),
    # The overdue-milestones gauge sums the pathways that have any (forlop.metrics): without it every
    # process read the whole table every 15 s (docs/performance.md).
    Index("ix_pathways_overdue", "overdue_milestones", sqlite_where=text("overdue_milestones > 0"),
          postgresql_where=text("overdue_milestones > 0")),
)

# Pathways whose history grew but whose status is not derived yet: `forlop replay` stores a whole
# file's events first and derives each pathway once at the end. A row goes in the transaction that
# stores the events and out in the one that derives, so a crash in between loses no derivation.
pathway_refresh_queue = Table(
    "pathway_refresh_queue",
    metadata,
    Column("pathway_key", String(200), primary_key=True),
    _ts("queued_at", nullable=False),
)

fhir_resources = Table(
    "fhir_resources",
    metadata,
    Column("resource_type", String(40), primary_key=True),
    Column("id", String(64), primary_key=True),
    Column("pathway_key", String(200), index=True),
    Column("version_id", Integer, nullable=False, default=1),
    _ts("last_updated", nullable=False),
    Column("resource", JSON, nullable=False),
    # _lastUpdated bounds and _sort=_lastUpdated on a type: a range of this index, in its order.
    Index("ix_fhir_resources_updated", "resource_type", "last_updated", "id"),
)

# Every version of every FHIR resource, the current one included: vread, the instance's history and
# the type-level change feed (`_history?_since=`). A deletion is a version too (method DELETE, no
# resource). Written in the same transaction as the resource row (`fhir_repository.upsert_many`).
fhir_history = Table(
    "fhir_history",
    metadata,
    Column("resource_type", String(40), nullable=False),
    Column("id", String(64), nullable=False),
    Column("version_id", Integer, nullable=False),
    _ts("last_updated", nullable=False),
    Column("method", String(6), nullable=False),  # POST (created), PUT (changed), DELETE
    Column("resource", JSON),  # None for a deletion
    PrimaryKeyConstraint("resource_type", "id", "version_id", name="pk_fhir_history"),
    # A type's changes since an instant, newest first, paged by the key (last_updated, id, version_id).
    Index("ix_fhir_history_since", "resource_type", "last_updated", "id", "version_id"),
)

# A deleted resource (a withdrawn milestone's Task): its row leaves fhir_resources and its search
# index, and this row keeps its last version, so that a read answers 410 Gone and a resource made
# again under the same id goes on from that version. Small: only what was deleted and not made again.
fhir_deleted = Table(
    "fhir_deleted",
    metadata,
    Column("resource_type", String(40), primary_key=True),
    Column("id", String(64), primary_key=True),
    Column("version_id", Integer, nullable=False),  # the deletion's version
    _ts("last_updated", nullable=False),
    # The pathway the resource was of: a tenant that reaches the pathway is told of the deletion (410,
    # the DELETE in the history) as it was shown the resource. None: a row from before step 36
    # whose pathway could not be found (seen by readers of everything only).
    Column("pathway_key", String(200)),
)

# What every pathway at a treating unit saw of it, from any vendor: its name and its trust's
# organisation number, each with the ordering key of the latest event that gave it (the pathway
# service's Organizations are built from this, never from the pathway derived last).
fhir_units = Table(
    "fhir_units",
    metadata,
    Column("her_id", String(40), primary_key=True),
    Column("name", Text, nullable=False),
    Column("name_key", String(120), nullable=False),
    Column("org_number", String(9)),
    Column("org_number_key", String(120)),
)

# One row per search parameter value: FHIR search becomes an indexed intersection.
fhir_search_index = Table(
    "fhir_search_index",
    metadata,
    Column("resource_type", String(40), nullable=False),
    Column("id", String(64), nullable=False),
    Column("param", String(40), nullable=False),
    Column("value", String(300), nullable=False),
    # A search reads the ids of one value in id order from the key alone (a page is the first
    # count + 1 of them, never all matches) and probes other parameters' values by id. On SQLite
    # the table is this key's B-tree (WITHOUT ROWID): a row is written to one tree (it was three:
    # a rowid table beside two indexes that both held every column).
    # A resource's own rows are worked out from its JSON (`search_index.index_values`) and deleted by
    # this key, so no second index by resource is kept (it was as big as the table, in random order).
    PrimaryKeyConstraint("resource_type", "param", "value", "id", name="pk_fhir_search_index"),
    sqlite_with_rowid=False,
)

alerts = Table(
    "alerts",
    metadata,
    Column("alert_key", String(400), primary_key=True),  # pathway|milestone|deadline|to-status: one per transition
    Column("pathway_key", String(200), nullable=False, index=True),
    Column("milestone_key", String(60), nullable=False),
    Column("to_status", String(20), nullable=False),
    _ts("emitted_at", nullable=False),
)

# --- messaging ------------------------------------------------------------------------------
messages = Table(
    "messages",
    metadata,
    Column("id", String(36), primary_key=True),  # MsgId (UUID), kept on resend
    Column("dedupe_key", String(400), nullable=False, unique=True),  # registration|trigger|role|recipient
    Column("pathway_key", String(200), nullable=False),
    Column("pathway_id", String(200), nullable=False),
    Column("registration_id", String(200)),
    Column("trigger", String(30), nullable=False),
    Column("role", String(20), nullable=False),
    Column("recipient_her_id", String(40)),
    Column("message_type", String(60), nullable=False),
    Column("status", String(20), nullable=False),
    Column("status_reason", Text),
    Column("attempts", Integer, nullable=False, default=0),
    Column("conversation_ref", String(36)),
    Column("corrects", String(36)),  # MsgId of the message a correction refers to
    Column("xml", Text),
    Column("details", JSON, nullable=False, default=dict),
    _ts("created_at", nullable=False),
    _ts("sent_at"),
    _ts("next_attempt_at"),
    _ts("settled_at"),
    # A status alone is read through ix_messages_due's prefix. A pathway's held messages through
    # (pathway_key, status): with one index per column SQLite took the status one and read every
    # held message of every pathway per status change (9 % of a 1M-event replay, growing with them).
    Index("ix_messages_due", "status", "next_attempt_at"),
    Index("ix_messages_pathway_status", "pathway_key", "status"),
)

receipts = Table(
    "receipts",
    metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column("message_id", String(36), index=True),  # the MsgId the AppRec answers (may be unknown)
    Column("apprec_msg_id", String(100)),
    Column("status", String(20), nullable=False),  # ok | ok-with-errors | rejected | unparseable
    Column("errors", JSON, nullable=False, default=list),
    # applied | unknown-message | already-settled | not-sent | conflicting-duplicate | invalid
    Column("outcome", String(30), nullable=False),
    Column("raw", Text, nullable=False),
    _ts("received_at", nullable=False),
    # One row per AppRec, however often it is delivered: "id:<its own Id>", or "sha256:<of raw>" for
    # one without an Id (or unparseable). Null only in rows written before migration 11 filled it.
    Column("dedupe_key", String(200)),
    Index("ux_receipts_dedupe_key", "dedupe_key", unique=True),
)

# The newest pathway history messaging has reconciled, per pathway: a status change carrying an
# older (smaller) history, redelivered after a newer one, is skipped instead of undoing what the
# newer history decided. A pathway's history only grows (events are never deleted), so its size
# orders the histories. The row is also the pathway's lock in messaging (taken first, by key).
messaging_pathways = Table(
    "messaging_pathways",
    metadata,
    Column("pathway_key", String(200), primary_key=True),
    Column("history_version", Integer, nullable=False),
    _ts("updated_at", nullable=False),
)

# --- audit trail (forlop.audit) ------------------------------------------------------------
# One row per request that touched personal data, appended only: each row's hash covers the one
# before it and the row's canonical JSON, so a changed, removed or inserted row breaks the chain.
# Triggers (migration 35) refuse UPDATE always and DELETE except of rows a retention checkpoint
# has released.
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    _ts("recorded_at", nullable=False),
    Column("record", Text, nullable=False),  # the canonical JSON the hash covers (forlop.audit.AuditRecord)
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    sqlite_autoincrement=True,  # ids never reused after a retention pass emptied the table
)

# The patients of each record, by pseudonymous Patient id: "who has looked at my data" is an index
# lookup, not a scan of the log. Derived from the record (the hash covers the record's list).
audit_patients = Table(
    "audit_patients",
    metadata,
    Column("patient_id", String(64), nullable=False),
    Column("audit_id", BigInteger().with_variant(Integer(), "sqlite"), nullable=False),
    PrimaryKeyConstraint("patient_id", "audit_id"),
)

# What the retention pass removed: every row below `first_kept_id` may go, and the first row kept
# must carry `anchor_hash` as its prev_hash, so the shortened chain still verifies from here.
audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    _ts("created_at", nullable=False),
    Column("first_kept_id", BigInteger, nullable=False),
    Column("anchor_hash", String(64), nullable=False),
    Column("removed", BigInteger, nullable=False),
)
