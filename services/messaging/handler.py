"""Entrypoints for consumed records, inside the caller's transaction: status changes and AppRecs."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from forlop.events import PathwayEvent
from forlop.logging import ctx
from services.messaging import repository
from services.messaging.apply import apply_changes, release_held
from services.messaging.deps import MessagingDeps
from services.messaging.domain.model import MessageStatus
from services.messaging.domain.owed import owed_messages, withdrawn_registrations
from services.messaging.domain.plan import Insert, reconcile
from services.messaging.receipts import apply_apprec

log = logging.getLogger(__name__)


def handle_status_changed(conn: Connection, payload: dict[str, Any], now: datetime, deps: MessagingDeps) -> None:
    """Bring the pathway's messages in line with its full current history. Idempotent for redeliveries."""
    handle_status_changes(conn, [payload], now, deps)


def handle_status_changes(
    conn: Connection, payloads: Sequence[dict[str, Any]], now: datetime, deps: MessagingDeps,
    on_each: Callable[[dict[str, Any]], None] | None = None,
) -> None:
    """`handle_status_changed` for each payload in order, with one query for the pathways' stored
    messages and one executemany for the new ones (per message it was ~10 % of a replay).

    New rows wait in `inserts` until the batch ends, unless a held message may need another look
    or the same pathway comes again after a change (both read the table).
    """
    handle_parsed_status_changes(
        conn, [(p, [PathwayEvent.from_dict(e) for e in p.get("events") or []]) for p in payloads], now, deps, on_each)


def handle_parsed_status_changes(
    conn: Connection, changes: Sequence[tuple[dict[str, Any], list[PathwayEvent]]], now: datetime,
    deps: MessagingDeps, on_each: Callable[[dict[str, Any]], None] | None = None,
    prebuilt: Mapping[str, Any] | None = None,
) -> None:
    """`handle_status_changes` for payloads whose events are at hand as events already (replay's
    in-process hand-over: the pathway service's own history, in the order it happened), with the
    messages a worker built ahead (`prebuilt`, see `services.messaging.prebuild`)."""
    # a change of the clock alone (deadline statuses, "cause": "clock") owes no message
    changed = [(p, events) for p, events in changes if events]
    if not changed:
        return
    stored = repository.rows_for_pathways(conn, {p.get("pathway_key") or ev[0].pathway_key for p, ev in changed})
    inserts: list[dict[str, Any]] = []
    dirty: set[str] = set()  # pathways whose rows changed in this batch: `stored` is stale for them

    def write_inserts() -> None:
        repository.insert_messages(conn, inserts)
        inserts.clear()

    for payload, events in changed:
        if on_each is not None:
            on_each(payload)
        pathway_key = payload.get("pathway_key") or events[0].pathway_key
        pathway_id = payload.get("pathway_id") or events[0].pathway_id
        if pathway_key in dirty:
            write_inserts()
            stored[pathway_key] = repository.rows_for_pathway(conn, pathway_key)
            dirty.discard(pathway_key)
        status = payload.get("status") if isinstance(payload.get("status"), dict) else None
        owed = owed_messages(events, status, deps.municipal, deps.gps, deps.triggers)
        rows = stored.get(pathway_key, [])
        changes = reconcile(owed, rows, withdrawn_registrations(events))
        first_new = len(inserts)
        apply_changes(conn, changes, pathway_key, pathway_id, now, deps, inserts, prebuilt)
        if changes:
            dirty.add(pathway_key)
        # Held rows the reconciliation did not touch (e.g. PLO schema now present) get another chance.
        if any(r["status"] == MessageStatus.HELD for r in (*rows, *inserts[first_new:])) or any(
            not isinstance(c, Insert) for c in changes
        ):
            write_inserts()
            held = repository.held_ids_for_pathway(conn, pathway_key)
            if held:
                release_held(conn, now, deps, held)
                dirty.add(pathway_key)
        if changes:
            log.info("messages reconciled", extra=ctx(pathway=pathway_key, changes=len(changes)))
    write_inserts()


def handle_apprec(conn: Connection, raw: bytes, now: datetime, deps: MessagingDeps) -> None:
    apply_apprec(conn, raw, now, deps)
