"""Entrypoints for consumed records, inside the caller's transaction: status changes and AppRecs."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from forlop.events import PathwayEvent
from forlop.logging import ctx
from services.messaging import repository
from services.messaging.apply import apply_changes, release_held
from services.messaging.deps import MessagingDeps
from services.messaging.domain.owed import owed_messages, withdrawn_registrations
from services.messaging.domain.plan import reconcile
from services.messaging.receipts import apply_apprec

log = logging.getLogger(__name__)


def handle_status_changed(conn: Connection, payload: dict[str, Any], now: datetime, deps: MessagingDeps) -> None:
    """Bring the pathway's messages in line with its full current history. Idempotent for redeliveries."""
    events = [PathwayEvent.from_dict(e) for e in payload.get("events") or []]
    if not events:
        return  # a change of the clock alone (deadline statuses, "cause": "clock") owes no message
    pathway_key = payload.get("pathway_key") or events[0].pathway_key
    pathway_id = payload.get("pathway_id") or events[0].pathway_id
    status = payload.get("status") if isinstance(payload.get("status"), dict) else None
    owed = owed_messages(events, status, deps.municipal, deps.gps)
    rows = repository.rows_for_pathway(conn, pathway_key)
    changes = reconcile(owed, rows, withdrawn_registrations(events))
    apply_changes(conn, changes, pathway_key, pathway_id, now, deps)
    # Held rows the reconciliation did not touch (e.g. PLO schema now present) get another chance.
    held = repository.held_ids_for_pathway(conn, pathway_key)
    if held:
        release_held(conn, now, deps, held)
    if changes:
        log.info("messages reconciled", extra=ctx(pathway=pathway_key, changes=len(changes)))


def handle_apprec(conn: Connection, raw: bytes, now: datetime, deps: MessagingDeps) -> None:
    apply_apprec(conn, raw, now, deps)
