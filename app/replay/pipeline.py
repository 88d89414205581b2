"""`forlop replay`: a file of vendor events through the services' own decisions, no broker.

The replay is an adapter of its own: it composes the pure functions the Kafka handlers use
(checking vendor records, `derive_pathway`, `plan_refresh`, messaging's plan) with the pathway
service's bulk unit of work (`BulkUnitOfWork`) and its worker processes (`app.replay.workers`).
Each batch is checked, its accepted events stored and their pathways queued in one transaction;
at the end each queued pathway is derived once and its status change handed to messaging in the
same transaction as the derivation, as the consumer would receive it. The in-process hops write
no outbox records (nothing outside would read them): an event is not written, read back, parsed
and marked twice. Replaying the same file twice changes nothing.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import orjson
from sqlalchemy import Connection

from app.bootstrap import Runtime
from app.replay.workers import ReplayWorkers, check_batch, derive_batch, unpacked
from forlop.events import PathwayEvent
from forlop.kafka import Record, TxHandler
from services.ingest.public import InboundRecord, Problem, SqlIngestUnitOfWork, accept, check_records
from services.pathway.public import (
    BulkUnitOfWork,
    Derivation,
    derive_pathway,
    history_hash_of,
    plan_refresh,
    queued_after,
    queued_count,
    record_events,
    stabilise_units,
    store_alerts,
)

# Pathways per chunk when workers derive ahead. Smaller than the chunk without workers: the
# worker's result waits in memory while the chunk before is written, and the first and last
# chunks run without overlap; a smaller one pays more commits than it saves (the chunk sizes
# measured: docs/performance.md).
AHEAD_CHUNK = 500


@dataclass
class ReplayCounts:
    read: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    pathways: int = 0  # derived
    status_changes: int = 0  # handed to messaging
    seconds: float = 0.0

    def line(self) -> str:
        rate = self.read / self.seconds if self.seconds else 0.0
        return (
            f"{self.read} events read: {self.accepted} accepted, {self.duplicates} duplicate, "
            f"{self.rejected} rejected, {self.pathways} pathways derived ({rate:,.0f} events/s)"
        )


def _batches(path: Path, size: int) -> Iterator[list[InboundRecord]]:
    batch: list[InboundRecord] = []
    with path.open("rb") as fp:
        for number, line in enumerate(fp, start=1):
            if not line.strip():
                continue
            batch.append(InboundRecord(line.rstrip(b"\r\n"), f"replay:{path.name}:{number}"))
            if len(batch) >= size:
                yield batch
                batch = []
    if batch:
        yield batch


class Progress:
    def __init__(self, total: int, out: TextIO) -> None:
        self.total = max(1, total)
        self.out = out
        self.tty = out.isatty()
        self.last = 0.0
        self.shown = ""

    def show(self, done: int, text: str, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.last < (0.2 if self.tty else 5.0):
            return
        self.last = now
        share = min(1.0, done / self.total)
        bar = "#" * int(share * 30)
        line = f"[{bar:<30}] {share:6.1%} {text}"
        if line == self.shown and not self.tty:
            return  # a log file gets the final line once
        self.shown = line
        self.out.write(("\r" if self.tty else "") + line + ("\n" if final or not self.tty else ""))
        self.out.flush()


def _checked_batches(
    path: Path, size: int, source: str, workers: ReplayWorkers | None
) -> Iterator[tuple[list[InboundRecord], list[PathwayEvent | list[Problem]] | None]]:
    """The file's batches, each with what the workers' `check_records` gave for it (None without
    workers); the workers check the next batches while the caller stores this one."""
    if workers is None:
        for batch in _batches(path, size):
            yield batch, None
        return
    ahead: deque[tuple[list[InboundRecord], Future[Any]]] = deque()
    for batch in _batches(path, size):
        ahead.append((batch, workers.submit(check_batch, source, batch)))
        if len(ahead) > workers.count:
            yield _checked(*ahead.popleft())
    while ahead:
        yield _checked(*ahead.popleft())


def _checked(batch: list[InboundRecord], future: Future[Any]) -> tuple[list[InboundRecord], list[Any]]:
    return batch, [PathwayEvent.from_dict(c) if isinstance(c, dict) else c for c in unpacked(future)]


def replay_file(
    runtime: Runtime, source: str, path: Path, *, batch_size: int = 1000, progress: TextIO | None = sys.stderr,
    workers: int = 0,
) -> ReplayCounts:
    """Store the file's events batch by batch, then derive every pathway they touched once.

    A pathway's events are spread over the file; deriving it after each batch that touches it
    would derive it again and again (and message and alert on statuses that were never real).
    The pathways wait in `pathway_refresh_queue` between the two phases, so a replay stopped
    half-way is finished by the next replay or by the pathway service's scanner.
    `workers`: processes that check, derive and build messages for the next batch while this
    one is written (`app.replay.workers`); 0 computes everything in this process. They are
    spawned, so a script that calls this with workers needs the `if __name__ == "__main__"` guard.
    """
    # Canonical events an earlier replay or an API intake left in the outbox go first (per-patient order).
    runtime.drain_outbox({runtime.settings.topics.events: events_handler(runtime)})
    pool = None
    if workers > 0:
        # The workers wire the same messaging from the same settings: a configuration error (the
        # XSD directory, say) shows here, not as a worker that died starting.
        _ = runtime.messaging
        pool = ReplayWorkers(runtime.settings, runtime.store.url.render_as_string(hide_password=False), workers)
    try:
        return _replay(runtime, source, path, batch_size, progress, pool)
    finally:
        if pool is not None:
            pool.close()


def _replay(
    runtime: Runtime, source: str, path: Path, batch_size: int, progress: TextIO | None, pool: ReplayWorkers | None
) -> ReplayCounts:
    counts = ReplayCounts()
    bar = Progress(path.stat().st_size, progress) if progress else None
    started = time.perf_counter()
    done_bytes = 0
    for batch, checked in _checked_batches(path, batch_size, source, pool):
        outcomes = checked if checked is not None else check_records(source, batch)
        with runtime.store.transaction() as conn:
            now = runtime.clock()
            result = accept(SqlIngestUnitOfWork(conn), source, batch, outcomes, now, runtime.settings.topics)
            store_events(BulkUnitOfWork(conn), result.accepted, now)
        counts.read += len(batch)
        counts.accepted += len(result.accepted)
        counts.duplicates += result.duplicates
        counts.rejected += len(result.rejected)
        done_bytes += sum(len(r.raw) + 1 for r in batch if isinstance(r.raw, bytes))
        if bar:
            bar.show(done_bytes, f"{counts.read:>9} events")
    if bar:
        bar.show(done_bytes, f"{counts.read:>9} events", final=True)
    counts.pathways, counts.status_changes = derive_queued(runtime, progress, workers=pool)
    # What the replay wrote is most of what the tables hold: the queries that follow (the API's,
    # the services') plan by it, not by statistics of the tables before it.
    runtime.store.analyze()
    counts.seconds = time.perf_counter() - started
    return counts


def store_events(uow: BulkUnitOfWork, events: Sequence[PathwayEvent], now: datetime) -> None:
    """The first phase for a batch: its new events into the history, their pathways queued (not derived)."""
    new, _ = record_events(uow, events, now)
    uow.pathways.queue(sorted({ev.pathway_key for ev in new}), now)


def events_handler(runtime: Runtime) -> TxHandler:
    """Canonical events delivered in-process (from the outbox), stored and queued as a replay's batch is."""

    def handle(conn: Connection, records: Sequence[Record]) -> None:
        events = [PathwayEvent.from_dict(orjson.loads(r.value)) for r in records]
        store_events(BulkUnitOfWork(conn), events, runtime.clock())

    return handle


@dataclass
class Derived:
    """What one derive chunk did: the pathways derived and how many status changes went to messaging."""

    refreshed: list[str]
    status_changes: int


def derive_queued(
    runtime: Runtime, progress: TextIO | None, chunk: int = 2000, workers: ReplayWorkers | None = None
) -> tuple[int, int]:
    """Derive the queued pathways, a chunk per transaction, and hand their status changes to messaging
    in the same transaction; return (pathways derived, status changes). With `workers`, chunks are
    `AHEAD_CHUNK` pathways instead of `chunk`."""
    # Status changes still in the outbox (the pathway service's, or an earlier replay's) go first.
    runtime.drain_outbox(runtime.topic_handlers(["messaging"]))
    total = queued_count(runtime.store)
    bar = Progress(total, progress) if progress and total else None
    derived = changes = 0
    for result in _derive_ahead(runtime, workers) if workers is not None else _derive_in_turn(runtime, chunk):
        derived += len(result.refreshed)
        changes += result.status_changes
        if bar:
            bar.show(derived, f"{derived:>9} pathways derived")
    if bar:
        bar.show(derived, f"{derived:>9} pathways derived", final=True)
    return derived, changes


def _derive_chunk(
    runtime: Runtime, now: datetime, limit: int, keys: list[str] | None = None,
    ready: dict[str, Derivation] | None = None,
) -> Derived:
    """One transaction: queued pathways claimed, derived, stored and taken off the queue, their status
    changes handed to messaging. `keys`: only those of these still queued (a chunk read ahead);
    `ready`: the workers' derivations of them, used where the history is still the one derived."""
    deps = runtime.pathway_deps
    with runtime.store.transaction() as conn:
        uow = BulkUnitOfWork(conn)
        claimed = uow.pathways.claim_queued(limit) if keys is None else uow.pathways.claim_queued_among(keys, limit)
        if not claimed:
            return Derived([], 0)
        histories = uow.pathways.histories(claimed)
        stored = uow.pathways.lock_stored(claimed)
        derived = []
        for key in claimed:
            history = histories.get(key)
            if not history:
                continue
            history_hash = history_hash_of(history)
            d = (ready or {}).get(key)
            if d is None or d.history_hash != history_hash or d.as_of != now:
                d = derive_pathway(key, history, now, deps, history_hash)
            derived.append(d)
        plan = plan_refresh(derived, histories, stored, now)
        stabilise_units(uow, plan, histories, deps)
        uow.pathways.save(plan.writes, now)
        store_alerts(uow, plan.alerts, now, deps.topics)
        uow.pathways.unqueue(claimed)
        runtime.hand_to_messaging(conn, plan.status_changes, now)
    return Derived(plan.refreshed, len(plan.status_changes))


def _derive_in_turn(runtime: Runtime, chunk: int) -> Iterator[Derived]:
    while (result := _derive_chunk(runtime, runtime.clock(), chunk)).refreshed:
        yield result


def _derive_ahead(runtime: Runtime, workers: ReplayWorkers) -> Iterator[Derived]:
    """The workers derive the next chunks (in key order) while this one is written.

    The queue is read ahead without claiming; each write transaction takes the chunk's pathways
    still queued (on PostgreSQL those no other deriver holds) and derives again those whose
    history changed since the worker read it. A pass ends when one from the first key finds nothing.
    """
    ahead: deque[tuple[list[str], datetime, Future[Any]]] = deque()
    after: str | None = None
    while True:
        keys = queued_after(runtime.store, after, AHEAD_CHUNK)
        if keys:
            now = runtime.clock()
            ahead.append((keys, now, workers.submit(derive_batch, keys, now)))
            after = keys[-1]
            if len(ahead) <= workers.count:
                continue
        if not ahead:
            if after is None:
                return
            after = None  # once more from the first key: pathways queued meanwhile
            continue
        keys, now, future = ahead.popleft()
        yield _derive_chunk(runtime, now, len(keys), keys, {d.key: d for d in unpacked(future)})
