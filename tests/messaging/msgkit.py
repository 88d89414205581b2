"""Helpers shared by the messaging tests (importable as `msgkit`; conftest holds the fixtures)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from forlop.events import PathwayEvent
from services.ingest.normalise import parse_vendor_event

NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


def id_factory(prefix: int = 0) -> Callable[[], str]:
    counter = iter(range(1, 10**9))
    return lambda: str(uuid.UUID(int=(prefix << 64) + next(counter)))


def load_examples(shared: Path, source: str) -> dict[str, list[PathwayEvent]]:
    by_pathway: dict[str, list[PathwayEvent]] = {}
    path = shared / "contracts" / "examples" / f"{source}-examples.ndjson"
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            ev = parse_vendor_event(source, json.loads(line))
            by_pathway.setdefault(ev.pathway_id, []).append(ev)
    return by_pathway


def payload(events: Iterable[PathwayEvent], status: dict[str, Any] | None = None) -> dict[str, Any]:
    evs = sorted(events, key=lambda e: (e.occurred_at, e.event_id))
    first = evs[0]
    return {
        "pathway_key": first.pathway_key,
        "pathway_id": first.pathway_id,
        "source": first.source.value,
        "status": status or {"phase": "treatment", "episode_status": "active"},
        "events": [e.to_dict() for e in evs],
        "changed_at": NOW.isoformat(),
    }
