"""Entrypoints for consumed records, inside the caller's transaction: status changes and AppRecs.

Every decision is made on rows read under lock: a batch first locks its pathways (messaging's
`messaging_pathways` rows, by key) and then every message it may touch (by id), in one statement
each (`repository`'s lock order), and reconciles from those rows. A status change whose history is
older than the newest one reconciled for its pathway (a redelivery after a newer one) is skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from forlop.events import PathwayEvent
from forlop.logging import correlation_id, ctx
from forlop.status import PathwayStatus
from services.messaging import metrics
from services.messaging.adapters import repository
from services.messaging.adapters.apprec import AppRec
from services.messaging.apply import BuildNew, apply_changes, build_for, release_held
from services.messaging.deps import MessagingDeps
from services.messaging.domain.model import MessageStatus
from services.messaging.domain.owed import owed_messages, withdrawn_registrations
from services.messaging.domain.plan import Insert, reconcile
from services.messaging.receipts import apply_apprec, apply_parsed, parse

log = logging.getLogger(__name__)

StatusChange = tuple[dict[str, Any], list[PathwayEvent]]


@dataclass(frozen=True, slots=True)
class Inbound:
    """One consumed record for messaging: a status change's payload, or an AppRec's bytes."""

    payload: dict[str, Any] | None = None
    apprec: bytes | None = None
    correlation: str | None = None


def handle_status_changed(conn: Connection, payload: dict[str, Any], now: datetime, deps: MessagingDeps) -> None:
    """Bring the pathway's messages in line with its full current history. Idempotent for redeliveries."""
    handle_status_changes(conn, [payload], now, deps)


def handle_status_changes(
    conn: Connection, payloads: Sequence[dict[str, Any]], now: datetime, deps: MessagingDeps,
    on_each: Callable[[dict[str, Any]], None] | None = None,
) -> None:
    """`handle_status_changed` for each payload in order, with one query for the pathways' stored
    messages and one executemany for the new ones (per message it was ~10 % of a replay)."""
    handle_parsed_status_changes(conn, [_parsed(p) for p in payloads], now, deps, on_each)


def handle_parsed_status_changes(
    conn: Connection, changes: Sequence[StatusChange], now: datetime,
    deps: MessagingDeps, on_each: Callable[[dict[str, Any]], None] | None = None,
    build_new: BuildNew = build_for,
) -> None:
    """`handle_status_changes` for payloads whose events are at hand as events already (replay's
    in-process hand-over: the pathway service's own history, in the order it happened); `build_new`:
    how a new queued message gets its XML (a replay's: `services.messaging.prebuild.prebuilt_builder`)."""
    batch = _Batch.locked(conn, now, deps, [c for c in changes if c[1]], set(), build_new)
    if batch is not None:
        batch.reconcile(changes, on_each)
        batch.finish()


def handle_batch(conn: Connection, records: Sequence[Inbound], now: datetime, deps: MessagingDeps) -> None:
    """A consumer batch of status changes and AppRecs, in order, with every lock taken first."""
    parsed: list[tuple[Inbound, Any]] = [
        (r, parse(r.apprec) if r.apprec is not None else _parsed(r.payload or {})) for r in records]
    changes = [p for r, p in parsed if r.apprec is None]
    answered = {p.original_msg_id for _, p in parsed if isinstance(p, AppRec)}
    batch = _Batch.locked(conn, now, deps, changes, answered, build_for)
    run: list[tuple[Inbound, StatusChange]] = []

    def flush() -> None:
        if batch is not None and run:
            correlations = {id(change[0]): r.correlation for r, change in run}
            batch.reconcile([change for _, change in run], lambda p: correlation_id.set(correlations.get(id(p))))
        run.clear()

    for r, p in parsed:
        if r.apprec is None:
            run.append((r, p))
            continue
        flush()
        correlation_id.set(r.correlation)
        apply_parsed(conn, r.apprec, p, now, deps)
        if batch is not None and isinstance(p, AppRec):
            batch.touched(p.original_msg_id)
    flush()
    if batch is not None:
        batch.finish()


def handle_apprec(conn: Connection, raw: bytes, now: datetime, deps: MessagingDeps) -> None:
    apply_apprec(conn, raw, now, deps)


def _parsed(payload: dict[str, Any]) -> StatusChange:
    return payload, [PathwayEvent.from_dict(e) for e in payload.get("events") or []]


def status_of(payload: Mapping[str, Any]) -> PathwayStatus | None:
    """The pathway status a status change carries (typed from here on), if any."""
    status = payload.get("status")
    return PathwayStatus.from_dict(status) if isinstance(status, dict) else None


def history_version(payload: Mapping[str, Any], events: Sequence[PathwayEvent]) -> int:
    """The size of the history a status change carries (`history_version`; a payload of an older
    pathway service without it: its distinct events)."""
    version = payload.get("history_version")
    if isinstance(version, int) and not isinstance(version, bool):
        return version
    return len({ev.event_id for ev in events})


@dataclass
class _Batch:
    """The locked rows of one transaction's status changes, kept current as they change.

    New rows wait in `inserts` until the batch ends, unless a held message may need another look
    or the same pathway comes again after a change (both read the table)."""

    conn: Connection
    now: datetime
    deps: MessagingDeps
    stored: dict[str, list[dict[str, Any]]]
    versions: dict[str, int]
    build_new: BuildNew
    inserts: list[dict[str, Any]] = field(default_factory=list)
    dirty: set[str] = field(default_factory=set)  # pathways whose rows changed: `stored` is stale for them
    reconciled: dict[str, int] = field(default_factory=dict)  # the newest history reconciled, to store

    @classmethod
    def locked(cls, conn: Connection, now: datetime, deps: MessagingDeps, changes: Sequence[StatusChange],
               answered: set[str], build_new: BuildNew) -> _Batch | None:
        # a change of the clock alone (deadline statuses, "cause": "clock") owes no message
        keys = {_key(p, events) for p, events in changes if events}
        if not keys and not answered:
            return None
        versions = repository.lock_pathways(conn, keys, now)
        stored = repository.lock_for_reconcile(conn, keys, answered)
        return cls(conn, now, deps, stored, versions, build_new)

    def touched(self, msg_id: str) -> None:
        """A message changed outside the reconciliation (an AppRec): its pathway is read again."""
        for key, rows in self.stored.items():
            if any(r["id"] == msg_id for r in rows):
                self.dirty.add(key)

    def reconcile(self, changes: Sequence[StatusChange], on_each: Callable[[dict[str, Any]], None] | None) -> None:
        conn, now, deps = self.conn, self.now, self.deps
        for payload, events in changes:
            if not events:
                continue
            if on_each is not None:
                on_each(payload)
            pathway_key = _key(payload, events)
            pathway_id = payload.get("pathway_id") or events[0].pathway_id
            version = history_version(payload, events)
            newest = max(self.versions.get(pathway_key, 0), self.reconciled.get(pathway_key, 0))
            if version < newest:
                log.info("older pathway history skipped", extra=ctx(pathway=pathway_key, version=version,
                                                                       newest=newest))
                metrics.older_histories.inc()
                continue
            self.reconciled[pathway_key] = version
            if pathway_key in self.dirty:
                self.write_inserts()
                self.stored[pathway_key] = repository.rows_for_pathway(conn, pathway_key)  # locked already
                self.dirty.discard(pathway_key)
            owed = owed_messages(events, status_of(payload), deps.municipal, deps.gps, deps.triggers)
            rows = self.stored.get(pathway_key, [])
            changes_ = reconcile(owed, rows, withdrawn_registrations(events))
            first_new = len(self.inserts)
            apply_changes(conn, changes_, pathway_key, pathway_id, now, deps, self.inserts, self.build_new)
            if changes_:
                self.dirty.add(pathway_key)
            # Held rows the reconciliation did not touch (e.g. PLO schema now present) get another chance.
            if any(r["status"] == MessageStatus.HELD for r in (*rows, *self.inserts[first_new:])) or any(
                not isinstance(c, Insert) for c in changes_
            ):
                self.write_inserts()
                held = repository.held_ids_for_pathway(conn, pathway_key)
                if held:
                    release_held(conn, now, deps, held)
                    self.dirty.add(pathway_key)
            if changes_:
                log.info("messages reconciled", extra=ctx(pathway=pathway_key, changes=len(changes_)))

    def write_inserts(self) -> None:
        repository.insert_messages(self.conn, self.inserts)
        self.inserts.clear()

    def finish(self) -> None:
        self.write_inserts()
        repository.set_history_versions(
            self.conn, {k: v for k, v in self.reconciled.items() if v != self.versions.get(k)}, self.now)


def _key(payload: Mapping[str, Any], events: Sequence[PathwayEvent]) -> str:
    return payload.get("pathway_key") or events[0].pathway_key
