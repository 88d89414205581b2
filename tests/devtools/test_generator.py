"""The synthetic event generator: valid, deterministic, and as rich as the real world."""

from __future__ import annotations

import io
import json
import time
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta

import pytest

from forlop.clock import OSLO
from forlop.events import AppointmentChange, EventKind, PathwayEvent, Setting
from forlop_devtools.synthetic import generate, iter_generate, write_ndjson
from services.ingest.domain.normalise import parse_body, parse_vendor_event
from services.ingest.domain.validation import validate

AS_OF = datetime(2026, 3, 1, 12, 0, tzinfo=OSLO)
PATHWAYS = 400
SEED = 11


@pytest.fixture(scope="module", params=["dips", "esp"])
def stream(request: pytest.FixtureRequest) -> tuple[str, list[dict], list[PathwayEvent]]:
    records = generate(request.param, PATHWAYS, SEED, as_of=AS_OF)
    return request.param, records, [parse_vendor_event(request.param, r) for r in records]


def effective(events: list[PathwayEvent]) -> dict[str, list[PathwayEvent]]:
    """Per pathway: its distinct pathway codes minus withdrawn ones, in clinical order."""
    withdrawn = {(e.pathway_id, e.withdraws) for e in events if e.kind is EventKind.REGISTRATION_WITHDRAWN}
    seen: set[str] = set()
    out: dict[str, list[PathwayEvent]] = defaultdict(list)
    for e in sorted(events, key=lambda e: (e.occurred_at, e.recorded_at)):
        if e.kind is EventKind.PATHWAY_CODE and e.event_id not in seen and (e.pathway_id, e.registration_id) not in withdrawn:
            seen.add(e.event_id)
            out[e.pathway_id].append(e)
    return out


def letters(codes: list[PathwayEvent]) -> list[str]:
    return [e.code[3:] for e in codes]


def test_every_record_validates(stream: tuple[str, list[dict], list[PathwayEvent]]) -> None:
    source, records, _ = stream
    assert all(validate(source, r) == [] for r in records)


def test_nothing_happens_or_is_recorded_after_as_of(stream: tuple[str, list[dict], list[PathwayEvent]]) -> None:
    _, _, events = stream
    assert max(e.occurred_at for e in events) <= AS_OF
    assert max(e.recorded_at for e in events) <= AS_OF
    assert min(e.occurred_on for e in events) >= (AS_OF - timedelta(days=365 + 5)).date()


def test_duplicates_are_exact_redeliveries(stream: tuple[str, list[dict], list[PathwayEvent]]) -> None:
    source, records, _ = stream
    id_field = "eventId" if source == "dips" else "meldingsId"
    by_id: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_id[r[id_field]].append(r)
    repeated = [rs for rs in by_id.values() if len(rs) > 1]
    assert len(repeated) >= 0.02 * len(by_id)
    assert all(json.dumps(r, sort_keys=True) == json.dumps(rs[0], sort_keys=True) for rs in repeated for r in rs)


def test_the_stream_has_every_feature(stream: tuple[str, list[dict], list[PathwayEvent]]) -> None:
    source, _, events = stream
    kinds = Counter(e.kind for e in events)
    assert set(kinds) == set(EventKind)
    assert {e.pathway_type for e in events} == {"D11", "D12", "D01"}
    assert {e.unit.setting for e in events} == {Setting.OUTPATIENT, Setting.INPATIENT}
    assert {e.pathway_type for e in events if e.kind is EventKind.ADMISSION_STARTED} >= {"D01"}
    changes = Counter(e.appointment.change for e in events if e.appointment)
    assert set(changes) == set(AppointmentChange) and changes[AppointmentChange.NO_SHOW] >= 10
    assert all(e.appointment.new_time > e.appointment.original_time for e in events if e.appointment and e.appointment.new_time)
    assert {e.consent_municipality for e in events if e.kind is EventKind.CONSENT_CHANGED} == {True, False}
    assert kinds[EventKind.REGISTRATION_WITHDRAWN] >= 10

    starts = [e for e in events if e.code and e.code.endswith("A") and len(e.code) == 4]
    assert any(e.first_attendance_deadline for e in starts) and any(not e.first_attendance_deadline for e in starts)
    evaluations = [e for e in events if e.code and e.code[3] == "E"]
    assert {e.treatment_plan_changed for e in evaluations} == {True, False}
    assert {e.code[3:] for e in events if e.code} >= {"A", "F", "CU", "CP", "CT", "CK", "CA", "CI", "E", "X", "V", "B"}


def test_pathway_histories_cover_the_scenarios(stream: tuple[str, list[dict], list[PathwayEvent]]) -> None:
    _, _, events = stream
    histories = effective(events)
    assert len({e.pathway_id for e in events}) >= PATHWAYS * 0.95
    shapes = [letters(codes) for codes in histories.values()]
    assert sum(s[:3] == ["A", "F", "X"] and len(s) == 3 for s in shapes) >= 3  # ended after first attendance
    assert sum("CU" in s and s.index("CU") + 1 < len(s) and s[s.index("CU") + 1][0] == "C" for s in shapes) >= 10
    ended_after = Counter(s[-2] for s in shapes if len(s) >= 2 and s[-1] == "X")
    assert all(ended_after[c] >= 2 for c in ("CK", "CA", "CI")), ended_after
    assert sum("X" not in s for s in shapes) >= 0.2 * len(shapes)  # still open at as_of
    assert sum(s.count("E") >= 2 for s in shapes) >= 20

    breaches = 0
    for codes in histories.values():
        start = next((e for e in codes if e.code.endswith("A")), None)
        first = next((e for e in codes if e.code.endswith("F")), None)
        if start and first and start.first_attendance_deadline and first.occurred_on > start.first_attendance_deadline:
            breaches += 1
    assert breaches >= 5


def test_late_and_corrected_registrations(stream: tuple[str, list[dict], list[PathwayEvent]]) -> None:
    source, _, events = stream
    late = [e for e in events if e.kind is EventKind.PATHWAY_CODE and (e.recorded_at.astimezone(OSLO).date() - e.occurred_on).days >= 2]
    assert len(late) >= 0.1 * sum(e.kind is EventKind.PATHWAY_CODE for e in events)
    if source == "esp":  # keyed in from paper, or corrected, by office staff
        withdrawn = {(e.pathway_id, e.withdraws) for e in events if e.withdraws}
        # a withdrawn registration may only look late: its date was wrong
        assert all(e.recorded_by == "office" for e in late if (e.pathway_id, e.registration_id) not in withdrawn)

    first_seen: dict[tuple[str, str], int] = {}
    for i, e in enumerate(events):
        if e.registration_id:
            first_seen.setdefault((e.pathway_id, e.registration_id), i)
    registrations = {(e.pathway_id, e.registration_id): e for e in events if e.registration_id}
    early_deletions = corrected = 0
    for i, e in enumerate(events):
        if e.kind is not EventKind.REGISTRATION_WITHDRAWN:
            continue
        cancelled = registrations[(e.pathway_id, e.withdraws)]  # always withdraws a real registration
        early_deletions += first_seen[(e.pathway_id, e.withdraws)] > i
        corrected += any(
            r.code == cancelled.code and r.occurred_on != cancelled.occurred_on
            for (pid, _), r in registrations.items() if pid == e.pathway_id
        )
    assert early_deletions >= 3  # a deletion delivered before what it cancels
    assert corrected >= 10  # registered again with another date


def test_deterministic_for_a_seed() -> None:
    first = generate("esp", 60, 5, as_of=AS_OF)
    assert generate("esp", 60, 5, as_of=AS_OF) == first
    assert list(iter_generate("esp", 60, 5, as_of=AS_OF)) == first
    assert generate("esp", 60, 6, as_of=AS_OF) != first


def test_start_sets_the_first_pathway_start() -> None:
    events = [parse_vendor_event("dips", r) for r in generate("dips", 30, 2, start=date(2026, 2, 1), as_of=AS_OF)]
    assert min(e.occurred_on for e in events) >= date(2026, 1, 20)  # a corrected date may be a few days earlier
    assert any(e.code and e.code.endswith("A") and e.occurred_on == date(2026, 2, 1) for e in events)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="vendor"):
        generate("cerner", 1, 1, as_of=AS_OF)
    with pytest.raises(ValueError, match="before as_of"):
        generate("dips", 1, 1, start=AS_OF.date(), as_of=AS_OF)


def test_ndjson_round_trip() -> None:
    records = generate("dips", 20, 3, as_of=AS_OF)
    buf = io.StringIO()
    assert write_ndjson(iter(records), buf) == len(records)
    assert parse_body("application/x-ndjson", buf.getvalue().encode()) == records


def test_fast_enough_for_the_benchmark() -> None:
    """About 7 events per pathway; the benchmark's 150,000 pathways (1M events) take ~20 s."""
    t0 = time.perf_counter()
    n = sum(1 for _ in iter_generate("dips", 5_000, 1, as_of=AS_OF))
    elapsed = time.perf_counter() - t0
    assert n > 30_000
    assert elapsed < 5, f"{n} events took {elapsed:.1f} s"


def test_inpatient_stays_carry_the_notices_real_ones_do(stream: tuple[str, list[dict], list[PathwayEvent]]) -> None:
    """Discharges with and without where to; admissions keyed in more than a day late (late notices)."""
    _, _, events = stream
    destinations = Counter(e.discharge_destination for e in events if e.kind is EventKind.DISCHARGED)
    assert destinations[None] >= 3 and len(destinations) >= 5
    admissions = [e for e in events if e.kind is EventKind.ADMISSION_STARTED]
    late = [e for e in admissions if e.recorded_at - e.occurred_at > timedelta(hours=24)]
    assert 0 < len(late) < 0.3 * len(admissions)
