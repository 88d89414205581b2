"""`forlop replay`: a file of vendor events through the same handlers as the Kafka consumers, no broker.

Ingest stores each batch and its outbox records; the outbox is then drained
in-process into the pathway and messaging handlers, exactly as the consumers
would receive it. Replaying the same file twice changes nothing.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from forlop.runtime import Runtime
from services.ingest.service import InboundRecord, ingest


@dataclass
class ReplayCounts:
    read: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        rate = self.read / self.seconds if self.seconds else 0.0
        return (
            f"{self.read} events read: {self.accepted} accepted, {self.duplicates} duplicate, "
            f"{self.rejected} rejected ({rate:,.0f} events/s)"
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
    def __init__(self, total_bytes: int, out: TextIO) -> None:
        self.total = max(1, total_bytes)
        self.out = out
        self.tty = out.isatty()
        self.last = 0.0

    def show(self, done_bytes: int, counts: ReplayCounts, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.last < (0.2 if self.tty else 5.0):
            return
        self.last = now
        share = min(1.0, done_bytes / self.total)
        bar = "#" * int(share * 30)
        text = f"[{bar:<30}] {share:6.1%} {counts.read:>9} events"
        self.out.write(("\r" if self.tty else "") + text + ("\n" if final or not self.tty else ""))
        self.out.flush()


def replay_file(
    runtime: Runtime, source: str, path: Path, *, batch_size: int = 1000, progress: TextIO | None = sys.stderr
) -> ReplayCounts:
    handlers = runtime.topic_handlers(["pathway", "messaging"])
    counts = ReplayCounts()
    bar = Progress(path.stat().st_size, progress) if progress else None
    started = time.perf_counter()
    done_bytes = 0
    for batch in _batches(path, batch_size):
        with runtime.store.transaction() as conn:
            result = ingest(conn, source, batch, runtime.clock(), runtime.settings.topics)
        runtime.drain_outbox(handlers)
        counts.read += len(batch)
        counts.accepted += len(result.accepted)
        counts.duplicates += result.duplicates
        counts.rejected += len(result.rejected)
        done_bytes += sum(len(r.raw) + 1 for r in batch if isinstance(r.raw, bytes))
        if bar:
            bar.show(done_bytes, counts)
    counts.seconds = time.perf_counter() - started
    if bar:
        bar.show(done_bytes, counts, final=True)
    return counts
