"""The reports as pure functions over stored statuses: no database, figures worked out by hand."""

from __future__ import annotations

from collections import Counter
from datetime import date

import pytest
from report_dataset import NOW, TODAY, UNIT_A, UNIT_B

from services.pathway import reports


def by_key(rows):
    return {r["pathway_key"]: r for r in rows}


def worklist_of(rows, unit, limit=None):
    items = [
        reports.worklist_row(r, TODAY)
        for r in rows
        if r["unit_her_id"] == unit and r["episode_status"] in reports.OPEN_EPISODES
    ]
    return reports.order_worklist(items, limit)


def test_worklist_orders_overdue_first_then_days_left_then_no_deadline(status_rows):
    items = worklist_of(status_rows, UNIT_A)
    assert [(i["pathwayId"], i["nextMilestone"]["key"], i["nextMilestone"]["daysLeft"]) for i in items] == [
        ("P9", "evaluation-1", -83),
        ("P2", "evaluation-1", -43),
        ("P1", "evaluation-2", -31),
        ("P6", "decision-basic", 9),
        ("P5", "first-attendance", None),
    ]
    assert worklist_of(status_rows, UNIT_A, limit=2) == items[:2]


def test_worklist_row_carries_patient_milestone_and_last_event(status_rows):
    row = next(r for r in status_rows if r["pathway_id"] == "P2")
    item = reports.worklist_row(row, TODAY)
    assert item == {
        "pathwayId": "P2",
        "pathwayKey": "dips:P2",
        "patient": {"nationalId": row["national_id"], "municipality": "0301"},
        "pathwayType": "D11",
        "phase": "treatment",
        "episodeStatus": "active",
        "startDate": "2025-09-01",
        "nextMilestone": {
            "key": "evaluation-1",
            "code": "evaluation",
            "deadline": "2026-01-31",
            "adjustedDeadline": "2026-01-31",
            "deadlineStatus": "overdue",
            "daysLeft": -43,
            "delayCause": "unknown",
        },
        "lastEvent": {"kind": "pathway-code", "code": "D11CP", "date": "2025-12-20"},
    }
    # Without a deadline the next open milestone is still shown, undated.
    p5 = reports.worklist_row(next(r for r in status_rows if r["pathway_id"] == "P5"), TODAY)
    assert p5["nextMilestone"]["code"] == "first-attendance" and p5["nextMilestone"]["deadline"] is None


def test_open_deadline_status_is_recomputed_against_today(status_rows):
    """A stored "pending" whose deadline has since passed shows as overdue (the scanner may lag)."""
    row = next(r for r in status_rows if r["pathway_id"] == "P6")
    m = next(m for m in row["status"]["milestones"] if m["key"] == "decision-basic")
    assert m["deadline_status"] == "pending"
    assert reports.next_milestone(row["status"], date(2026, 3, 17))["deadlineStatus"] == "due-soon"
    later = reports.next_milestone(row["status"], date(2026, 3, 30))
    assert (later["deadlineStatus"], later["daysLeft"]) == ("overdue", -6)
    assert reports.next_milestone(row["status"], date(2026, 3, 17), due_soon_days=3)["deadlineStatus"] == "pending"


def test_municipal_rows_show_next_and_last_evaluation(status_rows):
    rows = [r for r in status_rows if r["municipality"] == "0301" and r["consent_municipality"]
            and r["episode_status"] != "entered-in-error"]
    items = sorted((reports.municipal_row(r, TODAY) for r in rows), key=reports.municipal_order)
    assert [(i["pathwayId"], i["episodeStatus"], i["nextEvaluationDate"], i["lastEvaluationDate"]) for i in items] == [
        ("P2", "active", "2026-01-31", None),
        ("P1", "active", "2026-02-12", "2025-11-20"),
        ("P4", "waitlist", None, None),
        ("P5", "waitlist", None, None),
        ("P7", "finished", None, None),
    ]
    p1 = items[1]
    assert p1["unit"] == {"herId": UNIT_A, "name": "DPS Nord, poliklinikk"}
    assert (p1["phase"], p1["pathwayType"], p1["nextEvaluationStatus"]) == ("treatment", "D11", "overdue")


def indicator_rows(status_rows, group_by="pathwayType", date_from=date(2025, 9, 1), date_to=date(2025, 12, 31)):
    pairs = [(r["status"], r["unit_her_id"]) for r in status_rows]
    return reports.indicators_of(pairs, date_from, date_to, group_by, TODAY)


def test_indicators_by_pathway_type(status_rows):
    report = indicator_rows(status_rows)
    table = [
        (r["group"], r["milestone"], r["done"], r["met"], r["metAdjusted"], r["late"], r["onTimeNational"],
         r["onTimeAdjusted"], r["medianDays"], r["openOverdue"])
        for r in report.rows
    ]
    assert table == [
        ("D01", "first-attendance", 1, 1, 0, 0, 1.0, 1.0, 4, 1),  # P8 met in 4 days; P4 overdue
        ("D01", "decision-basic", 1, 1, 0, 0, 1.0, 1.0, 15, 0),  # P8
        ("D11", "first-attendance", 1, 1, 0, 0, 1.0, 1.0, 14, 0),  # P1 (P2, P3 had no frist)
        # P1 met (35 d), P2 met after its no-show moved the deadline (47 d), P3 late (52 d);
        # P9 decided before any first attendance: no deadline, not counted
        ("D11", "decision-basic", 3, 1, 1, 1, round(1 / 3, 4), round(2 / 3, 4), 47, 0),
        ("D11", "decision-extended", 1, 1, 0, 0, 1.0, 1.0, 35, 0),  # P2
        ("D11", "evaluation", 1, 1, 0, 0, 1.0, 1.0, 31, 3),  # P1; open overdue: P1 #2, P2 #1, P9 #1
    ]
    assert len(report) == 6 and report.pathways == 9  # P10 (entered in error) is left out


def test_national_targets_beside_the_indicators(status_rows):
    targets = {(t["group"], t["target"]): t for t in indicator_rows(status_rows).targets}
    assert sorted(targets) == [
        ("D01", "average-waiting-days"), ("D01", "evaluation-share"),
        ("D11", "average-waiting-days"), ("D11", "evaluation-share"),
    ]
    phv_wait = targets[("D11", "average-waiting-days")]
    # First attendances in the period: P1 14 days, P2 28, P3 9 -> 17.0, below 40.
    assert (phv_wait["value"], phv_wait["count"], phv_wait["threshold"], phv_wait["met"]) == (17.0, 3, 40, True)
    assert phv_wait["short"] == "PHV"
    tsb_wait = targets[("D01", "average-waiting-days")]
    assert (tsb_wait["value"], tsb_wait["count"], tsb_wait["threshold"], tsb_wait["met"]) == (4.0, 1, 30, True)
    # First evaluations due in the period: P1 (12-01, done) and P9 (12-22, not done) -> 1/2.
    phv_eval = targets[("D11", "evaluation-share")]
    assert (phv_eval["value"], phv_eval["count"], phv_eval["evaluated"], phv_eval["met"]) == (0.5, 2, 1, False)
    # P8 ended on 12-01, after its first evaluation fell due on 10-27, without one.
    tsb_eval = targets[("D01", "evaluation-share")]
    assert (tsb_eval["value"], tsb_eval["count"], tsb_eval["evaluated"], tsb_eval["met"]) == (0.0, 1, 0, False)


def test_indicators_by_unit_and_by_month(status_rows):
    by_unit = {(r["group"], r["milestone"]): r for r in indicator_rows(status_rows, "unit").rows}
    assert list(by_unit) == [
        (UNIT_A, "first-attendance"), (UNIT_A, "decision-basic"), (UNIT_A, "decision-extended"),
        (UNIT_A, "evaluation"), (UNIT_B, "first-attendance"), (UNIT_B, "decision-basic"),
    ]
    assert (by_unit[(UNIT_B, "first-attendance")]["done"], by_unit[(UNIT_B, "first-attendance")]["openOverdue"]) == (1, 1)

    by_month = {(r["group"], r["milestone"]): r for r in indicator_rows(status_rows, "month").rows}
    # Completed months: decisions in 2025-10 (P1, P8), 2025-11 (P2), 2025-12 (P3 basic, P2 extended).
    assert {k: (r["done"], r["met"], r["metAdjusted"], r["late"]) for k, r in by_month.items() if r["done"]} == {
        ("2025-09", "first-attendance"): (1, 1, 0, 0),
        ("2025-10", "first-attendance"): (1, 1, 0, 0),
        ("2025-10", "decision-basic"): (2, 2, 0, 0),
        ("2025-11", "decision-basic"): (1, 0, 1, 0),
        ("2025-11", "evaluation"): (1, 1, 0, 0),
        ("2025-12", "decision-basic"): (1, 0, 0, 1),
        ("2025-12", "decision-extended"): (1, 1, 0, 0),
    }
    # Open overdue milestones are a snapshot as of today: they count in today's month.
    assert {k: r["openOverdue"] for k, r in by_month.items() if r["openOverdue"]} == {
        ("2026-03", "first-attendance"): 1,
        ("2026-03", "evaluation"): 3,
    }


def test_indicators_without_a_period_take_everything(status_rows):
    rows = {(r["group"], r["milestone"]): r for r in indicator_rows(status_rows, date_from=None, date_to=None).rows}
    assert rows[("D11", "decision-basic")]["done"] == 3
    assert rows[("D11", "first-attendance")]["done"] == 1
    assert rows[("D01", "first-attendance")]["done"] == 1


def test_bad_group_by_is_refused():
    with pytest.raises(ValueError, match="groupBy"):
        reports.IndicatorTally("week", None, None, TODAY)


def test_median_of_a_histogram():
    assert reports._median(Counter()) is None
    assert reports._median(Counter({35: 1, 47: 1, 52: 1})) == 47
    assert reports._median(Counter({10: 2, 20: 2})) == 15
    assert reports._median(Counter({10: 1, 13: 1})) == 11.5
    assert reports._median(Counter({3: 5, 100: 1})) == 3


def quality_of(status_rows, date_from=None, date_to=None):
    tally = reports.QualityTally(date_from, date_to)
    for r in sorted(status_rows, key=lambda r: r["pathway_key"]):
        tally.add(r["status"], r["unit_her_id"], r["patient"]["unit"]["name"])
    return tally.report(TODAY)


def test_quality_counts_findings_and_missing_milestones_per_unit_and_month(status_rows):
    report = quality_of(status_rows)
    assert [(r["unit"], r["month"], r["kind"], r["count"]) for r in report["byUnitMonth"]] == [
        (UNIT_A, "2025-08", "late-registration", 1),  # P7's end keyed 29 days late
        (UNIT_A, "2025-08", "missing-first-attendance", 1),  # P7 ended without one
        (UNIT_A, "2025-11", "decision-before-first-attendance", 1),  # P9
        (UNIT_A, "2026-03", "passive-pathway", 2),  # P1 and P9: no contact for over 90 days
        (UNIT_B, "2025-12", "missing-evaluation", 1),  # P8: treatment decided, ended, never evaluated
        (UNIT_B, "2025-12", "withdrawn-registration", 1),  # P10's start
    ]
    kinds = {k["kind"]: k for k in report["kinds"]}
    assert {k: (v["category"], v["count"]) for k, v in kinds.items()} == {
        "late-registration": ("finding", 1),
        "decision-before-first-attendance": ("finding", 1),
        "passive-pathway": ("finding", 2),
        "withdrawn-registration": ("finding", 1),
        "missing-first-attendance": ("missing-milestone", 1),
        "missing-evaluation": ("missing-milestone", 1),
    }
    assert [e["pathwayKey"] for e in kinds["passive-pathway"]["examples"]] == ["dips:P1", "dips:P9"]
    assert kinds["missing-evaluation"]["examples"] == [{"pathwayId": "P8", "pathwayKey": "esp:P8"}]
    assert report["pathways"] == 10
    assert report["byUnitMonth"][0]["unitName"] == "DPS Nord, poliklinikk"


def test_quality_in_a_period(status_rows):
    report = quality_of(status_rows, date(2025, 9, 1), date(2025, 12, 31))
    assert [(r["unit"], r["month"], r["kind"], r["count"]) for r in report["byUnitMonth"]] == [
        (UNIT_A, "2025-11", "decision-before-first-attendance", 1),
        (UNIT_B, "2025-12", "missing-evaluation", 1),
        (UNIT_B, "2025-12", "withdrawn-registration", 1),
    ]
    assert (report["from"], report["to"]) == ("2025-09-01", "2025-12-31")


def test_examples_are_capped_at_five_per_kind():
    tally = reports.QualityTally(None, None)
    for n in range(8):
        status = {"pathway_key": f"dips:Q{n}", "pathway_id": f"Q{n}", "episode_status": "active",
                  "findings": [{"kind": "late-registration", "on": "2026-01-0" + str(n + 1)}] * 2}
        tally.add(status, UNIT_A)
    kinds = tally.report(TODAY)["kinds"]
    assert kinds[0]["count"] == 16
    assert [e["pathwayId"] for e in kinds[0]["examples"]] == ["Q0", "Q1", "Q2", "Q3", "Q4"]


def test_now_is_the_reports_today():
    assert NOW.date() == TODAY == date(2026, 3, 15)
