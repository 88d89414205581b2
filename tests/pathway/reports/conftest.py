"""Fixtures for the report, API and CLI tests: the hand-made data set of `report_dataset`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from report_dataset import NOW, Dataset, build_dataset


@pytest.fixture
def dataset() -> Dataset:
    return Dataset(build_dataset())


@pytest.fixture
def rules():
    from services.pathway.domain.rules import RuleBook

    return RuleBook.load()


@pytest.fixture
def status_rows(dataset: Dataset, rules) -> list[dict[str, Any]]:
    """The `pathways` rows as the service would store them, built without a database."""
    from services.pathway.domain.derive import derive

    rows = []
    for b in dataset.pathways.values():
        status = derive(b.events, rules, NOW).to_dict()
        last = max(b.events, key=lambda ev: (ev.occurred_at, ev.recorded_at, ev.event_id))
        rows.append({
            "pathway_key": b.key,
            "pathway_id": b.pathway_id,
            "source": b.source.value,
            "pathway_type": b.pathway_type,
            "national_id": b.patient.national_id,
            "municipality": b.patient.municipality,
            "unit_her_id": b.unit.her_id,
            "consent_municipality": b.consent,
            "episode_status": status["episode_status"],
            "status": status,
            "patient": {
                "unit": {"herId": b.unit.her_id, "name": b.unit.name, "setting": "outpatient"},
                "lastEvent": {"kind": last.kind.value, "code": last.code, "on": last.occurred_on.isoformat()},
            },
        })
    return rows


@pytest.fixture
def loaded_store(store, dataset: Dataset):
    """The data set through the real write path (`handle_events`), on SQLite and PostgreSQL."""
    from forlop.config import load_settings
    from services.pathway.domain.rules import RuleBook
    from services.pathway.handlers import PathwayDeps, handle_events

    deps = PathwayDeps(RuleBook.load(), load_settings({}).topics)
    with store.transaction() as conn:
        handle_events(conn, dataset.events, NOW, deps)
    return store


@pytest.fixture
def api(loaded_store, tmp_path: Path) -> Iterator[Any]:
    """Flask test client of the full API app with the pathway blueprint, and a read token."""
    from app.bootstrap import Runtime
    from forlop.auth import SCOPE_READ, TokenVerifier, mint_dev_token
    from forlop.clock import FixedClock
    from forlop.config import load_settings
    from services.api.app import ApiDeps, create_app
    from services.pathway.entrypoints.http import pathway_bp

    settings = load_settings({"FORLOP_DATA_DIR": str(tmp_path), "FORLOP_DATABASE_URL": "sqlite://"})
    rt = Runtime(settings, loaded_store, FixedClock(NOW))
    deps = ApiDeps(settings, loaded_store, rt.clock, TokenVerifier(settings),
                   blueprints=[(pathway_bp(rt.store, rt.clock, settings.due_soon_days), SCOPE_READ)])
    client = create_app(deps).test_client()
    token = mint_dev_token(settings, [SCOPE_READ])
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    yield client
