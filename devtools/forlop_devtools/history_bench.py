"""`forlop bench --section history`: the FHIR change feed over a long history.

A store gets the history of `resources` Tasks (each created, a tenth changed once more, a hundredth
deleted), written as the repository writes it (`fhir_history` rows, a minute's batch at one
instant). Then, through the API app in this process (no network: the route, the query, the JSON):
a poller's pass over the whole type-level history (`/fhir/Task/_history?_count=N`, following the
next links to the end) and first pages of `_since` at instants spread over the history. Per request
latency, p50 / p99.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from forlop.auth import SCOPE_READ, TokenVerifier, mint_dev_token
from forlop.clock import FixedClock
from forlop.config import load_settings
from forlop.storage import Store, schema
from forlop.storage.bulk import insert_many
from services.api.public import ApiDeps, create_app

START = datetime(2026, 1, 1, tzinfo=UTC)
BATCH = 1000  # resources written at one instant (a minute apart)


def _task(i: int, status: str) -> dict[str, Any]:
    return {"resourceType": "Task", "id": f"bench-task-{i:07d}", "status": status, "intent": "plan",
            "focus": {"reference": f"EpisodeOfCare/bench-ep-{i // 8:07d}"},
            "for": {"reference": f"Patient/bench-pt-{i // 8:07d}"},
            "code": {"coding": [{"system": "https://forlop.example/fhir/CodeSystem/milestone", "code": "D11B"}]},
            "businessStatus": {"coding": [{"system": "https://forlop.example/fhir/CodeSystem/deadline-status",
                                           "code": "pending"}]},
            "restriction": {"period": {"end": "2026-03-01"}}}


def _fill(store: Store, resources: int) -> int:
    """The history rows of `resources` Tasks; returns how many versions."""
    h = schema.fhir_history
    versions = 0
    for start in range(0, resources, BATCH):
        at = START + timedelta(minutes=start // BATCH)
        rows = [{"resource_type": "Task", "id": f"bench-task-{i:07d}", "version_id": 1, "last_updated": at,
                 "method": "POST", "resource": _task(i, "requested")} for i in range(start, min(start + BATCH, resources))]
        # a tenth of the Tasks of the minute before change now, and a hundredth of them go
        earlier = start - BATCH
        if earlier >= 0:
            rows += [{"resource_type": "Task", "id": f"bench-task-{i:07d}", "version_id": 2, "last_updated": at,
                      "method": "DELETE" if i % 100 == 0 else "PUT",
                      "resource": None if i % 100 == 0 else _task(i, "completed")}
                     for i in range(earlier, earlier + BATCH, 10)]
        with store.transaction() as conn:
            insert_many(conn, h, rows)
        versions += len(rows)
    with store.transaction() as conn:
        if store.dialect == "postgresql":
            conn.exec_driver_sql("ANALYZE fhir_history")
    return versions


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))] if values else 0.0


def bench_history(url: str, workdir: Path, resources: int, page: int = 100, probes: int = 200) -> dict[str, Any]:
    store = Store(url)
    try:
        store.migrate()
        began = time.perf_counter()
        versions = _fill(store, resources)
        fill_s = time.perf_counter() - began
        settings = load_settings({"FORLOP_DATA_DIR": str(workdir)})
        end = START + timedelta(minutes=resources // BATCH + 1)
        client = create_app(ApiDeps(settings, store, FixedClock(end), TokenVerifier(settings))).test_client()
        auth = {"Authorization": f"Bearer {mint_dev_token(settings, [SCOPE_READ])}"}

        def get(target: str) -> tuple[float, dict[str, Any]]:
            t = time.perf_counter()
            resp = client.get(target, headers=auth)
            ms = (time.perf_counter() - t) * 1000
            assert resp.status_code == 200, resp.get_data(as_text=True)[:300]
            return ms, resp.get_json()

        paging: list[float] = []
        seen = 0
        target = f"/fhir/Task/_history?_count={page}"
        while target:
            ms, bundle = get(target)
            paging.append(ms)
            seen += len(bundle["entry"])
            nxt = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
            target = "" if not nxt else f"{urlsplit(nxt[0]).path}?{urlsplit(nxt[0]).query}"
        assert seen == versions, (seen, versions)
        since: list[float] = []
        minutes = resources // BATCH
        for k in range(probes):
            at = (START + timedelta(minutes=minutes * k // probes)).strftime("%Y-%m-%dT%H:%M:%SZ")
            ms, _ = get(f"/fhir/Task/_history?_since={at}&_count={page}")
            since.append(ms)
        return {"store": store.dialect, "resources": resources, "versions": versions, "page": page,
                "fill_seconds": round(fill_s, 1), "pages": len(paging),
                "paging_ms": {"p50": _pct(paging, 0.5), "p99": _pct(paging, 0.99)},
                "since_ms": {"p50": _pct(since, 0.5), "p99": _pct(since, 0.99)}}
    finally:
        store.dispose()
