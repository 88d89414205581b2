"""The contracts' example streams validate, normalise, and mean the same from either vendor."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

import pytest

from forlop.events import EventKind, PathwayEvent
from services.ingest.domain.normalise import parse_vendor_event
from services.ingest.domain.validation import OSLO, validate


def normalised(example_records: dict[str, list[dict]], source: str) -> list[PathwayEvent]:
    return [parse_vendor_event(source, raw) for raw in example_records[source]]


@pytest.mark.parametrize("source", ["dips", "esp"])
def test_every_example_record_is_valid(example_records: dict[str, list[dict]], source: str) -> None:
    assert len(example_records[source]) == 15
    for raw in example_records[source]:
        assert validate(source, raw) == [], raw


def test_dips_and_esp_examples_give_the_same_canonical_events(
    example_records: dict[str, list[dict]], same_fact: Callable[[PathwayEvent], PathwayEvent]
) -> None:
    """Pairwise, line by line: the examples hold the same three pathways in both formats.

    Beyond what differs by nature (see `same_fact`), the examples use different synthetic
    patients, and their DIPS timestamps carry +01:00 also in summer time, so a recording
    time differs by an hour from eSP's local one; recorded_at is compared as a local date.
    """
    dips, esp = normalised(example_records, "dips"), normalised(example_records, "esp")
    assert len(dips) == len(esp)
    for d, e in zip(dips, esp, strict=True):
        assert d.source == "dips" and e.source == "esp"
        assert d.recorded_at.astimezone(OSLO).date() == e.recorded_at.astimezone(OSLO).date()

        def comparable(ev: PathwayEvent) -> PathwayEvent:
            ev = same_fact(ev)
            return replace(ev, recorded_at=datetime(2000, 1, 1, tzinfo=OSLO),
                           patient=replace(ev.patient, national_id=""))

        assert comparable(d) == comparable(e), (d.to_dict(), e.to_dict())


@pytest.mark.parametrize("source", ["dips", "esp"])
def test_a_consent_given_later_the_same_day_does_not_precede_the_decision(
    example_records: dict[str, list[dict]], source: str
) -> None:
    """PHBU example: consent at 14:00 on the day of the D12CK decision must sort after it."""
    events = normalised(example_records, source)
    phbu = [e for e in events if e.pathway_type == "D12"]
    decision = next(e for e in phbu if e.code == "D12CK")
    consent = next(e for e in phbu if e.kind is EventKind.CONSENT_CHANGED)
    end = next(e for e in phbu if e.code == "D12X")
    assert decision.occurred_on == consent.occurred_on
    assert decision.occurred_at < consent.occurred_at < end.occurred_at


@pytest.mark.parametrize("source", ["dips", "esp"])
def test_a_consent_given_on_the_start_day_precedes_the_later_milestones(
    example_records: dict[str, list[dict]], source: str
) -> None:
    events = normalised(example_records, source)
    phv = [e for e in events if e.pathway_type == "D11"]
    consent = next(e for e in phv if e.kind is EventKind.CONSENT_CHANGED)
    assert consent.consent_municipality is True
    assert all(consent.occurred_at < e.occurred_at for e in phv if e.code and e.code != "D11A")


@pytest.mark.parametrize("source", ["dips", "esp"])
def test_example_mapping_details(example_records: dict[str, list[dict]], source: str) -> None:
    events = normalised(example_records, source)
    start = events[0]
    assert start.kind is EventKind.PATHWAY_CODE and start.code == "D11A"
    assert start.first_attendance_deadline.isoformat() == "2025-11-03"
    assert start.occurred_at == datetime(2025, 10, 6, tzinfo=OSLO)
    assert start.referrer.her_id == "8101339" and start.gp.hpr == "9144900"
    evaluation = events[4]
    assert evaluation.code == "D11E" and evaluation.treatment_plan_changed is True
    no_show = events[7].appointment
    assert no_show.change == "no-show" and no_show.original_time == datetime(2025, 11, 8, 13, 15, tzinfo=OSLO)
    assert no_show.new_time == datetime(2025, 11, 10, 13, 15, tzinfo=OSLO)
    assert [e.unit.setting.value for e in events[5:9]] == ["outpatient", "inpatient", "inpatient", "inpatient"]
    late = events[10]
    assert late.code == "D12F" and (late.recorded_at.date() - late.occurred_on).days == 9
    assert all(e.occurred_at.tzinfo is not None and e.recorded_at.tzinfo is not None for e in events)
