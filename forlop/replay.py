"""`forlop replay`: a file of vendor events through the same handlers as the Kafka consumers, no broker.

Each batch is ingested and its accepted events stored and their pathways queued in one
transaction; at the end each queued pathway is derived once and its status change handed to
messaging in the same transaction as the derivation, as the consumer would receive it. The
in-process hops write no outbox records (nothing outside would read them): an event is not
written, read back, parsed and marked twice. Replaying the same file twice changes nothing.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from sqlalchemy import func, select

from forlop.runtime import Runtime
from forlop.storage import schema
from services.ingest.service import InboundRecord, ingest
from services.pathway.service import handle_events, refresh_queued


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


def replay_file(
    runtime: Runtime, source: str, path: Path, *, batch_size: int = 1000, progress: TextIO | None = sys.stderr
) -> ReplayCounts:
    """Store the file's events batch by batch, then derive every pathway they touched once.

    A pathway's events are spread over the file; deriving it after each batch that touches it
    would derive it again and again (and message and alert on statuses that were never real).
    The pathways wait in `pathway_refresh_queue` between the two phases, so a replay stopped
    half-way is finished by the next replay or by the pathway service's scanner.
    """
    # Canonical events an earlier replay or an API intake left in the outbox go first (per-patient order).
    runtime.drain_outbox({runtime.settings.topics.events: runtime.pathway_handler(defer=True)})
    counts = ReplayCounts()
    bar = Progress(path.stat().st_size, progress) if progress else None
    started = time.perf_counter()
    done_bytes = 0
    for batch in _batches(path, batch_size):
        with runtime.store.transaction() as conn:
            now = runtime.clock()
            result = ingest(conn, source, batch, now, runtime.settings.topics, forward=False)
            handle_events(conn, result.accepted, now, runtime.pathway_deps, defer=True)
        counts.read += len(batch)
        counts.accepted += len(result.accepted)
        counts.duplicates += result.duplicates
        counts.rejected += len(result.rejected)
        done_bytes += sum(len(r.raw) + 1 for r in batch if isinstance(r.raw, bytes))
        if bar:
            bar.show(done_bytes, f"{counts.read:>9} events")
    if bar:
        bar.show(done_bytes, f"{counts.read:>9} events", final=True)
    counts.pathways, counts.status_changes = derive_queued(runtime, progress)
    counts.seconds = time.perf_counter() - started
    return counts


def derive_queued(runtime: Runtime, progress: TextIO | None, chunk: int = 2000) -> tuple[int, int]:
    """Derive the queued pathways, a chunk per transaction, and hand their status changes to messaging
    in the same transaction; return (pathways derived, status changes)."""
    # Status changes still in the outbox (the pathway service's, or an earlier replay's) go first.
    runtime.drain_outbox(runtime.topic_handlers(["messaging"]))
    q = schema.pathway_refresh_queue
    with runtime.store.read() as conn:
        total = conn.execute(select(func.count()).select_from(q)).scalar_one()
    bar = Progress(total, progress) if progress and total else None
    derived = changes = 0
    while True:
        with runtime.store.transaction() as conn:
            result = refresh_queued(conn, runtime.clock(), runtime.pathway_deps, limit=chunk, hand_over=True)
            runtime.hand_to_messaging(conn, result.handed_over)
        if not result.refreshed:
            break
        derived += len(result.refreshed)
        changes += len(result.handed_over)
        if bar:
            bar.show(derived, f"{derived:>9} pathways derived")
    if bar:
        bar.show(derived, f"{derived:>9} pathways derived", final=True)
    return derived, changes
