"""Scenario tests, one per rule of DOMAIN.md sections 2, 3 and 6: these events, at this time, this status."""

from __future__ import annotations

import pytest

from services.pathway.domain.derive import derive
from services.pathway.domain.rules import RuleBook
from services.pathway.domain.status import (
    DeadlineStatus,
    DelayCause,
    EpisodeStatus,
    MilestoneState,
    StatusPeriod,
)
from tests.builders import at, day, finding_kinds, has_milestone, milestone, pathway

TYPES = ("D11", "D12", "D01")


def started(ptype: str = "D11", setting: str = "outpatient"):
    """Start 6 January 2025 with a legal first-attendance deadline on 3 February (28 days)."""
    return pathway(ptype, setting=setting).start("2025-01-06", first_attendance_deadline="2025-02-03")


# --- clock adjustments (section 3) ---------------------------------------------------------------


@pytest.mark.parametrize("change", ["no_show", "cancelled_by_patient"])
def test_patient_caused_delay_moves_the_adjusted_deadline_met_adjusted(change: str) -> None:
    p = getattr(started(), change)("2025-01-27", "2025-02-10").first_attendance("2025-02-10")
    m = milestone(p.derive("2025-02-11"), "first-attendance")
    assert m.deadline == day("2025-02-03")  # the national deadline never moves
    assert m.adjusted_deadline == day("2025-02-17")  # + 14 days from the missed to the new appointment
    assert m.deadline_status is DeadlineStatus.MET_ADJUSTED
    assert m.delay_cause is None


def test_late_even_after_adjustment_records_the_patient_as_cause() -> None:
    p = started().no_show("2025-01-27", "2025-02-10").first_attendance("2025-02-18")
    m = milestone(p.derive("2025-02-20"), "first-attendance")
    assert (m.adjusted_deadline, m.deadline_status, m.delay_cause) == (
        day("2025-02-17"),
        DeadlineStatus.LATE,
        DelayCause.PATIENT,
    )


def test_hospital_cancellation_does_not_move_the_deadline_late_cause_service() -> None:
    p = started().cancelled_by_hospital("2025-01-27", "2025-02-10").first_attendance("2025-02-10")
    m = milestone(p.derive("2025-02-11"), "first-attendance")
    assert (m.deadline, m.adjusted_deadline) == (day("2025-02-03"), day("2025-02-03"))
    assert (m.deadline_status, m.delay_cause) == (DeadlineStatus.LATE, DelayCause.SERVICE)


def test_hospital_cancellation_overdue_cause_service() -> None:
    p = started().cancelled_by_hospital("2025-01-27", "2025-02-10")
    m = milestone(p.derive("2025-02-05"), "first-attendance")
    assert (m.deadline_status, m.delay_cause) == (DeadlineStatus.OVERDUE, DelayCause.SERVICE)


def test_no_show_keeps_an_open_milestone_from_turning_overdue() -> None:
    p = started().no_show("2025-01-27", "2025-02-10")
    m = milestone(p.derive("2025-02-04"), "first-attendance")
    assert m.adjusted_deadline == day("2025-02-17")
    assert m.deadline_status is DeadlineStatus.PENDING  # 13 days left to the adjusted deadline


def test_no_show_without_a_new_time_does_not_move_the_deadline() -> None:
    p = started().no_show("2025-01-27")
    m = milestone(p.derive("2025-02-04"), "first-attendance")
    assert m.adjusted_deadline == day("2025-02-03")
    assert (m.deadline_status, m.delay_cause) == (DeadlineStatus.OVERDUE, DelayCause.PATIENT)


def test_no_show_before_the_decision_moves_only_the_decision_deadline() -> None:
    p = (
        started("D01", "inpatient")
        .first_attendance("2025-01-20")
        .no_show("2025-01-24", "2025-01-26")
        .decision("2025-01-28", "T")
    )
    status = p.derive("2025-01-29")
    assert milestone(status, "first-attendance").deadline_status is DeadlineStatus.MET
    decision = milestone(status, "decision-basic")
    assert (decision.deadline, decision.adjusted_deadline) == (day("2025-01-27"), day("2025-01-29"))
    assert decision.deadline_status is DeadlineStatus.MET_ADJUSTED


def test_overdue_with_cause_unknown() -> None:
    m = milestone(started().derive("2025-02-04"), "first-attendance")
    assert (m.state, m.deadline_status, m.delay_cause) == (
        MilestoneState.OPEN,
        DeadlineStatus.OVERDUE,
        DelayCause.UNKNOWN,
    )


def test_due_soon_at_exactly_seven_days_left_pending_at_eight() -> None:
    p = started()  # deadline 2025-02-03
    assert milestone(p.derive("2025-01-26"), "first-attendance").deadline_status is DeadlineStatus.PENDING
    assert milestone(p.derive("2025-01-27"), "first-attendance").deadline_status is DeadlineStatus.DUE_SOON
    assert milestone(p.derive("2025-02-03"), "first-attendance").deadline_status is DeadlineStatus.DUE_SOON


def test_due_soon_horizon_is_configurable() -> None:
    rules = RuleBook.load(due_soon_days=3)
    p = started()
    assert (
        milestone(p.derive("2025-01-30", rules), "first-attendance").deadline_status is DeadlineStatus.PENDING
    )
    assert (
        milestone(p.derive("2025-01-31", rules), "first-attendance").deadline_status
        is DeadlineStatus.DUE_SOON
    )
    assert p.derive("2025-01-31", rules).extra["due_soon_days"] == 3


def test_deadlines_count_in_oslo_local_dates() -> None:
    """23:30 UTC on 3 February is already 4 February in Oslo: the deadline has passed."""
    from datetime import UTC, datetime

    p = started()
    before = derive(p.events, RuleBook.load(), datetime(2025, 2, 3, 22, 30, tzinfo=UTC))
    after = derive(p.events, RuleBook.load(), datetime(2025, 2, 3, 23, 30, tzinfo=UTC))
    assert milestone(before, "first-attendance").deadline_status is DeadlineStatus.DUE_SOON
    assert milestone(after, "first-attendance").deadline_status is DeadlineStatus.OVERDUE


# --- milestones and outcomes (section 2) ---------------------------------------------------------


@pytest.mark.parametrize("ptype", TYPES)
def test_pathway_ending_after_first_attendance(ptype: str) -> None:
    p = started(ptype).first_attendance("2025-01-20").end("2025-01-20")
    status = p.derive("2025-03-01")
    assert status.episode_status is EpisodeStatus.FINISHED
    assert status.phase == "ended"
    assert status.end_date == day("2025-01-20")
    assert milestone(status, "first-attendance").deadline_status is DeadlineStatus.MET
    basic = milestone(status, "decision-basic")
    assert basic.state is MilestoneState.CANCELLED
    assert basic.deadline_status is None  # a cancelled milestone is never overdue
    assert milestone(status, "end").state is MilestoneState.DONE
    assert not [m for m in status.milestones if m.state is MilestoneState.OPEN]
    assert status.next_open_milestone() is None


@pytest.mark.parametrize("ptype", TYPES)
@pytest.mark.parametrize("outcome", ["S", "K", "A", "I"])
def test_follow_up_elsewhere_outcomes_active_without_open_deadline_until_end(
    ptype: str, outcome: str
) -> None:
    p = started(ptype).first_attendance("2025-01-20").decision("2025-02-10", outcome)
    status = p.derive("2025-06-01")
    assert status.episode_status is EpisodeStatus.ACTIVE
    assert status.phase == "follow-up-elsewhere"
    assert milestone(status, "decision-basic").outcome == outcome
    assert milestone(status, "decision-extended").state is MilestoneState.CANCELLED
    assert not has_milestone(status, "evaluation-1")
    assert status.next_open_milestone() is None
    assert status.extra["decision_outcome"] == outcome
    ended = p.end("2025-06-01").derive("2025-06-02")
    assert ended.episode_status is EpisodeStatus.FINISHED
    assert [(s.status, s.start, s.end) for s in ended.status_history] == [
        (EpisodeStatus.WAITLIST, day("2025-01-06"), day("2025-01-20")),
        (EpisodeStatus.ACTIVE, day("2025-01-20"), day("2025-06-01")),
        (EpisodeStatus.FINISHED, day("2025-06-01"), None),
    ]


@pytest.mark.parametrize("ptype", TYPES)
@pytest.mark.parametrize("outcome", ["P", "T"])
def test_treatment_outcomes_open_the_first_evaluation(ptype: str, outcome: str) -> None:
    status = (
        started(ptype).first_attendance("2025-01-20").decision("2025-02-10", outcome).derive("2025-02-11")
    )
    assert status.phase == "treatment"
    assert milestone(status, "decision-extended").state is MilestoneState.CANCELLED
    assert milestone(status, "evaluation-1").state is MilestoneState.OPEN
    assert milestone(status, "evaluation-1").anchor_date == day("2025-02-10")


@pytest.mark.parametrize(("ptype", "deadline"), [("D11", "2025-03-24"), ("D12", "2025-03-24"), ("D01", None)])
def test_outcome_u_opens_decision_extended(ptype: str, deadline: str | None) -> None:
    status = started(ptype).first_attendance("2025-01-20").decision("2025-02-10", "U").derive("2025-02-11")
    ext = milestone(status, "decision-extended")
    assert ext.state is MilestoneState.OPEN
    assert ext.deadline == (day(deadline) if deadline else None)
    assert ext.deadline_status is (DeadlineStatus.PENDING if deadline else None)
    assert status.phase == "extended-assessment"
    assert not has_milestone(status, "evaluation-1")


def test_decision_after_extended_assessment_anchors_the_first_evaluation() -> None:
    p = started("D12").first_attendance("2025-01-20").decision("2025-02-10", "U").decision("2025-03-10", "P")
    status = p.derive("2025-03-11")
    assert milestone(status, "decision-extended").deadline_status is DeadlineStatus.MET
    assert milestone(status, "evaluation-1").anchor_date == day("2025-03-10")
    assert milestone(status, "evaluation-1").deadline == day("2025-04-21")
    assert finding_kinds(status) == []


def test_tsb_detox_to_treatment_start() -> None:
    p = (
        pathway("D01", setting="inpatient")
        .start("2025-01-06")
        .first_attendance("2025-01-07")
        .detox_completed("2025-01-14")
    )
    m = milestone(p.derive("2025-01-14"), "treatment-start")
    assert (m.deadline, m.deadline_status) == (day("2025-01-14"), DeadlineStatus.DUE_SOON)
    assert milestone(p.derive("2025-01-15"), "treatment-start").deadline_status is DeadlineStatus.OVERDUE
    assert (
        milestone(p.treatment_start("2025-01-14").derive("2025-01-15"), "treatment-start").deadline_status
        is DeadlineStatus.MET
    )


# --- history, not arrival order (section 3) ------------------------------------------------------


def test_decision_withdrawn_and_registered_again_with_another_date() -> None:
    p = (
        started()
        .first_attendance("2025-01-20")
        .decision("2025-02-10", "U", ref="wrong")
        .withdraw("wrong", on="2025-02-12")
        .decision("2025-02-17", "U", ref="right")
    )
    status = p.derive("2025-02-18")
    basic = milestone(status, "decision-basic")
    assert basic.completed_on == day("2025-02-17")
    assert basic.event_ids == (p.events[-1].event_id,)
    ext = milestone(status, "decision-extended")
    assert (ext.anchor_date, ext.deadline) == (day("2025-02-17"), day("2025-03-31"))
    assert finding_kinds(status) == ["withdrawn-registration"]


def test_registration_corrected_under_the_same_id_the_last_recorded_version_wins() -> None:
    p = (
        started()
        .first_attendance("2025-01-20")
        .decision("2025-02-10", "P", ref="d")
        .decision("2025-02-12", "P", ref="d", recorded="2025-02-13")
    )
    status = p.derive("2025-02-14")
    assert milestone(status, "decision-basic").completed_on == day("2025-02-12")
    assert milestone(status, "evaluation-1").anchor_date == day("2025-02-12")
    assert finding_kinds(status) == []


def test_withdrawal_arriving_before_its_target() -> None:
    p = (
        started()
        .first_attendance("2025-01-20")
        .decision("2025-02-10", "P", ref="d")
        .withdraw("d", on="2025-02-11")
    )
    decision, withdrawal = p.events[-2], p.events[-1]
    reordered = [*p.events[:-2], withdrawal, decision]
    status = derive(reordered, RuleBook.load(), at("2025-02-20"))
    assert status == p.derive("2025-02-20")
    assert milestone(status, "decision-basic").state is MilestoneState.OPEN
    assert not has_milestone(status, "evaluation-1")
    assert finding_kinds(status) == ["withdrawn-registration"]
    # before the target arrives, the withdrawal is known but points at nothing
    alone = derive([*p.events[:-2], withdrawal], RuleBook.load(), at("2025-02-20"))
    assert "withdrawal-without-target" in finding_kinds(alone)
    assert milestone(alone, "decision-basic").state is MilestoneState.OPEN


@pytest.mark.parametrize("ptype", TYPES)
def test_start_withdrawn_is_entered_in_error(ptype: str) -> None:
    p = started(ptype).first_attendance("2025-01-20").withdraw("last", on="2025-01-21")
    q = started(ptype)
    start_reg = q.events[0].registration_id
    assert start_reg is not None
    q = q.first_attendance("2025-01-20").withdraw(start_reg, on="2025-01-22")
    status = q.derive("2025-03-01")
    assert status.episode_status is EpisodeStatus.ENTERED_IN_ERROR
    assert status.phase == "entered-in-error"
    assert status.status_history == (StatusPeriod(EpisodeStatus.ENTERED_IN_ERROR, day("2025-01-20")),)
    assert not [m for m in status.milestones if m.state is MilestoneState.OPEN]
    assert "missing-start" not in finding_kinds(status)
    assert "withdrawn-registration" in finding_kinds(status)
    # only the first attendance withdrawn: the pathway is simply waiting again
    assert p.derive("2025-01-22").episode_status is EpisodeStatus.WAITLIST


def test_duplicates_are_one_event() -> None:
    p = started().first_attendance("2025-01-20").redeliver().decision("2025-02-10", "P").redeliver()
    assert len(p.events) == 5
    status = p.derive("2025-02-11")
    assert finding_kinds(status) == []
    assert derive(p.events[::-1], RuleBook.load(), at("2025-02-11")) == status


# --- rule sets change over time ------------------------------------------------------------------


@pytest.mark.parametrize("ptype", TYPES)
@pytest.mark.parametrize(
    ("start", "version", "rule"),
    [
        ("2022-12-31", "2019", "referral-received"),
        ("2022-06-01", "2019", "referral-received"),
        ("2023-01-01", "2023", "referral-assessed"),
        ("2024-03-01", "2023", "referral-assessed"),
    ],
)
def test_2019_versus_2023_start_rule(ptype: str, start: str, version: str, rule: str) -> None:
    status = pathway(ptype).start(start).derive("2024-12-31")
    assert status.rule_set == f"{ptype}@{version}"
    assert status.extra["start_rule"] == rule
    assert status.start_date == day(start)


# --- setting in force on the anchor date ---------------------------------------------------------


def test_setting_change_uses_the_setting_in_force_on_the_anchor_date() -> None:
    p = (
        pathway("D11", setting="inpatient")
        .start("2025-01-06")
        .first_attendance("2025-01-07")
        .decision("2025-01-20", "P")
        .in_setting("outpatient")
        .evaluation("2025-02-01")
    )
    status = p.derive("2025-02-02")
    first = milestone(status, "evaluation-1")  # anchored on an inpatient decision: 14 days
    assert (first.deadline, first.deadline_status) == (day("2025-02-03"), DeadlineStatus.MET)
    second = milestone(status, "evaluation-2")  # anchored on an outpatient evaluation: 84 days
    assert second.deadline == day("2025-04-26")
    assert status.extra["setting"] == "outpatient"


def test_setting_change_after_the_anchor_does_not_change_the_deadline() -> None:
    p = (
        pathway("D01", setting="outpatient")
        .start("2025-01-06")
        .first_attendance("2025-01-07")
        .in_setting("inpatient")
        .consent("2025-01-09")
    )
    m = milestone(p.derive("2025-01-10"), "decision-basic")
    assert m.deadline == day("2025-01-28")  # outpatient TSB: 21 days, not the inpatient 7


# --- EpisodeOfCare status history ----------------------------------------------------------------


def test_episode_status_history_waitlist_active_finished() -> None:
    p = started()
    assert p.derive("2025-01-10").episode_status is EpisodeStatus.WAITLIST
    assert p.derive("2025-01-10").status_history == (StatusPeriod(EpisodeStatus.WAITLIST, day("2025-01-06")),)
    p = p.first_attendance("2025-01-20").decision("2025-02-10", "P")
    active = p.derive("2025-02-11")
    assert active.episode_status is EpisodeStatus.ACTIVE
    assert active.status_history == (
        StatusPeriod(EpisodeStatus.WAITLIST, day("2025-01-06"), day("2025-01-20")),
        StatusPeriod(EpisodeStatus.ACTIVE, day("2025-01-20")),
    )
    finished = p.end("2025-04-01").derive("2025-04-02")
    assert finished.episode_status is EpisodeStatus.FINISHED
    assert finished.status_history == (
        StatusPeriod(EpisodeStatus.WAITLIST, day("2025-01-06"), day("2025-01-20")),
        StatusPeriod(EpisodeStatus.ACTIVE, day("2025-01-20"), day("2025-04-01")),
        StatusPeriod(EpisodeStatus.FINISHED, day("2025-04-01")),
    )
    assert milestone(finished, "evaluation-1").state is MilestoneState.CANCELLED


def test_status_as_of_a_past_time_ignores_what_happened_later() -> None:
    p = started().first_attendance("2025-01-20").decision("2025-02-10", "P").end("2025-04-01")
    status = p.derive("2025-01-25")
    assert status.episode_status is EpisodeStatus.ACTIVE
    assert milestone(status, "decision-basic").state is MilestoneState.OPEN


# --- impossible input as findings (section 6) ----------------------------------------------------


def test_decision_before_first_attendance_is_a_finding() -> None:
    status = started().decision("2025-01-15", "P").first_attendance("2025-01-20").derive("2025-02-01")
    assert "decision-before-first-attendance" in finding_kinds(status)
    assert milestone(status, "decision-basic").state is MilestoneState.DONE


def test_decision_without_first_attendance_is_a_finding() -> None:
    status = started().decision("2025-01-15", "K").derive("2025-02-01")
    assert "decision-before-first-attendance" in finding_kinds(status)
    assert status.episode_status is EpisodeStatus.ACTIVE


def test_third_clinical_decision_is_a_finding() -> None:
    p = (
        started()
        .first_attendance("2025-01-20")
        .decision("2025-02-10", "U")
        .decision("2025-03-10", "P")
        .decision("2025-03-20", "K")
    )
    status = p.derive("2025-03-21")
    assert finding_kinds(status) == ["third-decision"]
    third = next(f for f in status.findings if f.kind == "third-decision")
    assert (third.event_id, third.on) == (p.events[-1].event_id, day("2025-03-20"))
    assert status.extra["decision_outcome"] == "P"  # the third decision changes nothing


def test_second_decision_without_extended_assessment_is_a_finding() -> None:
    status = (
        started()
        .first_attendance("2025-01-20")
        .decision("2025-02-10", "P")
        .decision("2025-02-20", "K")
        .derive("2025-02-21")
    )
    assert finding_kinds(status) == ["unexpected-decision"]


@pytest.mark.parametrize(
    ("ptype", "foreign"), [("D11", "D12CP"), ("D12", "D01F"), ("D01", "D11E"), ("D11", "D11V")]
)
def test_code_of_another_pathway_type_is_a_finding(ptype: str, foreign: str) -> None:
    p = started(ptype).first_attendance("2025-01-20").code(foreign, "2025-01-25")
    status = p.derive("2025-01-26")
    assert finding_kinds(status) == ["invalid-code"]
    assert "code-matches-pathway-type" in status.findings[0].message
    clean = started(ptype).first_attendance("2025-01-20").derive("2025-01-26")
    assert _without_findings(status) == _without_findings(clean)  # the foreign code changes nothing else


def _without_findings(status) -> dict:
    d = status.to_dict()
    d.pop("findings")
    d["extra"].pop("last_event_on")  # the foreign registration is still a registration in the EHR
    d["extra"]["clock"].pop("last_contact")  # (and a contact with the patient)
    return d


def test_unknown_code_is_a_finding_not_a_crash() -> None:
    status = started().code("D11Q", "2025-01-10").code("D11CZ", "2025-01-11").derive("2025-01-12")
    assert finding_kinds(status) == ["invalid-code", "invalid-code"]
    assert status.episode_status is EpisodeStatus.WAITLIST


def test_evaluation_before_any_decision_is_a_finding() -> None:
    status = started().first_attendance("2025-01-20").evaluation("2025-02-01").derive("2025-02-02")
    assert finding_kinds(status) == ["evaluation-before-decision"]
    assert not has_milestone(status, "evaluation-1")


def test_missing_start_is_a_finding() -> None:
    status = pathway("D11").first_attendance("2025-01-20").derive("2025-01-21")
    assert "missing-start" in finding_kinds(status)
    assert status.episode_status is EpisodeStatus.ACTIVE


def test_events_after_the_end_are_findings() -> None:
    p = started().first_attendance("2025-01-20").end("2025-01-20").evaluation("2025-02-01")
    status = p.derive("2025-02-02")
    assert finding_kinds(status) == ["event-after-end"]
    assert status.episode_status is EpisodeStatus.FINISHED


# --- registration quality (section 6) ------------------------------------------------------------


def test_late_registration_is_a_finding() -> None:
    late = started().first_attendance("2025-01-20", recorded="2025-02-04").derive("2025-02-05")  # 15 days
    assert finding_kinds(late) == ["late-registration"]
    assert late.findings[0].on == day("2025-01-20")
    in_time = started().first_attendance("2025-01-20", recorded="2025-02-03").derive("2025-02-05")  # 14 days
    assert finding_kinds(in_time) == []
    # a late registration still counts from when it happened
    assert milestone(late, "first-attendance").deadline_status is DeadlineStatus.MET


def test_passive_pathway_is_a_finding() -> None:
    p = started().first_attendance("2025-01-20")
    assert "passive-pathway" not in finding_kinds(p.derive("2025-04-20"))  # 90 days without contact
    passive = p.derive("2025-04-21")  # 91 days
    assert "passive-pathway" in finding_kinds(passive)
    assert "passive-pathway" not in finding_kinds(p.end("2025-04-21").derive("2025-04-21"))


# --- regressions found while writing these tests -------------------------------------------------


def test_appointment_moved_ahead_of_time_moves_the_adjusted_deadline_when_registered() -> None:
    """The patient calls on 20 January to move the 28 January appointment: reminders update at once."""
    p = pathway("D11").start("2025-01-06", first_attendance_deadline="2025-01-30")
    p.cancelled_by_patient("2025-01-28", "2025-02-10")
    p.events[-1] = p.events[-1].with_(recorded_at=at("2025-01-20"))
    status = p.derive("2025-01-23")
    m = milestone(status, "first-attendance")
    assert m.adjusted_deadline == day("2025-02-12")
    assert m.deadline_status is DeadlineStatus.PENDING  # not due-soon against the old deadline
    assert finding_kinds(status) == []  # a coming appointment is not a registration dated in the future
    # before the call nothing is known of it
    assert milestone(p.derive("2025-01-19"), "first-attendance").adjusted_deadline == day("2025-01-30")


def test_hospital_cancelling_a_coming_appointment_is_the_cause_of_an_overdue() -> None:
    p = pathway("D11").start("2025-01-06", first_attendance_deadline="2025-01-30")
    p.cancelled_by_hospital("2025-02-03", "2025-02-10")
    p.events[-1] = p.events[-1].with_(recorded_at=at("2025-01-20"))
    m = milestone(p.derive("2025-01-31"), "first-attendance")
    assert (m.adjusted_deadline, m.deadline_status, m.delay_cause) == (
        day("2025-01-30"),
        DeadlineStatus.OVERDUE,
        DelayCause.SERVICE,
    )


def test_registration_dated_in_the_future_is_a_finding() -> None:
    p = started().first_attendance("2025-01-30", recorded="2025-01-20")
    status = p.derive("2025-01-21")
    assert finding_kinds(status) == ["future-dated"]
    assert milestone(status, "first-attendance").state is MilestoneState.OPEN


@pytest.mark.parametrize("withdrawal_id", ["dips:0-first", "dips:z-last"])
def test_withdrawal_recorded_in_the_same_minute_as_its_target_still_withdraws(withdrawal_id: str) -> None:
    """eSP keeps minutes only: the event id must not decide whether a deletion counts."""
    p = started().first_attendance("2025-01-20", ref="f").withdraw("f")
    target, withdrawal = p.events[-2], p.events[-1]
    p.events[-1] = withdrawal.with_(
        event_id=withdrawal_id, recorded_at=target.recorded_at, occurred_at=target.recorded_at
    )
    status = p.derive("2025-01-25")
    assert milestone(status, "first-attendance").state is MilestoneState.OPEN
    assert finding_kinds(status) == ["withdrawn-registration"]


def test_unknown_pathway_type_is_findings_not_a_crash() -> None:
    status = pathway("D99").start("2025-01-06").first_attendance("2025-01-20").derive("2025-01-21")
    assert "unknown-pathway-type" in finding_kinds(status)
    assert "invalid-code" in finding_kinds(status)
    assert status.rule_set == "D99@none"


def test_cancelled_appointments_are_no_contact_for_the_passive_pathway_finding() -> None:
    """An internal waiting list: the hospital keeps cancelling, the patient is never seen."""
    p = (
        started()
        .first_attendance("2025-01-20")
        .cancelled_by_hospital("2025-03-01", "2025-04-01")
        .cancelled_by_hospital("2025-04-01", "2025-05-01")
        .consent("2025-04-10")
    )
    passive = [f for f in p.derive("2025-04-21").findings if f.kind == "passive-pathway"]
    assert len(passive) == 1
    assert passive[0].event_id == p.events[1].event_id  # the first attendance: the last contact
    assert passive[0].message == "no registered contact for 91 days"
