"""The inpatient stays' notices as quality findings in `/quality` and `forlop quality` (issue #25),
per unit and month, through the real write path (SQLite and PostgreSQL) and the command line."""

from __future__ import annotations

import json

import pytest
from report_dataset import NOW, UNIT_A, UNIT_B, Dataset, stay_dataset

from app.cli import main

STAY_KINDS = ("late-admission-notice", "discharge-ready-without-admission", "discharge-without-discharge-ready")
EXPECTED = [
    (UNIT_A, "2025-10", "late-admission-notice", 1),
    (UNIT_B, "2025-11", "discharge-ready-without-admission", 1),
    (UNIT_B, "2025-12", "discharge-without-discharge-ready", 1),
]


@pytest.fixture
def dataset() -> Dataset:  # overrides the shared data set: the `api` fixture stores this one
    return Dataset(stay_dataset())


def _stay_rows(report: dict) -> list[tuple]:
    return [(r["unit"], r["month"], r["kind"], r["count"]) for r in report["byUnitMonth"] if r["kind"] in STAY_KINDS]


def test_quality_api_shows_the_stays_notices_per_unit_and_month(api) -> None:
    body = api.get("/quality").get_json()
    assert _stay_rows(body) == EXPECTED
    kinds = {k["kind"]: k for k in body["kinds"]}
    assert {k: (kinds[k]["category"], kinds[k]["count"]) for k in STAY_KINDS} == {k: ("finding", 1) for k in STAY_KINDS}
    assert kinds["late-admission-notice"]["examples"] == [{"pathwayId": "S1", "pathwayKey": "dips:S1"}]
    november = api.get("/quality?from=2025-11-01&to=2025-11-30").get_json()
    assert _stay_rows(november) == [EXPECTED[1]]


def test_forlop_quality_shows_them(tmp_path, dataset, monkeypatch, capsys) -> None:
    from forlop.config import load_settings
    from forlop.storage import Store
    from services.pathway.domain.rules import RuleBook
    from services.pathway.handlers import PathwayDeps, handle_events

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    store = Store(url)
    store.migrate()
    with store.transaction() as conn:
        handle_events(conn, dataset.events, NOW, PathwayDeps(RuleBook.load(), load_settings({}).topics))
    store.dispose()
    for name, value in (("FORLOP_DATABASE_URL", url), ("FORLOP_DATA_DIR", str(tmp_path)),
                        ("FORLOP_CLOCK", NOW.isoformat()), ("FORLOP_LOG_LEVEL", "WARNING")):
        monkeypatch.setenv(name, value)
    assert main(["quality", "--json"]) == 0
    assert _stay_rows(json.loads(capsys.readouterr().out)) == EXPECTED
    assert main(["quality"]) == 0
    table = capsys.readouterr().out
    assert all(kind in table for kind in STAY_KINDS) and "esp:S2" in table
