"""The ingest service's ports: what its handlers ask of storage, as Protocols.

A unit of work is one transaction: the inbound log, the dead letters and the outbox records of a
batch change together or not at all (`adapters.repository.SqlIngestUnitOfWork`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from forlop.dead_letters import DeadLetter


class InboundLog(Protocol):
    def fingerprints(self, event_ids: Sequence[str]) -> dict[str, str | None]:
        """The stored fingerprint of each of these events accepted before (None: stored without one)."""
        ...

    def raw_records(self, event_ids: Sequence[str]) -> dict[str, str]:
        """The stored vendor records of these events, as accepted."""
        ...

    def add(self, rows: Sequence[Mapping[str, Any]]) -> None: ...


class DeadLetters(Protocol):
    def add(self, letter: DeadLetter, now: datetime, topic: str) -> int:
        """Keep a dead letter and publish it on `topic` (through the outbox); return its id."""
        ...


class Outbox(Protocol):
    def add(self, records: Sequence[Mapping[str, Any]]) -> None: ...


class UnitOfWork(Protocol):
    inbound: InboundLog
    dead_letters: DeadLetters
    outbox: Outbox
