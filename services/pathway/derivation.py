"""One pathway derived from its history, and what a change of its status publishes: pure, no I/O.

`derive_pathway` gives everything a refresh stores for a pathway (status, FHIR resources, the row
that holds them); the Kafka handlers, the deadline scanner and a replay's worker processes all
derive through it, so the same history and `now` give the same row whichever path stored it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from forlop.codec import json_text
from forlop.config import Topics
from forlop.events import PathwayEvent
from forlop.history import history_hash
from forlop.status import PathwayStatus
from services.pathway.deps import PathwayDeps
from services.pathway.domain.derive import derive
from services.pathway.domain.fhir_mapping import map_pathway
from services.pathway.domain.living import next_check_on, overdue_milestones


@dataclass
class Derivation:
    """One pathway derived from its history: everything a refresh stores for it that needs no database.

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
        **clock_columns(status),
        "status": status_dict,
        "patient": facts,
        "history_hash": history_hash or history_hash_of(history),
        "derived_at": now,
        "updated_at": now,
    }
    return Derivation(
        key=key,
        as_of=now,
        status=status_dict,
        history_hash=row["history_hash"],
        resources=map_pathway(status, list(history), validate=deps.validate_fhir, trust_names=deps.trust_names),
        row=row,
        unit_her_id=latest.unit.her_id,
        national_id=latest.patient.national_id,
        record_key=history[-1].patient.national_id,
        correlation=max(history, key=lambda ev: ev.recorded_at).event_id,
    )


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


def clock_columns(status: PathwayStatus) -> dict[str, Any]:
    """The pathway row's columns the scanner reads."""
    return {"next_check_on": next_check_on(status), "overdue_milestones": overdue_milestones(status)}


def history_hash_of(history: Sequence[PathwayEvent]) -> str:
    return history_hash(ev.event_id for ev in history)


def readable(stored: dict[str, Any] | None) -> PathwayStatus | None:
    """A stored status, typed; None when there is none or it is not in the form this version reads
    (the pathway is then derived again)."""
    if not stored:
        return None
    try:
        return PathwayStatus.from_dict(stored)
    except (KeyError, TypeError, ValueError):
        return None


def comparable(status: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in status.items() if k != "as_of"}


def in_order(history: Sequence[PathwayEvent]) -> list[PathwayEvent]:
    """The history in the order it happened, as a status change carries it."""
    return sorted(history, key=lambda ev: (ev.occurred_at, ev.event_id))


def status_changed_payload(status: dict[str, Any], now: datetime, events: list[dict[str, Any]] | None) -> dict[str, Any]:
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


def status_changed_record(
    payload: dict[str, Any], record_key: str, correlation_id: str, now: datetime, topics: Topics
) -> dict[str, Any]:
    """The outbox row that publishes a status change."""
    return {
        "topic": topics.status_changed,
        "record_key": record_key,
        "value": json_text(payload),
        "headers": {"correlation-id": correlation_id},
        "created_at": now,
    }
