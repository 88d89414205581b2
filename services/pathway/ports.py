"""The pathway service's ports: what its handlers ask of storage, as Protocols.

A unit of work is one transaction: the pathways' state (`pathways`) and the records to publish
(`outbox`) change together or not at all. The SQL adapters (`adapters.repository`) serve the
Kafka consumer, the scanner and the HTTP intake; the bulk adapter (`adapters.bulk`) adds what a
replay's two-phase load needs (a queue of pathways to derive once).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Protocol

from forlop.events import PathwayEvent
from services.pathway.domain.units import UnitFacts


@dataclass(frozen=True, slots=True)
class StoredPathway:
    """A pathway row as the handlers read it back (the status as stored)."""

    pathway_key: str
    status: dict[str, Any]
    history_hash: str = ""
    national_id: str = ""
    unit_her_id: str = ""


@dataclass
class PathwayWrites:
    """What one refresh batch writes for its pathways, gathered pathway by pathway, written at once."""

    resources: list[tuple[str | None, list[dict[str, Any]]]]  # (owner pathway key, its resources)
    inserts: list[dict[str, Any]]  # new pathway rows
    updates: list[dict[str, Any]]  # stored rows, keyed by "k_pathway_key" (locked by `lock_stored`)


class PathwayRepository(Protocol):
    def add_events(self, events: Sequence[PathwayEvent], now: datetime) -> list[PathwayEvent]:
        """Append the events not stored before (by event id) to the history; return those."""
        ...

    def histories(self, pathway_keys: Iterable[str]) -> dict[str, list[PathwayEvent]]: ...

    def lock_stored(self, pathway_keys: Sequence[str]) -> dict[str, StoredPathway]:
        """The stored rows of these pathways, locked for this transaction (PostgreSQL)."""
        ...

    def stored(self, pathway_keys: Sequence[str]) -> list[StoredPathway]: ...

    def save(self, writes: PathwayWrites, now: datetime) -> None: ...

    def merge_units(self, seen: Mapping[str, UnitFacts]) -> dict[str, UnitFacts]:
        """Store what a batch saw of its treating units; return the units as they now stand, by HER-id."""
        ...

    def due_for_check(self, today: date, limit: int) -> list[StoredPathway]:
        """Pathways whose next deadline threshold has come, claimed (others' replicas skip them)."""
        ...

    def tasks(self, task_ids: Sequence[str]) -> list[dict[str, Any]]: ...

    def save_tasks(self, tasks: list[dict[str, Any]], now: datetime) -> None:
        """Tasks of stored pathways changed in place (the pathways' other resources stay)."""
        ...

    def save_clock(self, updates: Sequence[Mapping[str, Any]]) -> None:
        """Rows whose status the clock moved (keyed by "k_pathway_key"), in their order."""
        ...

    def claim_queued(self, limit: int) -> list[str]:
        """Pathways a replay queued and did not derive, claimed (others' replicas skip them)."""
        ...

    def unqueue(self, pathway_keys: Sequence[str]) -> None: ...

    def alerts_emitted(self, alert_keys: Sequence[str]) -> set[str]: ...

    def add_alerts(self, rows: Sequence[Mapping[str, Any]]) -> None: ...


class Outbox(Protocol):
    def add(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Outbox rows (topic, record_key, value, headers, created_at), published in this order."""
        ...


class UnitOfWork(Protocol):
    pathways: PathwayRepository
    outbox: Outbox
