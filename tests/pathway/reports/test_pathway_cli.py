"""`forlop indicators` and `forlop quality` over a SQLite file holding the data set."""

from __future__ import annotations

import json

import pytest
from report_dataset import NOW, UNIT_A, UNIT_B

from app.cli import main


@pytest.fixture
def database(tmp_path, dataset, monkeypatch):
    pytest.importorskip("services.pathway.domain.fhir_mapping")
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
    monkeypatch.setenv("FORLOP_DATABASE_URL", url)
    monkeypatch.setenv("FORLOP_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("FORLOP_CLOCK", NOW.isoformat())
    monkeypatch.setenv("FORLOP_LOG_LEVEL", "WARNING")
    return url


def test_indicators_as_json(database, capsys):
    assert main(["indicators", "--from", "2025-09-01", "--to", "2025-12-31", "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    rows = {(r["group"], r["milestone"]): r for r in body["indicators"]}
    assert (rows[("D11", "decision-basic")]["onTimeNational"], rows[("D11", "decision-basic")]["onTimeAdjusted"]) == (
        0.3333, 0.6667)
    assert body["asOf"] == "2026-03-15" and len(body["targets"]) == 4


def test_indicators_as_a_table(database, capsys):
    assert main(["indicators", "--from", "2025-09-01", "--to", "2025-12-31", "--group-by", "unit"]) == 0
    out = capsys.readouterr().out
    assert "by unit" in out and "national targets" in out
    line = next(ln for ln in out.splitlines() if ln.startswith(UNIT_A) and "decision-basic" in ln)
    assert line.split()[2:10] == ["3", "1", "1", "1", "33.3", "%", "66.7", "%"]
    assert any(ln.startswith(UNIT_B) and "first-attendance" in ln for ln in out.splitlines())
    assert "D11 PHV" in out and "< 40 d" in out


def test_indicators_as_of_another_day(database, capsys):
    # Open deadlines are measured against --as-of: on 2026-01-20 only P9's evaluation (due 12-22) is overdue;
    # P2's (01-31) and P1's second (02-12) are not yet.
    assert main(["indicators", "--as-of", "2026-01-20", "--json"]) == 0
    rows = {(r["group"], r["milestone"]): r for r in json.loads(capsys.readouterr().out)["indicators"]}
    assert rows[("D11", "evaluation")]["openOverdue"] == 1


def test_bad_period_is_refused(database, capsys):
    assert main(["indicators", "--from", "2025-12-31", "--to", "2025-09-01"]) == 2
    assert "--from" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["indicators", "--from", "31.12.2025"])


def test_quality_as_json_and_table(database, capsys):
    assert main(["quality", "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert {k["kind"]: k["count"] for k in body["kinds"]} == {
        "late-registration": 1,
        "decision-before-first-attendance": 1,
        "passive-pathway": 2,
        "withdrawn-registration": 1,
        "missing-first-attendance": 1,
        "missing-evaluation": 1,
    }
    assert main(["quality", "--from", "2025-09-01", "--to", "2025-12-31"]) == 0
    out = capsys.readouterr().out
    assert "missing-evaluation" in out and "esp:P8" in out and "late-registration" not in out
