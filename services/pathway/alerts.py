"""Deadline alerts: one per milestone per transition into due-soon or overdue, emitted once.

`collect_alerts` decides (pure); `store_alerts` keeps those not emitted before and writes each with
its outbox record in the caller's unit of work.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from forlop import metrics
from forlop.config import Topics
from forlop.logging import ctx
from forlop.status import DeadlineStatus
from services.pathway.domain.living import Transition
from services.pathway.ports import UnitOfWork

log = logging.getLogger(__name__)

ALERTING = (DeadlineStatus.DUE_SOON, DeadlineStatus.OVERDUE)


@dataclass(frozen=True, slots=True)
class AlertCandidate:
    key: str
    alert: dict[str, Any]
    record_key: str  # the patient's national id: the alerts topic's key
    to_status: str


def collect_alerts(
    transitions: list[Transition], status: dict[str, Any], unit_her_id: str, national_id: str, now: datetime
) -> list[AlertCandidate]:
    """The alerts of a pathway's deadline transitions (those into due-soon or overdue)."""
    out = []
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
        out.append(AlertCandidate(alert_key, alert, national_id, t.to_status.value))
    return out


def store_alerts(uow: UnitOfWork, candidates: Sequence[AlertCandidate], now: datetime, topics: Topics) -> int:
    """Store and publish the alerts not emitted before (the alerts table says which); return how many."""
    if not candidates:
        return 0
    seen = uow.pathways.alerts_emitted([c.key for c in candidates])
    rows, outbox = [], []
    for c in candidates:
        if c.key in seen:
            continue
        seen.add(c.key)
        rows.append(
            {
                "alert_key": c.key,
                "pathway_key": c.alert["pathwayKey"],
                "milestone_key": c.alert["milestone"],
                "to_status": c.to_status,
                "emitted_at": now,
            }
        )
        outbox.append(
            {
                "topic": topics.alerts,
                "record_key": c.record_key,
                "value": json.dumps(c.alert),
                "headers": {"correlation-id": c.key},
                "created_at": now,
            }
        )
        metrics.alerts_emitted.labels(c.to_status).inc()
        log.info("deadline alert", extra=ctx(pathway=c.alert["pathwayKey"], milestone=c.alert["milestone"],
                                            to=c.to_status))
    uow.pathways.add_alerts(rows)
    uow.outbox.add(outbox)
    return len(rows)
