"""Pathway flow: canonical events -> history -> derive(status) -> FHIR + status + outbox, one transaction.

Status is always derived from the pathway's whole current history, never patched
from the last event, so late, corrected and out-of-order registrations give the
same answer as ordered ones. The deadline scanner re-derives pathways whose
next threshold (due soon, overdue) has been reached, without any new event.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, bindparam, delete, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from forlop import metrics
from forlop.clock import local_date
from forlop.config import Topics
from forlop.events import PathwayEvent
from forlop.fhir import ids
from forlop.logging import ctx
from forlop.storage import json_text, schema
from forlop.storage.bulk import among, insert_many, update_many
from services.pathway.adapters.fhir_repository import upsert_many
from services.pathway.domain.derive import derive
from services.pathway.domain.fhir_mapping import map_pathway, retimed_task
from services.pathway.domain.living import Transition, advance, deadline_transitions
from services.pathway.domain.rules import RuleBook
from services.pathway.domain.status import DeadlineStatus, MilestoneState

log = logging.getLogger(__name__)

ALERTING = (DeadlineStatus.DUE_SOON, DeadlineStatus.OVERDUE)


@dataclass
class PathwayResult:
    stored_events: int = 0
    duplicates: int = 0
    refreshed: list[str] = field(default_factory=list)
    status_changes: int = 0
    alerts: int = 0
    # With `hand_over` (replay): the status-changed payloads, their correlation ids and the events of
    # `payload["events"]` as events, for a handler in the same transaction, instead of outbox records.
    handed_over: list[tuple[dict[str, Any], str, list[PathwayEvent]]] = field(default_factory=list)
    prebuilt: dict[str, Any] = field(default_factory=dict)  # with `hand_over`: the derivations' prebuilt messages


@dataclass(frozen=True)
class PathwayDeps:
    rules: RuleBook
    topics: Topics
    validate_fhir: bool = True  # check each mapped resource with fhir.resources (FORLOP_FHIR_VALIDATE)


def store_events(conn: Connection, events: Sequence[PathwayEvent], now: datetime) -> tuple[list[PathwayEvent], int]:
    """Append new events to the history (idempotent on event id); return the new ones and the duplicates."""
    e = schema.pathway_events
    unique = {ev.event_id: ev for ev in events}
    known = set(
        conn.execute(select(e.c.event_id).where(among(e.c.event_id, list(unique), conn.dialect.name))).scalars()
    ) if unique else set()
    new = [ev for eid, ev in unique.items() if eid not in known]
    if new:
        insert_many(
            conn, e,
            [
                {
                    "event_id": ev.event_id,
                    "pathway_key": ev.pathway_key,
                    "kind": ev.kind.value,
                    "occurred_on": ev.occurred_on,
                    "recorded_at": ev.recorded_at,
                    "stored_at": now,
                    "event": ev.to_dict(),
                }
                for ev in new
            ],
        )
    return new, len(events) - len(new)


def load_history(conn: Connection, pathway_keys: Iterable[str]) -> dict[str, list[PathwayEvent]]:
    e = schema.pathway_events
    keys = list(pathway_keys)
    out: dict[str, list[PathwayEvent]] = {k: [] for k in keys}
    for i in range(0, len(keys), 500):
        chunk = keys[i : i + 500]
        for row in conn.execute(select(e.c.pathway_key, e.c.event).where(among(e.c.pathway_key, chunk, conn.dialect.name))):
            out[row.pathway_key].append(PathwayEvent.from_dict(row.event))
    return out


def handle_events(
    conn: Connection, events: Sequence[PathwayEvent], now: datetime, deps: PathwayDeps, *, defer: bool = False
) -> PathwayResult:
    """Store a batch of canonical events and refresh every pathway they touch.

    `defer=True` (replay) only queues the touched pathways (`pathway_refresh_queue`), in the same
    transaction: `refresh_queued` derives each of them once, however many batches touched it.
    """
    new, duplicates = store_events(conn, events, now)
    result = PathwayResult(stored_events=len(new), duplicates=duplicates)
    for ev in new:
        log.info("event added to history", extra={"correlation_id": ev.event_id, **ctx(
            pathway=ev.pathway_key, kind=ev.kind.value, code=ev.code, occurred_on=ev.occurred_on.isoformat())})
    touched = sorted({ev.pathway_key for ev in new})
    if touched and defer:
        _queue(conn, touched, now)
    elif touched:
        refresh(conn, touched, now, deps, result)
    return result


def _queue(conn: Connection, keys: Sequence[str], now: datetime) -> None:
    """Queue pathways for one derivation; one already queued (by this or a concurrent replay) stays."""
    q = schema.pathway_refresh_queue
    dialect_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    conn.execute(dialect_insert(q).on_conflict_do_nothing(index_elements=["pathway_key"]),
                 [{"pathway_key": k, "queued_at": now} for k in keys])


def refresh_queued(
    conn: Connection, now: datetime, deps: PathwayDeps, limit: int = 2000, *, hand_over: bool = False,
    among_keys: Sequence[str] | None = None, derived: Mapping[str, Derivation] | None = None,
) -> PathwayResult:
    """Derive up to `limit` queued pathways and take them off the queue, in one transaction.

    `hand_over`: the status changes go to `result.handed_over` instead of the outbox (replay hands
    them to messaging in the same transaction: no record to write, read back and mark).
    `among_keys`: only those of these still queued (a replay's chunk read ahead); `derived`: see `refresh`.
    """
    q = schema.pathway_refresh_queue
    claim = select(q.c.pathway_key).order_by(q.c.pathway_key).limit(limit)
    if among_keys is not None:
        claim = claim.where(among(q.c.pathway_key, list(among_keys), conn.dialect.name))
    if conn.dialect.name == "postgresql":
        claim = claim.with_for_update(skip_locked=True)  # several workers share the queue
    keys = list(conn.execute(claim).scalars())
    result = PathwayResult()
    if keys:
        refresh(conn, keys, now, deps, result, hand_over=hand_over, derived=derived)
        conn.execute(delete(q).where(q.c.pathway_key.in_(keys)))
    return result


@dataclass
class Derivation:
    """One pathway derived from its history: everything `refresh` stores for it that needs no database.

    Pure and picklable, so a replay can compute it in a worker process (`app.replay.workers`)
    while the main process writes the chunk before.
    """

    key: str
    as_of: datetime  # the `now` it was derived at
    status: dict[str, Any]
    history_hash: str  # of the history it was derived from
    resources: list[dict[str, Any]]
    row: dict[str, Any]  # the pathways row, without its key
    unit_her_id: str  # of the event recorded last: the alerts' unit
    national_id: str  # of the event recorded last: the alerts' record key
    record_key: str  # the status-changed record's key
    correlation: str  # the event recorded last: the status change's correlation id
    # prebuilt messages by dedupe key (`services.messaging.prebuild`), when a worker built them
    messages: dict[str, Any] = field(default_factory=dict)


def derive_pathway(
    key: str, history: Sequence[PathwayEvent], now: datetime, deps: PathwayDeps, history_hash: str | None = None
) -> Derivation:
    """Derive one pathway's status and FHIR resources and the row that holds them (as of `now`:
    the same history and `now` give the same derivation)."""
    status = derive(history, deps.rules, now)
    status_dict = status.to_dict()
    latest = _latest(history)
    facts = patient_facts(history)
    row = {
        "source": latest.source.value,
        "pathway_id": latest.pathway_id,
        "pathway_type": latest.pathway_type,
        "national_id": latest.patient.national_id,
        "municipality": latest.patient.municipality,
        "unit_her_id": latest.unit.her_id,
        "consent_municipality": bool(facts["consentMunicipality"]),
        "episode_status": status.episode_status.value,
        "start_date": status.start_date,
        **clock_columns(status_dict),
        "status": status_dict,
        "patient": facts,
        "history_hash": history_hash or _history_hash(history),
        "derived_at": now,
        "updated_at": now,
    }
    return Derivation(
        key=key,
        as_of=now,
        status=status_dict,
        history_hash=row["history_hash"],
        resources=map_pathway(status, list(history), validate=deps.validate_fhir),
        row=row,
        unit_her_id=latest.unit.her_id,
        national_id=latest.patient.national_id,
        record_key=history[-1].patient.national_id,
        correlation=max(history, key=lambda ev: ev.recorded_at).event_id,
    )


def refresh(
    conn: Connection, pathway_keys: Sequence[str], now: datetime, deps: PathwayDeps, result: PathwayResult,
    *, hand_over: bool = False, derived: Mapping[str, Derivation] | None = None,
) -> None:
    """Re-derive the pathways from their histories and store status, FHIR, outbox and alerts.

    Every pathway is derived on its own; the writes of the whole batch go out as one
    executemany per statement kind (a few round trips per batch, not a few per pathway).
    `derived`: derivations computed before this transaction (by a replay's workers), used for the
    pathways whose history is still the one they were derived from.
    """
    histories = load_history(conn, pathway_keys)
    p = schema.pathways
    current = select(p.c.pathway_key, p.c.status, p.c.history_hash).where(
        among(p.c.pathway_key, list(pathway_keys), conn.dialect.name))
    if conn.dialect.name == "postgresql":
        current = current.with_for_update()  # serialise with the scanner and other replicas per pathway
    previous_rows = {row.pathway_key: row for row in conn.execute(current)}
    writes = _Writes()
    for key in pathway_keys:
        history = histories.get(key) or []
        if not history:
            continue
        history_hash = _history_hash(history)
        d = derived.get(key) if derived else None
        if d is None or d.history_hash != history_hash or d.as_of != now:
            d = derive_pathway(key, history, now, deps, history_hash)
        previous = previous_rows.get(key)
        prev_status = previous.status if previous is not None else None
        writes.resources.append((key, d.resources))
        if previous is not None:
            writes.updates.append({"k_pathway_key": key, **d.row})
        else:
            writes.inserts.append({"pathway_key": key, **d.row})
        result.refreshed.append(key)
        changed = (
            prev_status is None
            or _comparable(prev_status) != _comparable(d.status)
            or previous.history_hash != d.history_hash
        )
        if changed:
            result.status_changes += 1
            ordered = sorted(history, key=lambda ev: (ev.occurred_at, ev.event_id))
            payload = _status_changed_payload(d.status, now, [ev.to_dict() for ev in ordered])
            if hand_over:
                result.handed_over.append((payload, d.correlation, ordered))
                result.prebuilt.update(d.messages)
            else:
                writes.status_changed.append(_status_changed_record(
                    payload, d.record_key, d.correlation, now, deps.topics))
        _collect_alerts(writes, deadline_transitions(prev_status, d.status), d.status, d.unit_her_id,
                        d.national_id, now)
    upsert_many(conn, writes.resources, now)
    insert_many(conn, p, writes.inserts)
    update_many(conn, p, "pathway_key", writes.updates)  # their rows are locked (FOR UPDATE above)
    insert_many(conn, schema.outbox, writes.status_changed)
    result.alerts += _store_alerts(conn, writes.alerts, now, deps.topics)


@dataclass
class _Writes:
    """What one refresh batch writes, gathered pathway by pathway, written once at the end."""

    resources: list[tuple[str, list[dict[str, Any]]]] = field(default_factory=list)
    inserts: list[dict[str, Any]] = field(default_factory=list)
    updates: list[dict[str, Any]] = field(default_factory=list)
    status_changed: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[tuple[str, dict[str, Any], str, str]] = field(default_factory=list)  # key, alert, record key, to


def _latest(history: Sequence[PathwayEvent]) -> PathwayEvent:
    """The event recorded last: whose patient and unit the pathway row and its alerts carry."""
    return max(history, key=lambda ev: (ev.recorded_at, ev.event_id))


def patient_facts(history: Sequence[PathwayEvent]) -> dict[str, Any]:
    """What the worklist and municipal overview show about the patient and the unit (latest known)."""
    ordered = sorted(history, key=lambda ev: (ev.occurred_at, ev.recorded_at, ev.event_id))
    latest = ordered[-1]
    consent = None
    for ev in ordered:
        if ev.consent_municipality is not None:
            consent = ev.consent_municipality
    gp = next((ev.gp for ev in reversed(ordered) if ev.gp), None)
    referrer = next((ev.referrer for ev in reversed(ordered) if ev.referrer), None)
    return {
        "nationalId": latest.patient.national_id,
        "municipality": latest.patient.municipality,
        "receivesMunicipalServices": latest.patient.receives_municipal_services,
        "unit": {"herId": latest.unit.her_id, "name": latest.unit.name, "setting": latest.unit.setting.value},
        "gp": {"hpr": gp.hpr, "herId": gp.her_id} if gp else None,
        "referrer": {"hpr": referrer.hpr, "herId": referrer.her_id} if referrer else None,
        "consentMunicipality": consent,
        "lastEvent": {"kind": latest.kind.value, "code": latest.code, "on": latest.occurred_on.isoformat()},
    }


def clock_columns(status: dict[str, Any]) -> dict[str, Any]:
    """The pathway row's columns the scanner reads, from the status as stored."""
    return {
        "next_check_on": next_check_on(status),
        "overdue_milestones": sum(1 for m in status["milestones"]
                                  if m["deadline_status"] == DeadlineStatus.OVERDUE.value),
    }


def next_check_on(status: dict[str, Any]) -> date | None:
    """The first local date on which an open milestone's deadline status will change (status as stored)."""
    horizon = int(status["extra"]["due_soon_days"])  # the rule set's, or FORLOP_DUE_SOON_DAYS via RuleBook.load
    candidates: list[date] = []
    for m in status["milestones"]:
        due = m["adjusted_deadline"] or m["deadline"]
        if m["state"] != MilestoneState.OPEN.value or due is None:
            continue
        if m["deadline_status"] == DeadlineStatus.PENDING.value:
            candidates.append(date.fromisoformat(due) - timedelta(days=horizon))
        elif m["deadline_status"] == DeadlineStatus.DUE_SOON.value:
            candidates.append(date.fromisoformat(due) + timedelta(days=1))
    return min(candidates, default=None)


def scan(conn: Connection, now: datetime, deps: PathwayDeps, limit: int = 5000) -> PathwayResult:
    """One deadline-scanner pass over the pathways whose next threshold has come.

    Only the clock moved for them, so their stored status is moved forward (`living.advance`)
    and only what that changes is written: the status row, the Tasks whose deadline status
    changed, alerts and a status-changed record. A pathway `advance` declines (a future-dated
    event starts to count) is derived again from its history.
    """
    p = schema.pathways
    today = local_date(now)
    due = (
        select(p.c.pathway_key, p.c.status, p.c.national_id, p.c.unit_her_id)
        .where(and_(p.c.next_check_on.is_not(None), p.c.next_check_on <= today))
        .order_by(p.c.next_check_on)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        # Several scanner replicas share the work: each claims rows the others have not locked.
        due = due.with_for_update(skip_locked=True)
    rows = list(conn.execute(due))
    result = PathwayResult()
    moved, rederive = [], []
    for row in rows:
        status = advance(row.status, now)
        if status is None:
            rederive.append(row.pathway_key)
        else:
            moved.append((row, status))
    if rederive:
        refresh(conn, sorted(rederive), now, deps, result)
    if moved:
        _store_advanced(conn, moved, now, deps, result)
    return result


def _store_advanced(
    conn: Connection, moved: list[tuple[Any, dict[str, Any]]], now: datetime, deps: PathwayDeps, result: PathwayResult
) -> None:
    """Write what the clock changed for pathways moved forward by `advance` (their history is unchanged)."""
    p = schema.pathways
    writes = _Writes()
    retime: dict[str, dict[str, Any]] = {}  # Task id -> its moved milestone
    updates = []
    for row, status in moved:
        key, previous = row.pathway_key, row.status
        before = {m["key"]: m for m in previous["milestones"]}
        for m in status["milestones"]:
            old = before.get(m["key"], {})
            if (old.get("deadline_status"), old.get("delay_cause")) != (m["deadline_status"], m["delay_cause"]):
                retime[ids.task_id(key, m["key"])] = m
        updates.append({
            "k_pathway_key": key,
            "status": status,
            **clock_columns(status),
            "derived_at": now,
            "updated_at": now,
        })
        result.refreshed.append(key)
        if _comparable(previous) != _comparable(status):
            result.status_changes += 1
            # a change of the clock alone: no events (messaging owes nothing new)
            writes.status_changed.append(_status_changed_record(
                _status_changed_payload(status, now, None), row.national_id, f"{key}|clock|{now.isoformat()}",
                now, deps.topics))
        _collect_alerts(writes, deadline_transitions(previous, status), status, row.unit_her_id, row.national_id,
                        now)
    if retime:
        r = schema.fhir_resources
        tasks = []
        task_ids = sorted(retime)
        for i in range(0, len(task_ids), 500):
            query = select(r.c.resource).where(r.c.resource_type == "Task", r.c.id.in_(task_ids[i : i + 500]))
            tasks += [retimed_task(res, retime[res["id"]]) for res in conn.execute(query).scalars()]
        upsert_many(conn, [(None, tasks)], now)  # no owner: the pathway's other resources stay as they are
    conn.execute(update(p).where(p.c.pathway_key == bindparam("k_pathway_key")), updates)
    if writes.status_changed:
        conn.execute(insert(schema.outbox), writes.status_changed)
    result.alerts += _store_alerts(conn, writes.alerts, now, deps.topics)


def republish(conn: Connection, pathway_keys: Sequence[str], now: datetime, topics: Topics, cause: str) -> int:
    """A status-changed record for each stored pathway, with its stored status and current history,
    as if it had just changed (``cause`` says why it had not). Nothing is derived again: a consumer
    that must look at a pathway again without a new event (messaging re-planning a pathway's messages
    under new trigger rules) gets it in order with the pathway's other records. Returns how many."""
    p = schema.pathways
    rows = conn.execute(select(p.c.pathway_key, p.c.national_id, p.c.status)
                        .where(among(p.c.pathway_key, list(pathway_keys), conn.dialect.name))).all()
    histories = load_history(conn, [row.pathway_key for row in rows])
    records = []
    for row in rows:
        history = histories.get(row.pathway_key) or []
        if not history:
            continue
        ordered = sorted(history, key=lambda ev: (ev.occurred_at, ev.event_id))
        payload = _status_changed_payload(row.status, now, [ev.to_dict() for ev in ordered])
        payload["cause"] = cause
        records.append(_status_changed_record(payload, row.national_id, f"{cause}|{row.pathway_key}|{now.isoformat()}",
                                              now, topics))
    insert_many(conn, schema.outbox, records)
    return len(records)


def _status_changed_payload(status: dict[str, Any], now: datetime, events: list[dict[str, Any]] | None) -> dict[str, Any]:
    """A pathway.status-changed value: the status and the history in the order it happened, or,
    for a change of the clock alone, no events and `"cause": "clock"`.

    `history_version`: the history's size. A pathway's history only grows, so a consumer can tell
    an older payload, redelivered after a newer one, from the newer (messaging skips it)."""
    payload: dict[str, Any] = {
        "pathway_key": status["pathway_key"],
        "pathway_id": status["pathway_id"],
        "source": status["source"],
        "status": status,
    }
    if events is None:
        payload["cause"] = "clock"
    else:
        payload["events"] = events
        payload["history_version"] = len(events)
    payload["changed_at"] = now.isoformat()
    return payload


def _status_changed_record(
    payload: dict[str, Any], record_key: str, correlation_id: str, now: datetime, topics: Topics
) -> dict[str, Any]:
    return {
        "topic": topics.status_changed,
        "record_key": record_key,
        "value": json_text(payload),
        "headers": {"correlation-id": correlation_id},
        "created_at": now,
    }


def _collect_alerts(
    writes: _Writes,
    transitions: list[Transition],
    status: dict[str, Any],
    unit_her_id: str,
    national_id: str,
    now: datetime,
) -> None:
    """One alert per milestone per transition into due-soon or overdue (stored by `_store_alerts`)."""
    for t in transitions:
        if t.to_status not in ALERTING:
            continue
        key, pathway_id, pathway_type = status["pathway_key"], status["pathway_id"], status["pathway_type"]
        alert_key = f"{key}|{t.milestone_key}|{t.deadline}|{t.to_status}"
        alert = {
            "alertKey": alert_key,
            "pathway": pathway_id,
            "pathwayKey": key,
            "pathwayType": pathway_type,
            "unitHerId": unit_her_id,
            "milestone": t.milestone_key,
            "from": t.from_status.value if t.from_status else None,
            "to": t.to_status.value,
            "deadline": t.deadline.isoformat() if t.deadline else None,
            "adjustedDeadline": t.adjusted_deadline.isoformat() if t.adjusted_deadline else None,
            "at": now.isoformat(),
        }
        writes.alerts.append((alert_key, alert, national_id, t.to_status.value))


def _store_alerts(
    conn: Connection, candidates: list[tuple[str, dict[str, Any], str, str]], now: datetime, topics: Topics
) -> int:
    """Store and publish the alerts not emitted before (the alerts table says which); return how many."""
    if not candidates:
        return 0
    a = schema.alerts
    keys = [c[0] for c in candidates]
    seen: set[str] = set()
    for i in range(0, len(keys), 500):
        seen.update(conn.execute(select(a.c.alert_key).where(
            among(a.c.alert_key, keys[i : i + 500], conn.dialect.name))).scalars())
    rows, outbox = [], []
    for alert_key, alert, record_key, to_status in candidates:
        if alert_key in seen:
            continue
        seen.add(alert_key)
        rows.append(
            {
                "alert_key": alert_key,
                "pathway_key": alert["pathwayKey"],
                "milestone_key": alert["milestone"],
                "to_status": to_status,
                "emitted_at": now,
            }
        )
        outbox.append(
            {
                "topic": topics.alerts,
                "record_key": record_key,
                "value": json.dumps(alert),
                "headers": {"correlation-id": alert_key},
                "created_at": now,
            }
        )
        metrics.alerts_emitted.labels(to_status).inc()
        log.info("deadline alert", extra=ctx(pathway=alert["pathwayKey"], milestone=alert["milestone"], to=to_status))
    insert_many(conn, a, rows)
    insert_many(conn, schema.outbox, outbox)
    return len(rows)


def _history_hash(history: Sequence[PathwayEvent]) -> str:
    return hashlib.sha256("\n".join(sorted(ev.event_id for ev in history)).encode()).hexdigest()


def _comparable(status: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in status.items() if k != "as_of"}

