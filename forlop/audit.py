"""The audit trail: one append-only, hash-chained record per request that touched personal data.

Norwegian health law gives a patient the right to know who has accessed their record (pasient- og
brukerrettighetsloven § 5-1; journalforskriften § 16 asks for the log). The API writes a record
before it answers (services.api.auditing); this module holds the storage side:

- `append`: the record in the caller's transaction. The chain's head is read and extended under a
  lock (PostgreSQL: a transaction-level advisory lock; SQLite: the write lock BEGIN IMMEDIATE takes),
  so API processes appending at once still form one chain.
- Each row's hash is sha256(prev_hash + "\\n" + canonical JSON of the record); `verify` walks the
  chain and names the first row that does not fit.
- Patients are stored by their pseudonymous FHIR Patient id (a keyed HMAC of the national id, the
  `forlop.fhir.ids.patient_id` the FHIR API uses), never in clear: `forlop audit --patient <id>`
  computes the same pseudonym and finds them through `audit_patients`.
- `prune` (FORLOP_AUDIT_RETENTION_DAYS) removes the oldest records, a prefix of the chain, after
  writing a checkpoint with the hash the first kept row must carry; the database's triggers
  (migration 35) refuse every UPDATE, and every DELETE of a row no checkpoint has released.
"""

from __future__ import annotations

import contextvars
import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

import orjson
from sqlalchemy import Connection, delete, func, insert, select, text

from forlop.fhir.ids import patient_id
from forlop.storage import Store, schema

GENESIS = "0" * 64  # the prev_hash of the first record ever
# pg_advisory_xact_lock key of the chain's head: an arbitrary 64-bit constant ("forlop-audit").
CHAIN_LOCK_KEY = 0x666F726C6F7041
PURPOSE_HEADER = "X-Purpose-Of-Use"
_NATIONAL_ID = re.compile(r"[0-9]{11}")
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


class AuditUnavailable(RuntimeError):
    """The record could not be written: the request it describes must fail (503), not go unlogged."""


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """What one request did. `recorded` is UTC; `patients` are Patient ids (pseudonyms)."""

    recorded: datetime
    client_id: str | None
    subject: str | None
    org_parent: str | None
    org_child: str | None
    hpr_number: str | None
    method: str
    route: str  # the URL rule, e.g. /fhir/EpisodeOfCare/<rid>
    path: str  # the path asked for (its ids are pseudonyms; the query string is left out)
    purpose: str
    status: int  # the HTTP status answered
    patients: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()  # "Type/id" references (messages/<id> for a message)
    correlation_id: str | None = None

    def canonical(self) -> str:
        """The exact text the hash covers: sorted keys, UTC time to the microsecond."""
        doc = asdict(self)
        doc["recorded"] = _iso(self.recorded)
        doc["patients"] = sorted(set(self.patients))
        doc["resources"] = sorted(set(self.resources))
        return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS).decode()

    @staticmethod
    def parse(canonical: str) -> AuditRecord:
        doc = orjson.loads(canonical)
        doc["recorded"] = datetime.fromisoformat(doc["recorded"])
        doc["patients"] = tuple(doc["patients"])
        doc["resources"] = tuple(doc["resources"])
        return AuditRecord(**doc)


@dataclass
class Touched:
    """What a route read or wrote, as it tells `touched` while it runs (one per request)."""

    patients: set[str] = field(default_factory=set)
    resources: set[str] = field(default_factory=set)
    pathway_keys: set[str] = field(default_factory=set)  # resolved to patients when the record is written
    audited: bool = False  # the route wrote the record itself, in its own transaction


_touched: contextvars.ContextVar[Touched | None] = contextvars.ContextVar("forlop_audit_touched", default=None)


def begin_request() -> Touched:
    """A fresh account of the request now starting on this thread."""
    current = Touched()
    _touched.set(current)
    return current


def current() -> Touched | None:
    return _touched.get()


def touched(*, national_ids: Iterable[str] = (), patients: Iterable[str] = (), resources: Iterable[str] = (),
            pathway_keys: Iterable[str] = ()) -> None:
    """Note what this request touched (a route calls it; outside a request it does nothing)."""
    now = _touched.get()
    if now is None:
        return
    now.patients.update(patient_id(n) for n in national_ids if n)
    now.patients.update(patients)
    now.resources.update(resources)
    now.pathway_keys.update(pathway_keys)


def chain_hash(prev_hash: str, canonical: str) -> str:
    return hashlib.sha256(f"{prev_hash}\n{canonical}".encode()).hexdigest()


# The append's statements, built once (building SQLAlchemy constructs per request was most of its cost).
# PostgreSQL: the chain's lock, and the transaction's commit not waiting for the WAL flush (see
# `append`), in one round trip; then the record, its hash computed by the server from the head it
# reads (sha256 of the same text `chain_hash` hashes), and its patients, in one statement.
_PG_LOCK = text("SELECT pg_advisory_xact_lock(:key), set_config('synchronous_commit', :sync, true)")
_PG_APPEND = text("""
    WITH head AS (
        SELECT COALESCE((SELECT hash FROM audit_log ORDER BY id DESC LIMIT 1),
                        (SELECT anchor_hash FROM audit_checkpoints ORDER BY id DESC LIMIT 1),
                        :genesis) AS prev),
    added AS (
        INSERT INTO audit_log (recorded_at, record, prev_hash, hash)
        SELECT :recorded_at, :record, prev, encode(sha256(convert_to(prev || chr(10) || :record, 'UTF8')), 'hex')
        FROM head RETURNING id),
    named AS (
        INSERT INTO audit_patients (patient_id, audit_id)
        SELECT p, added.id FROM added, unnest(CAST(:patients AS text[])) AS p)
    SELECT id FROM added""")
_LOG, _CHECKPOINTS = schema.audit_log, schema.audit_checkpoints
_HEAD = select(_LOG.c.hash).order_by(_LOG.c.id.desc()).limit(1)
_ANCHOR = select(_CHECKPOINTS.c.anchor_hash).order_by(_CHECKPOINTS.c.id.desc()).limit(1)
_INSERT = insert(_LOG)
_INSERT_PATIENTS = insert(schema.audit_patients)


def append(conn: Connection, record: AuditRecord, *, synchronous: bool = True) -> int:
    """Append `record` to the chain in `conn`'s transaction; its id. Serialised with every other append.

    `synchronous` False (PostgreSQL): the commit returns before the WAL reaches the disk. The record is
    committed and visible at once, and the chain stays whole; a crash of the database server itself
    (not of forlop) within the WAL writer's delay can lose the newest records. Without it each read
    request waits for one more disk flush (docs/performance.md); a write's record, appended in the
    write's own transaction, is always flushed with the write.
    """
    patients = sorted(set(record.patients))
    canonical = record.canonical()
    recorded = _utc(record.recorded)
    if conn.dialect.name == "postgresql":
        # Held to the end of the transaction: no other append reads the head until this one commits.
        conn.execute(_PG_LOCK, {"key": CHAIN_LOCK_KEY, "sync": "on" if synchronous else "off"})
        return int(conn.execute(_PG_APPEND, {"genesis": GENESIS, "recorded_at": recorded, "record": canonical,
                                             "patients": patients}).scalar_one())
    # SQLite: the transaction holds the database's write lock from its BEGIN IMMEDIATE.
    prev = conn.execute(_HEAD).scalar()
    if prev is None:  # an empty log: a new one, or every record pruned
        prev = conn.execute(_ANCHOR).scalar() or GENESIS
    audit_id = conn.execute(_INSERT, {"recorded_at": recorded, "record": canonical, "prev_hash": prev,
                                      "hash": chain_hash(prev, canonical)}).inserted_primary_key[0]
    if patients:
        conn.execute(_INSERT_PATIENTS, [{"patient_id": p, "audit_id": audit_id} for p in patients])
    return int(audit_id)


def write(store: Store, record: AuditRecord, *, synchronous: bool = True) -> int:
    """Append `record` in a transaction of its own; AuditUnavailable if it cannot be stored."""
    try:
        with store.transaction() as conn:
            return append(conn, record, synchronous=synchronous)
    except Exception as exc:
        raise AuditUnavailable(f"the audit record could not be written ({type(exc).__name__})") from exc


@dataclass(frozen=True)
class Verified:
    records: int
    broken_at: int | None = None  # the id of the first record that does not fit, if any
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.broken_at is None


def verify(conn: Connection, batch: int = 5000) -> Verified:
    """Walk the chain from the latest checkpoint (or the start) to its head."""
    log, cp = schema.audit_log, schema.audit_checkpoints
    checkpoint = conn.execute(select(cp.c.first_kept_id, cp.c.anchor_hash).order_by(cp.c.id.desc()).limit(1)).first()
    expected = checkpoint.anchor_hash if checkpoint else GENESIS
    # Rows below the checkpoint are released (the pass removes them in the checkpoint's transaction).
    count, after = 0, (checkpoint.first_kept_id - 1) if checkpoint else -1
    while rows := conn.execute(select(log).where(log.c.id > after).order_by(log.c.id).limit(batch)).all():
        for row in rows:
            if row.prev_hash != expected:
                return Verified(count, row.id, "its prev_hash is not the hash of the record before it")
            if chain_hash(row.prev_hash, row.record) != row.hash:
                return Verified(count, row.id, "its hash does not match its content")
            if _utc(row.recorded_at) != AuditRecord.parse(row.record).recorded:
                return Verified(count, row.id, "its recorded_at differs from the time in its record")
            expected, count, after = row.hash, count + 1, row.id
    return Verified(count)


def prune(store: Store, now: datetime, retention_days: int) -> int:
    """Remove the records older than `retention_days` (a prefix of the chain); how many went.

    A checkpoint first names the first record kept and the hash it must carry as prev_hash, then
    the rows below it are deleted: the triggers let a DELETE through only below the newest
    checkpoint (and, on PostgreSQL, only in a transaction that says it is the retention pass).
    """
    if retention_days <= 0:
        return 0
    cutoff = _utc(now) - timedelta(days=retention_days)
    log, patients, cp = schema.audit_log, schema.audit_patients, schema.audit_checkpoints
    with store.transaction() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CHAIN_LOCK_KEY})
            conn.execute(text("SET LOCAL forlop.audit_retention = 'on'"))
        first_kept = conn.execute(select(func.min(log.c.id)).where(log.c.recorded_at >= cutoff)).scalar()
        if first_kept is None:  # every record is older: keep the anchor past the newest
            head = conn.execute(select(func.max(log.c.id))).scalar()
            if head is None:
                return 0
            first_kept = head + 1
        last_removed = conn.execute(select(log.c.id, log.c.hash).where(log.c.id < first_kept)
                                    .order_by(log.c.id.desc()).limit(1)).first()
        if last_removed is None:
            return 0
        removed = conn.execute(select(func.count()).select_from(log).where(log.c.id < first_kept)).scalar() or 0
        conn.execute(insert(cp).values(created_at=now, first_kept_id=first_kept, anchor_hash=last_removed.hash,
                                       removed=removed))
        conn.execute(delete(patients).where(patients.c.audit_id < first_kept))
        conn.execute(delete(log).where(log.c.id < first_kept))
        return int(removed)


def patient_key(identifier: str) -> str | None:
    """The Patient id an identifier names: a national id (11 digits, `system|` before it or not), a
    `Patient/<id>` reference or a bare Patient id; None for anything else."""
    value = identifier.rsplit("|", 1)[-1].strip()
    if _NATIONAL_ID.fullmatch(value):
        return patient_id(value)
    value = value.removeprefix("Patient/")
    return value if _FHIR_ID.fullmatch(value) else None


@dataclass(frozen=True)
class Stored:
    id: int
    record: AuditRecord
    hash: str


def records_for(conn: Connection, patient: str, since: datetime | None = None, until: datetime | None = None,
                *, after_id: int = 0, limit: int = 1000, since_strict: bool = False,
                until_strict: bool = False) -> list[Stored]:
    """The records that touched Patient id `patient`, oldest first, from `since` to `until`."""
    log, patients = schema.audit_log, schema.audit_patients
    stmt = (select(log).join(patients, patients.c.audit_id == log.c.id)
            .where(patients.c.patient_id == patient, log.c.id > after_id).order_by(log.c.id).limit(limit))
    if since is not None:
        since = _utc(since)
        stmt = stmt.where(log.c.recorded_at > since if since_strict else log.c.recorded_at >= since)
    if until is not None:
        until = _utc(until)
        stmt = stmt.where(log.c.recorded_at < until if until_strict else log.c.recorded_at <= until)
    return [Stored(row.id, AuditRecord.parse(row.record), row.hash) for row in conn.execute(stmt)]


def record(conn: Connection, record_id: int) -> Stored | None:
    """One record by its id, or None."""
    row = conn.execute(select(schema.audit_log).where(schema.audit_log.c.id == record_id)).first()
    return None if row is None else Stored(row.id, AuditRecord.parse(row.record), row.hash)


def all_records(conn: Connection, batch: int = 5000) -> Iterator[Stored]:
    log = schema.audit_log
    after = -1
    while rows := conn.execute(select(log).where(log.c.id > after).order_by(log.c.id).limit(batch)).all():
        for row in rows:
            yield Stored(row.id, AuditRecord.parse(row.record), row.hash)
        after = rows[-1].id


def _utc(value: datetime) -> datetime:
    """A stored time as UTC (SQLite gives it back without a zone)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _iso(value: datetime) -> str:
    return _utc(value).isoformat(timespec="microseconds")
