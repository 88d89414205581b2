"""Inpatient stays in the history: withdrawn as a whole, and the quality of their notices (issue #25)."""

from __future__ import annotations

import random

from forlop.events import EventKind
from forlop.history import current_history
from tests.builders import finding_kinds, pathway


def _phv():
    return pathway("D11").start("2025-09-01").first_attendance("2025-09-15").decision("2025-10-01", "P")


def _stay_findings(status) -> list[tuple[str, str]]:
    stay = {"late-admission-notice", "discharge-ready-without-admission", "discharge-without-discharge-ready"}
    return [(f.kind, f.on.isoformat()) for f in status.findings if f.kind in stay]


def test_a_stay_with_its_notices_in_time_has_no_finding() -> None:
    p = _phv().stay("admission", "2025-10-05 22:00", recorded="2025-10-06 21:00")  # 23 hours: in time
    p.stay("discharge-ready", "2025-10-20 09:00").stay("discharged", "2025-10-22 12:00")
    assert _stay_findings(p.derive("2026-01-10")) == []


def test_an_admission_registered_more_than_24_hours_after_it_began() -> None:
    p = _phv().stay("admission", "2025-10-05 22:00", recorded="2025-10-07 08:00")  # 34 hours
    p.stay("discharge-ready", "2025-10-20 09:00").stay("discharged", "2025-10-22 12:00")
    status = p.derive("2026-01-10")
    assert _stay_findings(status) == [("late-admission-notice", "2025-10-05")]
    assert "34 hours" in next(f.message for f in status.findings if f.kind == "late-admission-notice")


def test_discharge_ready_without_admission_and_discharge_without_discharge_ready() -> None:
    p = _phv().stay("discharge-ready", "2025-10-20 09:00", stay="S1")  # no admission of S1
    p.stay("admission", "2025-11-01 10:00", stay="S2").stay("discharged", "2025-11-09 12:00", stay="S2")
    assert _stay_findings(p.derive("2026-01-10")) == [
        ("discharge-ready-without-admission", "2025-10-20"), ("discharge-without-discharge-ready", "2025-11-09")]


def test_findings_follow_when_things_happened_not_arrival() -> None:
    """The admission registered after the discharge-ready notice, but dated before it: no finding."""
    p = _phv().stay("discharge-ready", "2025-10-20 09:00").stay("discharged", "2025-10-22 12:00")
    p.stay("admission", "2025-10-05 22:00", recorded="2025-10-06 08:00")
    events = list(p.events)
    random.Random(3).shuffle(events)
    p.events = events
    assert _stay_findings(p.derive("2026-01-10")) == []


def test_a_stay_is_withdrawn_as_a_whole_by_its_id_in_any_arrival_order() -> None:
    p = _phv().stay("admission", "2025-10-05 22:00").stay("discharge-ready", "2025-10-20 09:00")
    p.stay("discharged", "2025-10-22 12:00").withdraw_stay("S1", "2025-10-25")
    for seed in range(3):
        events = list(p.events)
        random.Random(seed).shuffle(events)
        current = current_history(events)
        assert not [e for e in current.events if e.stay_id]
        assert sorted(e.kind for e in current.withdrawn) == sorted(
            [EventKind.ADMISSION_STARTED, EventKind.DISCHARGE_READY, EventKind.DISCHARGED])
        assert not current.unmatched_withdrawals
    status = p.derive("2026-01-10")
    assert finding_kinds(status).count("withdrawn-registration") == 3 and not _stay_findings(status)


def test_a_stay_registered_again_after_its_withdrawal_is_in_force() -> None:
    p = _phv().stay("admission", "2025-10-05 22:00").withdraw_stay("S1", "2025-10-06")
    p.stay("admission", "2025-10-05 22:00", recorded="2025-10-06 12:00")  # keyed in again, later
    current = current_history(p.events)
    assert [e.kind for e in current.events if e.stay_id] == [EventKind.ADMISSION_STARTED]
    assert len(current.withdrawn) == 1
