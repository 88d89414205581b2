"""The coordinators' API over the data set stored by the real write path (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest
from report_dataset import NOW, UNIT_A, UNIT_B

from services.pathway import reports


def outcome(resp, status, expression):
    assert resp.status_code == status, resp.get_data(as_text=True)
    body = resp.get_json(force=True)
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["expression"] == [expression]
    return body["issue"][0]


def test_worklist_of_a_unit(api, dataset):
    resp = api.get(f"/worklist?unit={UNIT_A}")
    assert resp.status_code == 200 and resp.mimetype == "application/json"
    body = resp.get_json()
    assert (body["unit"], body["asOf"], body["total"]) == (UNIT_A, "2026-03-15", 5)
    assert [(p["pathwayId"], p["nextMilestone"]["daysLeft"]) for p in body["pathways"]] == [
        ("P9", -83), ("P2", -43), ("P1", -31), ("P6", 9), ("P5", None),
    ]
    p1 = body["pathways"][2]
    assert p1["patient"] == {"nationalId": dataset.pathways["P1"].patient.national_id, "municipality": "0301"}
    assert p1["nextMilestone"] == {
        "key": "evaluation-2", "code": "evaluation", "deadline": "2026-02-12", "adjustedDeadline": "2026-02-12",
        "deadlineStatus": "overdue", "daysLeft": -31, "delayCause": "unknown",
    }
    assert p1["lastEvent"] == {"kind": "pathway-code", "code": "D11E", "date": "2025-11-20"}
    assert (p1["phase"], p1["episodeStatus"], p1["pathwayType"], p1["pathwayKey"]) == (
        "treatment", "active", "D11", "dips:P1")

    limited = api.get(f"/worklist?unit={UNIT_A}&limit=2").get_json()
    assert [p["pathwayId"] for p in limited["pathways"]] == ["P9", "P2"] and limited["total"] == 5
    unit_b = api.get(f"/worklist?unit={UNIT_B}").get_json()
    assert [p["pathwayId"] for p in unit_b["pathways"]] == ["P4"]  # P8 finished, P10 entered in error


def test_worklist_needs_a_unit_and_a_sane_limit(api):
    issue = outcome(api.get("/worklist"), 400, "unit")
    assert issue["code"] == "required"
    outcome(api.get(f"/worklist?unit={UNIT_A}&limit=0"), 400, "limit")
    outcome(api.get(f"/worklist?unit={UNIT_A}&limit=ten"), 400, "limit")


def test_routes_need_a_token(api):
    resp = api.get(f"/worklist?unit={UNIT_A}", headers={"Authorization": ""})
    assert resp.status_code == 401
    assert resp.get_json(force=True)["resourceType"] == "OperationOutcome"


def test_municipal_overview_lists_consenting_residents(api):
    body = api.get("/municipalities/0301/pathways").get_json()
    assert [(p["pathwayId"], p["nextEvaluationDate"], p["lastEvaluationDate"]) for p in body["pathways"]] == [
        ("P2", "2026-01-31", None),
        ("P1", "2026-02-12", "2025-11-20"),
        ("P4", None, None),
        ("P5", None, None),
        ("P7", None, None),  # finished
    ]  # P6 did not consent; P10 was entered in error
    p4 = body["pathways"][2]
    assert (p4["unit"], p4["pathwayType"], p4["phase"], p4["episodeStatus"]) == (
        {"herId": UNIT_B, "name": "Rusklinikken, poliklinikk"}, "D01", "waiting", "waitlist")
    open_only = api.get("/municipalities/0301/pathways?episodeStatus=waitlist,active").get_json()
    assert [p["pathwayId"] for p in open_only["pathways"]] == ["P2", "P1", "P4", "P5"]
    bergen = api.get("/municipalities/4601/pathways").get_json()
    assert [p["pathwayId"] for p in bergen["pathways"]] == ["P8"]  # P3 and P9 did not consent


@pytest.mark.parametrize("number", ["301", "03011", "abcd"])
def test_municipal_overview_wants_a_kommunenummer(api, number):
    outcome(api.get(f"/municipalities/{number}/pathways"), 400, "kommunenummer")


def test_municipal_overview_refuses_an_unknown_episode_status(api):
    outcome(api.get("/municipalities/0301/pathways?episodeStatus=open"), 400, "episodeStatus")


def test_indicators(api):
    body = api.get("/indicators?from=2025-09-01&to=2025-12-31&groupBy=pathwayType").get_json()
    assert (body["from"], body["to"], body["groupBy"], body["asOf"], body["pathways"]) == (
        "2025-09-01", "2025-12-31", "pathwayType", "2026-03-15", 9)
    rows = {(r["group"], r["milestone"]): r for r in body["indicators"]}
    assert len(rows) == 6
    basic = rows[("D11", "decision-basic")]
    assert basic == {
        "group": "D11", "milestone": "decision-basic", "done": 3, "met": 1, "metAdjusted": 1, "late": 1,
        "onTimeNational": 0.3333, "onTimeAdjusted": 0.6667, "medianDays": 47, "openOverdue": 0,
    }
    assert rows[("D11", "evaluation")]["openOverdue"] == 3
    assert rows[("D01", "first-attendance")]["openOverdue"] == 1
    targets = {(t["group"], t["target"]): (t["value"], t["met"]) for t in body["targets"]}
    assert targets == {
        ("D01", "average-waiting-days"): (4.0, True),
        ("D01", "evaluation-share"): (0.0, False),
        ("D11", "average-waiting-days"): (17.0, True),
        ("D11", "evaluation-share"): (0.5, False),
    }
    by_unit = api.get("/indicators?from=2025-09-01&to=2025-12-31&groupBy=unit").get_json()
    assert {r["group"] for r in by_unit["indicators"]} == {UNIT_A, UNIT_B}


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("from=2025-13-01", "from"),
        ("from=01.09.2025", "from"),
        ("to=yesterday", "to"),
        ("from=2025-12-31&to=2025-09-01", "from"),
        ("groupBy=week", "groupBy"),
    ],
)
def test_indicators_name_the_bad_parameter(api, query, parameter):
    outcome(api.get(f"/indicators?{query}"), 400, parameter)


def test_quality(api):
    body = api.get("/quality?from=2025-09-01&to=2025-12-31").get_json()
    assert [(r["unit"], r["month"], r["kind"], r["count"]) for r in body["byUnitMonth"]] == [
        (UNIT_A, "2025-11", "decision-before-first-attendance", 1),
        (UNIT_B, "2025-12", "missing-evaluation", 1),
        (UNIT_B, "2025-12", "withdrawn-registration", 1),
    ]
    everything = api.get("/quality").get_json()
    kinds = {k["kind"]: (k["count"], [e["pathwayKey"] for e in k["examples"]]) for k in everything["kinds"]}
    assert kinds == {
        "late-registration": (1, ["dips:P7"]),
        "decision-before-first-attendance": (1, ["dips:P9"]),
        "passive-pathway": (2, ["dips:P1", "dips:P9"]),
        "withdrawn-registration": (1, ["dips:P10"]),
        "missing-first-attendance": (1, ["dips:P7"]),
        "missing-evaluation": (1, ["esp:P8"]),
    }
    outcome(api.get("/quality?to=2025-02-30"), 400, "to")


def test_compute_indicators_for_the_bench(loaded_store, tmp_path):
    """`forlop bench` calls compute_indicators(store, now, None, None, "pathwayType") and counts the rows."""
    from app.bootstrap import Runtime
    from forlop.clock import FixedClock
    from forlop.config import load_settings

    rt = Runtime(load_settings({"FORLOP_DATA_DIR": str(tmp_path)}), loaded_store, FixedClock(NOW))
    report = reports.compute_indicators(rt.store, rt.clock(), None, None, "pathwayType")
    assert len(report) == len(report.rows) == 6
    assert reports.compute_quality(rt.store, rt.clock())["pathways"] == 10
