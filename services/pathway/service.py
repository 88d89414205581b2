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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, insert, select, update

from forlop import metrics
from forlop.clock import local_date
from forlop.config import Topics
from forlop.events import PathwayEvent
from forlop.logging import ctx
from forlop.storage import schema
from services.pathway.domain.derive import derive
from services.pathway.domain.living import deadline_transitions
from services.pathway.domain.rules import RuleBook
from services.pathway.domain.status import DeadlineStatus, MilestoneState, PathwayStatus
from services.pathway.fhir_mapping import map_pathway
from services.pathway.fhir_store import upsert_resources

log = logging.getLogger(__name__)

ALERTING = (DeadlineStatus.DUE_SOON, DeadlineStatus.OVERDUE)


@dataclass
class PathwayResult:
    stored_events: int = 0
    duplicates: int = 0
    refreshed: list[str] = field(default_factory=list)
    status_changes: int = 0
    alerts: int = 0


@dataclass(frozen=True)
class PathwayDeps:
    rules: RuleBook
    topics: Topics
    due_soon_days: int | None = None  # FORLOP_DUE_SOON_DAYS overrides the rule set


def store_events(conn: Connection, events: Sequence[PathwayEvent], now: datetime) -> tuple[list[PathwayEvent], int]:
    """Append new events to the history (idempotent on event id); return the new ones and the duplicates."""
    e = schema.pathway_events
    unique = {ev.event_id: ev for ev in events}
    known = set(
        conn.execute(select(e.c.event_id).where(e.c.event_id.in_(list(unique)))).scalars()
    ) if unique else set()
    new = [ev for eid, ev in unique.items() if eid not in known]
    if new:
        conn.execute(
            insert(e),
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
        for row in conn.execute(select(e.c.pathway_key, e.c.event).where(e.c.pathway_key.in_(chunk))):
            data = json.loads(row.event) if isinstance(row.event, str) else row.event
            out[row.pathway_key].append(PathwayEvent.from_dict(data))
    return out


def handle_events(
    conn: Connection, events: Sequence[PathwayEvent], now: datetime, deps: PathwayDeps
) -> PathwayResult:
    """Store a batch of canonical events and refresh every pathway they touch."""
    new, duplicates = store_events(conn, events, now)
    result = PathwayResult(stored_events=len(new), duplicates=duplicates)
    for ev in new:
        log.info("event added to history", extra={"correlation_id": ev.event_id, **ctx(
            pathway=ev.pathway_key, kind=ev.kind.value, code=ev.code, occurred_on=ev.occurred_on.isoformat())})
    touched = sorted({ev.pathway_key for ev in new})
    if touched:
        refresh(conn, touched, now, deps, result)
    return result


def refresh(
    conn: Connection, pathway_keys: Sequence[str], now: datetime, deps: PathwayDeps, result: PathwayResult
) -> None:
    histories = load_history(conn, pathway_keys)
    p = schema.pathways
    current = select(p.c.pathway_key, p.c.status, p.c.history_hash).where(p.c.pathway_key.in_(list(pathway_keys)))
    if conn.dialect.name == "postgresql":
        current = current.with_for_update()  # serialise with the scanner and other replicas per pathway
    previous_rows = {row.pathway_key: row for row in conn.execute(current)}
    for key in pathway_keys:
        history = histories.get(key) or []
        if not history:
            continue
        status = derive(history, deps.rules, now)
        previous = previous_rows.get(key)
        prev_status = _loads(previous.status) if previous is not None else None
        _save(conn, key, history, status, now, deps, previous is not None)
        result.refreshed.append(key)
        history_hash = _history_hash(history)
        changed = (
            prev_status is None
            or _comparable(prev_status) != _comparable(status.to_dict())
            or previous.history_hash != history_hash
        )
        if changed:
            result.status_changes += 1
            _publish_status_changed(conn, status, history, now, deps.topics)
        result.alerts += _emit_alerts(conn, prev_status, status, history, now, deps.topics)


def _save(
    conn: Connection,
    key: str,
    history: list[PathwayEvent],
    status: PathwayStatus,
    now: datetime,
    deps: PathwayDeps,
    exists: bool,
) -> None:
    latest = max(history, key=lambda ev: (ev.recorded_at, ev.event_id))
    resources = map_pathway(status, history)
    upsert_resources(conn, resources, key, now)
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
        "next_check_on": next_check_on(status, deps),
        "overdue_milestones": sum(1 for m in status.milestones if m.deadline_status is DeadlineStatus.OVERDUE),
        "status": status.to_dict(),
        "patient": facts,
        "history_hash": _history_hash(history),
        "derived_at": now,
        "updated_at": now,
    }
    p = schema.pathways
    if exists:
        conn.execute(update(p).where(p.c.pathway_key == key).values(**row))
    else:
        conn.execute(insert(p).values(pathway_key=key, **row))


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


def next_check_on(status: PathwayStatus, deps: PathwayDeps) -> date | None:
    """The first local date on which an open milestone's deadline status will change."""
    horizon = deps.due_soon_days
    if horizon is None:
        horizon = int(status.extra.get("due_soon_days", 7))
    candidates: list[date] = []
    for m in status.milestones:
        due = m.adjusted_deadline or m.deadline
        if m.state is not MilestoneState.OPEN or due is None:
            continue
        if m.deadline_status is DeadlineStatus.PENDING:
            candidates.append(due - timedelta(days=horizon))
        elif m.deadline_status is DeadlineStatus.DUE_SOON:
            candidates.append(due + timedelta(days=1))
    return min(candidates, default=None)


def scan(conn: Connection, now: datetime, deps: PathwayDeps, limit: int = 5000) -> PathwayResult:
    """One deadline-scanner pass: re-derive the pathways whose next threshold has come."""
    p = schema.pathways
    today = local_date(now)
    due = (
        select(p.c.pathway_key)
        .where(and_(p.c.next_check_on.is_not(None), p.c.next_check_on <= today))
        .order_by(p.c.next_check_on)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        # Several scanner replicas share the work: each claims rows the others have not locked.
        due = due.with_for_update(skip_locked=True)
    keys = list(conn.execute(due).scalars())
    result = PathwayResult()
    if keys:
        refresh(conn, keys, now, deps, result)
    return result


def _publish_status_changed(
    conn: Connection, status: PathwayStatus, history: list[PathwayEvent], now: datetime, topics: Topics
) -> None:
    latest = history[-1]
    payload = {
        "pathway_key": status.pathway_key,
        "pathway_id": status.pathway_id,
        "source": status.source,
        "status": status.to_dict(),
        "events": [ev.to_dict() for ev in sorted(history, key=lambda ev: (ev.occurred_at, ev.event_id))],
        "changed_at": now.isoformat(),
    }
    conn.execute(
        insert(schema.outbox).values(
            topic=topics.status_changed,
            record_key=latest.patient.national_id,
            value=json.dumps(payload, ensure_ascii=False),
            headers={"correlation-id": max(history, key=lambda ev: ev.recorded_at).event_id},
            created_at=now,
        )
    )


def _emit_alerts(
    conn: Connection,
    prev_status: dict[str, Any] | None,
    status: PathwayStatus,
    history: list[PathwayEvent],
    now: datetime,
    topics: Topics,
) -> int:
    """One alert per milestone per transition into due-soon or overdue, never twice (alerts table)."""
    emitted = 0
    for t in deadline_transitions(prev_status, status):
        if t.to_status not in ALERTING:
            continue
        alert_key = f"{status.pathway_key}|{t.milestone_key}|{t.deadline}|{t.to_status}"
        a = schema.alerts
        if conn.execute(select(a.c.alert_key).where(a.c.alert_key == alert_key)).first():
            continue
        conn.execute(
            insert(a).values(
                alert_key=alert_key,
                pathway_key=status.pathway_key,
                milestone_key=t.milestone_key,
                to_status=t.to_status.value,
                emitted_at=now,
            )
        )
        latest = history[-1]
        alert = {
            "alertKey": alert_key,
            "pathway": status.pathway_id,
            "pathwayKey": status.pathway_key,
            "pathwayType": status.pathway_type,
            "unitHerId": latest.unit.her_id,
            "milestone": t.milestone_key,
            "from": t.from_status.value if t.from_status else None,
            "to": t.to_status.value,
            "deadline": t.deadline.isoformat() if t.deadline else None,
            "adjustedDeadline": t.adjusted_deadline.isoformat() if t.adjusted_deadline else None,
            "at": now.isoformat(),
        }
        conn.execute(
            insert(schema.outbox).values(
                topic=topics.alerts,
                record_key=latest.patient.national_id,
                value=json.dumps(alert),
                headers={"correlation-id": alert_key},
                created_at=now,
            )
        )
        metrics.alerts_emitted.labels(t.to_status.value).inc()
        log.info("deadline alert", extra=ctx(pathway=status.pathway_key, milestone=t.milestone_key, to=t.to_status))
        emitted += 1
    return emitted


def _history_hash(history: Sequence[PathwayEvent]) -> str:
    return hashlib.sha256("\n".join(sorted(ev.event_id for ev in history)).encode()).hexdigest()


def _comparable(status: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in status.items() if k != "as_of"}


def _loads(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value
