"""derive(events, rules, now) -> PathwayStatus: the pathway engine's one pure function.

Reads the pathway's current history (see ``history``) in the order things happened,
applies the rule set in force on the start date and the clock, and returns every
milestone with its national and adjusted deadline, completion and deadline status,
the EpisodeOfCare status with its periods, and registration-quality findings.
Impossible input is reported as a finding, never fixed silently and never fatal.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from forlop.clock import local_date
from forlop.codes import ParsedCode, UnknownCode, code_list
from forlop.events import EventKind, PathwayEvent, Setting
from forlop.history import current_history, happened_order
from forlop.status import (
    ClockBasis,
    DeadlineStatus,
    DelayCause,
    EpisodeStatus,
    LastContact,
    Milestone,
    MilestoneCode,
    MilestoneState,
    PathwayStatus,
    QualityFinding,
    StatusPeriod,
)
from services.pathway.domain.deadlines import deadline_status
from services.pathway.domain.rules import RuleBook, RuleSet, UnknownPathwayType


@dataclass(frozen=True)
class Registration:
    """A pathway code registration in force, with its parsed meaning."""

    event: PathwayEvent
    parsed: ParsedCode

    @property
    def on(self) -> date:
        return self.event.occurred_on


@dataclass(frozen=True)
class ClockChange:
    """A missed or moved appointment: patient-caused ones move the adjusted deadline."""

    original: date
    new: date | None
    change: str
    event_id: str


@dataclass
class _Context:
    rules: RuleSet
    today: date
    history: list[PathwayEvent]
    changes: list[ClockChange]
    findings: list[QualityFinding] = field(default_factory=list)
    overdue_causes: dict[str, str] = field(default_factory=dict)  # open milestone -> its cause if it goes overdue
    last_contact: PathwayEvent | None = None  # of an open episode: where the passive-pathway count starts

    def setting_on(self, day: date) -> Setting:
        """The unit's setting in force on a date (the latest registration on or before it)."""
        before = [ev for ev in self.history if ev.occurred_on <= day]
        return (before[-1] if before else self.history[0]).unit.setting

    def find(self, kind: str, message: str, ev: PathwayEvent | None = None) -> None:
        self.findings.append(QualityFinding(kind, message, ev.event_id if ev else None, ev.occurred_on if ev else None))


def derive(events: Iterable[PathwayEvent], rules: RuleBook, now: datetime) -> PathwayStatus:
    all_events = list(events)
    if not all_events:
        raise ValueError("derive needs at least one event")
    today = local_date(now)
    current = current_history(all_events)
    identity = min(all_events, key=happened_order)
    ptype = identity.pathway_type

    findings: list[QualityFinding] = []
    history = [ev for ev in current.events if ev.occurred_on <= today]
    for ev in current.events:
        # a registration dated in the future; a cancelled or moved appointment later than today is normal
        if ev.kind is EventKind.PATHWAY_CODE and ev.occurred_on > today and ev.recorded_at <= now:
            findings.append(QualityFinding("future-dated", "registered with a date in the future", ev.event_id,
                                           ev.occurred_on))
    registrations: list[Registration] = []
    for ev in history:
        if ev.kind is not EventKind.PATHWAY_CODE or not ev.code:
            continue
        try:
            registrations.append(Registration(ev, code_list().parse(ev.code, ptype)))
        except UnknownCode as exc:
            findings.append(QualityFinding("invalid-code", f"{exc} ({exc.rule})", ev.event_id, ev.occurred_on))

    starts = [r for r in registrations if r.parsed.event == "start"]
    start = starts[0] if starts else None
    try:
        rule_set = rules.for_pathway(ptype, start.on if start else None)
    except UnknownPathwayType:
        rule_set = _no_rules(ptype)
        findings.append(QualityFinding("unknown-pathway-type", f"no rule set for pathway type {ptype}"))

    # An appointment moved ahead of time (the patient called to move it) moves the clock as soon as it is
    # registered, not only when the original appointment time has passed.
    known_changes = [ev for ev in current.events if ev.occurred_on <= today or ev.recorded_at <= now]
    ctx = _Context(rule_set, today, history or [identity], _clock_changes(known_changes), findings)
    start_withdrawn = start is None and any(_is_start(ev, ptype) for ev in current.withdrawn)
    status = _derive_milestones(ctx, registrations, start, start_withdrawn)
    _registration_quality(ctx, registrations, current.withdrawn, current.unmatched_withdrawals, status[0])
    episode_status, phase, milestones, periods, end_date, extra = status
    extra["clock"] = _clock_basis(ctx, current.events, today, now)
    return PathwayStatus(
        pathway_key=identity.pathway_key,
        pathway_id=identity.pathway_id,
        source=identity.source.value,
        pathway_type=ptype,
        episode_status=episode_status,
        phase=phase,
        milestones=tuple(milestones),
        status_history=tuple(periods),
        start_date=start.on if start else (history[0].occurred_on if history else None),
        end_date=end_date,
        rule_set=rule_set.id,
        findings=tuple(sorted(ctx.findings, key=lambda f: (f.on or date.min, f.kind, f.event_id or ""))),
        as_of=now,
        extra=extra,
    )


def _derive_milestones(
    ctx: _Context, regs: list[Registration], start: Registration | None, start_withdrawn: bool
) -> tuple:
    rules = ctx.rules
    by_event: dict[str, list[Registration]] = {}
    for r in regs:
        by_event.setdefault(r.parsed.event, []).append(r)

    ends = by_event.get("end", [])
    end = ends[0] if ends else None
    for extra_end in ends[1:]:
        ctx.find("duplicate-end", "the pathway was ended more than once", extra_end.event)
    live = [r for r in regs if end is None or r.on <= end.on or r is end]
    for r in regs:
        if end is not None and r.on > end.on:
            ctx.find("event-after-end", f"{r.parsed.code} registered after the pathway ended", r.event)

    def first_of(kind: str) -> Registration | None:
        found = [r for r in live if r.parsed.event == kind]
        for dup in found[1:]:
            ctx.find(f"duplicate-{kind}", f"{kind} registered more than once", dup.event)
        return found[0] if found else None

    if start is None and not start_withdrawn:
        ctx.find("missing-start", "no start registration (A) for this pathway", None)
    for dup in by_event.get("start", [])[1:]:
        ctx.find("duplicate-start", "the pathway was started more than once", dup.event)
    attendance = first_of("first-attendance")
    if attendance and start and attendance.on < start.on:
        ctx.find("first-attendance-before-start", "first attendance registered before the start", attendance.event)

    milestones: list[Milestone] = []
    start_on = start.on if start else None
    milestones.append(
        Milestone("start", MilestoneCode.START, MilestoneState.DONE if start else MilestoneState.OPEN,
                  completed_on=start_on, event_ids=(start.event.event_id,) if start else ())
    )
    # First attendance: a deadline only when the start registration gave one (frist for start helsehjelp).
    legal = start.event.first_attendance_deadline if start else None
    milestones.append(
        _timed(ctx, "first-attendance", MilestoneCode.FIRST_ATTENDANCE, start_on,
               (legal - start_on).days if legal and start_on else None, attendance)
    )

    decisions = [r for r in live if r.parsed.event == "decision"]
    for d in decisions:
        if attendance is None or d.on < attendance.on:
            ctx.find("decision-before-first-attendance", "clinical decision before any first attendance", d.event)
    basic = decisions[0] if decisions else None
    extended: Registration | None = None
    if len(decisions) > 1:
        if basic and basic.parsed.outcome in rules.extended_assessment_outcomes:
            extended = decisions[1]
        else:
            ctx.find("unexpected-decision", "a second clinical decision without extended assessment",
                     decisions[1].event)
        for extra in decisions[2:]:
            ctx.find("third-decision", "more than two clinical decisions in one pathway", extra.event)

    anchor = attendance.on if attendance else None
    milestones.append(
        _timed(ctx, "decision-basic", MilestoneCode.DECISION_BASIC, anchor,
               rules.days("decision-basic", ctx.setting_on(anchor)) if anchor else None, basic)
    )
    final: Registration | None = None
    if basic is not None:
        if basic.parsed.outcome in rules.extended_assessment_outcomes:
            milestones.append(
                _timed(ctx, "decision-extended", MilestoneCode.DECISION_EXTENDED, basic.on,
                       rules.days("decision-extended", ctx.setting_on(basic.on)), extended)
            )
            final = extended
        else:
            milestones.append(Milestone("decision-extended", MilestoneCode.DECISION_EXTENDED,
                                        MilestoneState.CANCELLED, anchor_date=basic.on))
            final = basic

    if rules.has_interval("treatment-start"):
        milestones.extend(_treatment_start(ctx, live))

    in_treatment = final is not None and final.parsed.outcome in rules.treatment_outcomes
    evaluations = [r for r in live if r.parsed.event == "evaluation"]
    counted = [e for e in evaluations if in_treatment and final is not None and e.on >= final.on]
    for e in evaluations:
        if e not in counted:
            ctx.find("evaluation-before-decision", "evaluation without a preceding treatment decision", e.event)
    if in_treatment and final is not None:
        anchor_on, interval = final.on, "evaluation-first"
        for n, e in enumerate([*counted, None], start=1):
            milestones.append(
                _timed(ctx, f"evaluation-{n}", MilestoneCode.EVALUATION, anchor_on,
                       rules.days(interval, ctx.setting_on(anchor_on)), e)
            )
            if e is not None:
                anchor_on, interval = e.on, "evaluation-next"

    milestones.append(
        Milestone("end", MilestoneCode.END, MilestoneState.DONE if end else MilestoneState.OPEN,
                  completed_on=end.on if end else None, outcome=end.parsed.outcome if end else None,
                  event_ids=(end.event.event_id,) if end else ())
    )

    if start_withdrawn or end is not None:
        milestones = [_cancel(m) if m.state is MilestoneState.OPEN and m.key != "end" else m for m in milestones]
    if start_withdrawn:
        milestones = [_cancel(m) if m.state is MilestoneState.OPEN else m for m in milestones]

    episode, periods, phase = _episode(ctx, start, attendance, decisions, final, end, start_withdrawn)
    extra = {
        "due_soon_days": rules.due_soon_days,
        "start_rule": rules.start_date_rule,
        "decision_outcome": final.parsed.outcome if final else (basic.parsed.outcome if basic else None),
        "setting": ctx.setting_on(ctx.today).value,
        "last_event_on": ctx.history[-1].occurred_on.isoformat(),
    }
    return episode, phase, milestones, periods, end.on if end else None, extra


def _treatment_start(ctx: _Context, live: list[Registration]) -> list[Milestone]:
    """TSB: from completed detoxification (avrusning) to other treatment starting."""
    detox = [r for r in live if r.parsed.event == "detox-completed"]
    starts = [r for r in live if r.parsed.event == "treatment-start"]
    if not detox:
        for s in starts:
            ctx.find("treatment-start-without-detox", "treatment start registered without completed detox", s.event)
        return []
    out = []
    for n, v in enumerate(detox, start=1):
        done = next((s for s in starts if s.on >= v.on), None)
        key = "treatment-start" if n == 1 else f"treatment-start-{n}"
        out.append(_timed(ctx, key, MilestoneCode.TREATMENT_START, v.on,
                          ctx.rules.days("treatment-start", ctx.setting_on(v.on)), done))
    return out


def _episode(ctx: _Context, start, attendance, decisions, final, end, start_withdrawn: bool) -> tuple:
    if start_withdrawn:
        first = ctx.history[0].occurred_on
        return EpisodeStatus.ENTERED_IN_ERROR, [StatusPeriod(EpisodeStatus.ENTERED_IN_ERROR, first)], \
            "entered-in-error"
    begin = start.on if start else ctx.history[0].occurred_on
    contact = attendance.on if attendance else (decisions[0].on if decisions else None)
    marks: list[tuple[EpisodeStatus, date]] = [(EpisodeStatus.WAITLIST, begin)]
    if contact is not None and (end is None or contact <= end.on):
        marks.append((EpisodeStatus.ACTIVE, max(contact, begin)))
    if end is not None:
        marks.append((EpisodeStatus.FINISHED, end.on))
    periods = [
        StatusPeriod(status, on, marks[i + 1][1] if i + 1 < len(marks) else None)
        for i, (status, on) in enumerate(marks)
    ]
    periods = [p for p in periods if p.end is None or p.end > p.start or p.status is EpisodeStatus.FINISHED]
    episode = marks[-1][0]
    rules = ctx.rules
    if end is not None:
        phase = "ended"
    elif contact is None:
        phase = "waiting"
    elif final is None:
        phase = "extended-assessment" if decisions else "assessment"
    elif final.parsed.outcome in rules.treatment_outcomes:
        phase = "treatment"
    elif final.parsed.outcome in rules.follow_up_elsewhere_outcomes:
        phase = "follow-up-elsewhere"
    else:
        phase = "assessment"
    return episode, periods, phase


def _timed(
    ctx: _Context,
    key: str,
    code: MilestoneCode,
    anchor: date | None,
    days: int | None,
    done: Registration | None,
) -> Milestone:
    """A milestone with a national deadline (anchor + days), its adjusted deadline and deadline status."""
    completed_on = done.on if done else None
    state = MilestoneState.DONE if done else MilestoneState.OPEN
    outcome = done.parsed.outcome if done else None
    event_ids = (done.event.event_id,) if done else ()
    if anchor is None or days is None:
        return Milestone(key, code, state, anchor, completed_on=completed_on, outcome=outcome, event_ids=event_ids)
    deadline = anchor + timedelta(days=days)
    # the missed or moved appointments of this milestone: from its anchor until it was done (or so far)
    in_window = [
        c for c in ctx.changes if anchor <= c.original and (completed_on is None or c.original < completed_on)
    ]
    shift = sum(
        max((c.new - c.original).days, 0)
        for c in in_window
        if c.change in ctx.rules.patient_caused_changes and c.new is not None
    )
    adjusted = deadline + timedelta(days=shift)
    status = deadline_status(deadline, adjusted, ctx.today, ctx.rules.due_soon_days, completed_on)
    kinds = {c.change for c in in_window}
    cause_if_late = (
        DelayCause.SERVICE if kinds & ctx.rules.service_caused_changes
        else DelayCause.PATIENT if kinds & ctx.rules.patient_caused_changes
        else DelayCause.UNKNOWN
    )
    if not done:
        ctx.overdue_causes[key] = cause_if_late.value
    cause = cause_if_late if status in (DeadlineStatus.LATE, DeadlineStatus.OVERDUE) else None
    return Milestone(key, code, state, anchor, deadline, adjusted, completed_on, status, cause, outcome, event_ids)


def _cancel(m: Milestone) -> Milestone:
    return Milestone(m.key, m.code, MilestoneState.CANCELLED, m.anchor_date, m.deadline, m.adjusted_deadline,
                     outcome=m.outcome, event_ids=m.event_ids)


def _clock_changes(history: list[PathwayEvent]) -> list[ClockChange]:
    out = []
    for ev in history:
        if ev.kind is EventKind.APPOINTMENT_CHANGED and ev.appointment is not None:
            a = ev.appointment
            out.append(ClockChange(local_date(a.original_time), local_date(a.new_time) if a.new_time else None,
                                   a.change.value, ev.event_id))
    return out


def _registration_quality(ctx: _Context, regs, withdrawn, unmatched, episode: EpisodeStatus) -> None:
    """Findings that do not change the status: late keying, retracted codes, passive pathways."""
    for r in regs:
        lag = (local_date(r.event.recorded_at) - r.on).days
        if lag > ctx.rules.late_registration_days:
            ctx.find("late-registration", f"{r.parsed.code} registered {lag} days after the event", r.event)
    for ev in withdrawn:
        ctx.find("withdrawn-registration", f"{ev.code or ev.kind.value} was withdrawn", ev)
    for ev in unmatched:
        ctx.find("withdrawal-without-target", "a withdrawal whose registration is not known (yet)", ev)
    _stay_quality(ctx)
    if episode in (EpisodeStatus.WAITLIST, EpisodeStatus.ACTIVE):
        # a missed, cancelled or moved appointment or a consent change is no contact with the patient
        contacts = [ev for ev in ctx.history if ev.kind not in _NO_CONTACT] or ctx.history
        ctx.last_contact = contacts[-1]
        idle = (ctx.today - contacts[-1].occurred_on).days
        if idle > ctx.rules.passive_after_days:
            ctx.findings.append(QualityFinding("passive-pathway", f"no registered contact for {idle} days",
                                               contacts[-1].event_id, ctx.today))


def _stay_quality(ctx: _Context) -> None:
    """The notices of an inpatient stay the regulation on discharge-ready patients asks for, as
    registered: the admission registered late (the municipality heard of it late), a patient ready for
    discharge with no admission before it, a discharge with no discharge-ready notice before it."""
    notice = timedelta(hours=ctx.rules.admission_notice_hours)
    before: dict[str, set[EventKind]] = {}
    for ev in ctx.history:  # in the order things happened
        if ev.kind not in _STAY_KINDS or not ev.stay_id:
            continue
        seen = before.setdefault(ev.stay_id, set())
        if ev.kind is EventKind.ADMISSION_STARTED and ev.recorded_at - ev.occurred_at > notice:
            hours = int((ev.recorded_at - ev.occurred_at).total_seconds() // 3600)
            ctx.find("late-admission-notice", f"admission registered {hours} hours after it began "
                     f"(the municipality is to hear of it within {ctx.rules.admission_notice_hours})", ev)
        elif ev.kind is EventKind.DISCHARGE_READY and EventKind.ADMISSION_STARTED not in seen:
            ctx.find("discharge-ready-without-admission", "ready for discharge, with no admission registered before",
                     ev)
        elif ev.kind is EventKind.DISCHARGED and EventKind.DISCHARGE_READY not in seen:
            ctx.find("discharge-without-discharge-ready", "discharged, with no discharge-ready notice before", ev)
        seen.add(ev.kind)


_STAY_KINDS = frozenset({EventKind.ADMISSION_STARTED, EventKind.DISCHARGE_READY, EventKind.DISCHARGED})


def _clock_basis(ctx: _Context, events: tuple[PathwayEvent, ...], today: date, now: datetime) -> ClockBasis:
    """What `living.advance` needs to move this status to a later clock without the history."""
    contact = ctx.last_contact
    return ClockBasis(
        future_on=min((ev.occurred_on for ev in events if ev.occurred_on > today), default=None),
        recorded_after=min((ev.recorded_at for ev in events if ev.recorded_at > now), default=None),
        overdue_causes=dict(sorted(ctx.overdue_causes.items())),
        last_contact=LastContact(contact.occurred_on, contact.event_id) if contact else None,
        passive_after_days=ctx.rules.passive_after_days,
    )


_NO_CONTACT = frozenset({EventKind.APPOINTMENT_CHANGED, EventKind.CONSENT_CHANGED})


def _is_start(ev: PathwayEvent, ptype: str) -> bool:
    try:
        return bool(ev.code) and code_list().parse(ev.code or "", ptype).event == "start"
    except UnknownCode:
        return False


def _no_rules(ptype: str) -> RuleSet:
    return RuleSet(ptype, "none", date.min, "referral-assessed", {}, frozenset(), frozenset(), frozenset({"U"}),
                   frozenset(), frozenset(), 7, 14, 90)
