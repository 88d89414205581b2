"""The national targets are versioned data (profiles/rules/national-targets.json), checked when loaded."""

from __future__ import annotations

import copy
import json
from datetime import date
from importlib import resources

import pytest

from services.pathway.domain.reports import IndicatorTally
from services.pathway.domain.targets import NationalTargets, national_targets


def shipped() -> dict:
    return json.loads(resources.files("profiles").joinpath("rules/national-targets.json").read_text("utf-8"))


def test_the_shipped_targets_are_domain_section_6() -> None:
    targets = national_targets().for_day(date(2026, 3, 15))
    assert targets.version == "2022"
    assert targets.waiting.thresholds == {"D11": 40, "D12": 35, "D01": 30}
    assert targets.evaluation.thresholds == {"D11": 0.8, "D01": 0.8}
    assert targets.waiting.met("D11", 39.9) and not targets.waiting.met("D11", 40)
    assert targets.evaluation.met("D01", 0.8) and not targets.evaluation.met("D01", None)


def test_the_version_in_force_on_the_reports_last_day_applies() -> None:
    doc = shipped()
    doc["versions"].append({"version": "2026", "effectiveFrom": "2026-01-01",
                            "targets": {"average-waiting-days": {"thresholds": {"D11": 30}}}})
    book = NationalTargets.from_document(doc)
    assert book.for_day(date(2025, 12, 31)).waiting.thresholds["D11"] == 40
    newer = book.for_day(date(2026, 1, 1))
    assert newer.waiting.thresholds == {"D11": 30, "D12": 35, "D01": 30}  # merged over the base
    tally = IndicatorTally("pathwayType", None, date(2026, 2, 1), date(2026, 3, 15), newer)
    assert tally.targets is newer


@pytest.mark.parametrize(("change", "reason"), [
    (lambda d: d["base"]["targets"].pop("evaluation-share"), "exactly"),
    (lambda d: d["base"]["targets"]["evaluation-share"].update(comparison="below"), "compares"),
    (lambda d: d["base"]["targets"]["average-waiting-days"]["thresholds"].update(D99=10), "D99"),
    (lambda d: d["base"]["targets"]["average-waiting-days"]["thresholds"].update(D11="40"), "numbers"),
])
def test_a_broken_targets_file_is_refused_with_its_reason(change, reason) -> None:
    doc = copy.deepcopy(shipped())
    change(doc)
    with pytest.raises(ValueError, match=reason):
        NationalTargets.from_document(doc)
