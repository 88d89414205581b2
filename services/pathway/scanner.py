"""The deadline scanner: pathways whose next threshold (due soon, overdue) has come, with no new event.

Only the clock moved for them, so their stored status is moved forward (`living.advance`) and only
what that changes is written: the status row, the Tasks whose deadline status changed, alerts and a
status-changed record. A pathway `advance` declines (a future-dated event starts to count) is
derived again from its history (`handlers.refresh`).
"""

from __future__ import annotations

from datetime import datetime

from forlop.clock import local_date
from forlop.fhir import ids
from forlop.status import Milestone, PathwayStatus
from services.pathway.alerts import AlertCandidate, collect_alerts, store_alerts
from services.pathway.deps import PathwayDeps
from services.pathway.derivation import (
    clock_columns,
    comparable,
    readable,
    status_changed_payload,
    status_changed_record,
)
from services.pathway.domain.fhir_mapping import retimed_task
from services.pathway.domain.living import advance, deadline_transitions
from services.pathway.handlers import PathwayResult, refresh
from services.pathway.ports import StoredPathway, UnitOfWork


def scan(uow: UnitOfWork, now: datetime, deps: PathwayDeps, limit: int = 5000) -> PathwayResult:
    """One deadline-scanner pass over the pathways whose next threshold has come."""
    rows = uow.pathways.due_for_check(local_date(now), limit)
    result = PathwayResult()
    moved, rederive = [], []
    for row in rows:
        previous = readable(row.status)
        status = advance(previous, now) if previous is not None else None
        if previous is None or status is None:
            rederive.append(row.pathway_key)
        else:
            moved.append((row, previous, status))
    if rederive:
        refresh(uow, sorted(rederive), now, deps, result)
    if moved:
        _store_advanced(uow, moved, now, deps, result)
    return result


def _store_advanced(
    uow: UnitOfWork, moved: list[tuple[StoredPathway, PathwayStatus, PathwayStatus]], now: datetime,
    deps: PathwayDeps, result: PathwayResult,
) -> None:
    """Write what the clock changed for pathways moved forward by `advance` (their history is unchanged)."""
    retime: dict[str, Milestone] = {}  # Task id -> its moved milestone
    updates, status_changed = [], []
    alerts: list[AlertCandidate] = []
    for row, previous, status in moved:
        key = row.pathway_key
        before = {m.key: m for m in previous.milestones}
        for m in status.milestones:
            old = before.get(m.key)
            if old is None or (old.deadline_status, old.delay_cause) != (m.deadline_status, m.delay_cause):
                retime[ids.task_id(key, m.key)] = m
        stored = status.to_dict()
        updates.append({
            "k_pathway_key": key,
            "status": stored,
            **clock_columns(status),
            "derived_at": now,
            "updated_at": now,
        })
        result.refreshed.append(key)
        if comparable(row.status) != comparable(stored):
            result.status_changes += 1
            # a change of the clock alone: no events (messaging owes nothing new)
            status_changed.append(status_changed_record(
                status_changed_payload(stored, now, None), row.national_id, f"{key}|clock|{now.isoformat()}",
                now, deps.topics))
        alerts += collect_alerts(deadline_transitions(previous, status), stored, row.unit_her_id, row.national_id,
                                 now)
    if retime:
        tasks = [retimed_task(res, retime[res["id"]]) for res in uow.pathways.tasks(list(retime))]
        uow.pathways.save_tasks(tasks, now)
    uow.pathways.save_clock(updates)
    uow.outbox.add(status_changed)
    result.alerts += store_alerts(uow, alerts, now, deps.topics)
