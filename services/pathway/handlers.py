"""Pathway flow: canonical events -> history -> derive(status) -> FHIR + status + outbox, one unit of work.

Each handler reads consume -> decide -> persist + outbox: the events are added to the history, every
pathway they touch is derived again from its whole history (`derivation.derive_pathway`), what
changed is planned without I/O (`plan_refresh`) and written with its outbox records in the caller's
unit of work. Status is never patched from the last event, so late, corrected and out-of-order
registrations give the same answer as ordered ones. The deadline scanner is `scanner`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from forlop.config import Topics
from forlop.events import PathwayEvent
from forlop.logging import ctx
from forlop.status import PathwayStatus
from services.pathway.alerts import AlertCandidate, collect_alerts, store_alerts
from services.pathway.deps import PathwayDeps
from services.pathway.derivation import (
    Derivation,
    comparable,
    derive_pathway,
    in_order,
    readable,
    status_changed_payload,
    status_changed_record,
)
from services.pathway.domain.living import deadline_transitions
from services.pathway.domain.units import unit_facts, with_units
from services.pathway.ports import PathwayWrites, StoredPathway, UnitOfWork

log = logging.getLogger(__name__)


@dataclass
class PathwayResult:
    stored_events: int = 0
    duplicates: int = 0
    refreshed: list[str] = field(default_factory=list)
    status_changes: int = 0
    alerts: int = 0


@dataclass(frozen=True, slots=True)
class StatusChange:
    """A pathway whose status (or history) changed: what the status-changed record carries."""

    payload: dict[str, Any]
    record_key: str
    correlation: str
    events: list[PathwayEvent]  # the history in the order it happened (`payload["events"]` as events)
    messages: Mapping[str, Any]  # the derivation's prebuilt messages (a replay worker's), else empty


@dataclass
class RefreshPlan:
    """What refreshing a batch of pathways writes: rows and resources, status changes, alert candidates."""

    refreshed: list[str] = field(default_factory=list)
    writes: PathwayWrites = field(default_factory=lambda: PathwayWrites([], [], []))
    status_changes: list[StatusChange] = field(default_factory=list)
    alerts: list[AlertCandidate] = field(default_factory=list)


def record_events(uow: UnitOfWork, events: Sequence[PathwayEvent], now: datetime) -> tuple[list[PathwayEvent], int]:
    """Append the batch's new events to the history (idempotent on event id); return them and the duplicates."""
    new = uow.pathways.add_events(events, now)
    for ev in new:
        log.info("event added to history", extra={"correlation_id": ev.event_id, **ctx(
            pathway=ev.pathway_key, kind=ev.kind.value, code=ev.code, occurred_on=ev.occurred_on.isoformat())})
    return new, len(events) - len(new)


def handle_events(uow: UnitOfWork, events: Sequence[PathwayEvent], now: datetime, deps: PathwayDeps) -> PathwayResult:
    """Store a batch of canonical events and refresh every pathway they touch."""
    new, duplicates = record_events(uow, events, now)
    result = PathwayResult(stored_events=len(new), duplicates=duplicates)
    touched = sorted({ev.pathway_key for ev in new})
    if touched:
        refresh(uow, touched, now, deps, result)
    return result


def refresh(
    uow: UnitOfWork, pathway_keys: Sequence[str], now: datetime, deps: PathwayDeps, result: PathwayResult
) -> None:
    """Re-derive the pathways from their histories and store status, FHIR, outbox and alerts.

    Every pathway is derived on its own; the writes of the whole batch go out as one statement per
    kind (a few round trips per batch, not a few per pathway)."""
    histories = uow.pathways.histories(pathway_keys)
    stored = uow.pathways.lock_stored(pathway_keys)
    derived = [derive_pathway(key, histories[key], now, deps) for key in pathway_keys if histories.get(key)]
    plan = plan_refresh(derived, histories, stored, now)
    stabilise_units(uow, plan, histories, deps)
    uow.pathways.save(plan.writes, now)
    uow.outbox.add([status_changed_record(c.payload, c.record_key, c.correlation, now, deps.topics)
                    for c in plan.status_changes])
    result.refreshed += plan.refreshed
    result.status_changes += len(plan.status_changes)
    result.alerts += store_alerts(uow, plan.alerts, now, deps.topics)


def stabilise_units(uow: UnitOfWork, plan: RefreshPlan, histories: Mapping[str, Sequence[PathwayEvent]],
                    deps: PathwayDeps) -> None:
    """Build the planned Organizations from what every pathway at each unit saw (stored and this
    batch), so they never depend on which pathway was derived last."""
    units = uow.pathways.merge_units(unit_facts(ev for key in plan.refreshed for ev in histories.get(key) or []))
    plan.writes.resources[:] = [(key, with_units(resources, units, deps.trust_names))
                                for key, resources in plan.writes.resources]


def plan_refresh(
    derived: Sequence[Derivation], histories: Mapping[str, Sequence[PathwayEvent]],
    stored: Mapping[str, StoredPathway], now: datetime,
) -> RefreshPlan:
    """What storing these derivations changes, against the pathways' stored rows (pure).

    A pathway's status changes when it is new, its status differs (`as_of` aside) or its history
    does: then it publishes a status change. Alerts follow its deadline transitions."""
    plan = RefreshPlan()
    for d in derived:
        previous = stored.get(d.key)
        plan.writes.resources.append((d.key, d.resources))
        if previous is not None:
            plan.writes.updates.append({"k_pathway_key": d.key, **d.row})
        else:
            plan.writes.inserts.append({"pathway_key": d.key, **d.row})
        plan.refreshed.append(d.key)
        if (
            previous is None
            or comparable(previous.status) != comparable(d.status)
            or previous.history_hash != d.history_hash
        ):
            ordered = in_order(histories[d.key])
            payload = status_changed_payload(d.status, now, [ev.to_dict() for ev in ordered])
            plan.status_changes.append(StatusChange(payload, d.record_key, d.correlation, ordered, d.messages))
            # an unchanged status (`as_of` aside) crosses no deadline
            transitions = deadline_transitions(readable(previous.status if previous else None),
                                               PathwayStatus.from_dict(d.status))
            plan.alerts += collect_alerts(transitions, d.status, d.unit_her_id, d.national_id, now)
    return plan


def refresh_queued(uow: UnitOfWork, now: datetime, deps: PathwayDeps, limit: int = 2000) -> PathwayResult:
    """Derive up to `limit` pathways a replay queued and did not derive (it was stopped before the
    end), and take them off the queue; the scanner's first step."""
    keys = uow.pathways.claim_queued(limit)
    result = PathwayResult()
    if keys:
        refresh(uow, keys, now, deps, result)
        uow.pathways.unqueue(keys)
    return result


def republish(uow: UnitOfWork, pathway_keys: Sequence[str], now: datetime, topics: Topics, cause: str) -> int:
    """A status-changed record for each stored pathway, with its stored status and current history,
    as if it had just changed (``cause`` says why it had not). Nothing is derived again: a consumer
    that must look at a pathway again without a new event (messaging re-planning a pathway's messages
    under new trigger rules) gets it in order with the pathway's other records. Returns how many."""
    rows = uow.pathways.stored(pathway_keys)
    histories = uow.pathways.histories([row.pathway_key for row in rows])
    records = []
    for row in rows:
        history = histories.get(row.pathway_key) or []
        if not history:
            continue
        payload = status_changed_payload(row.status, now, [ev.to_dict() for ev in in_order(history)])
        payload["cause"] = cause
        records.append(status_changed_record(payload, row.national_id, f"{cause}|{row.pathway_key}|{now.isoformat()}",
                                             now, topics))
    uow.outbox.add(records)
    return len(records)
