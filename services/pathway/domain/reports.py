"""Reports for the people who use forlop, as pure tallies over stored pathways (no SQL here).

The queries (``services.pathway.adapters.reports``) read the table ``pathways`` and hand each row
over as a `ReportRow`: its status typed (`PathwayStatus`) and ``patient`` the latest facts. Every
computation here is a function of rows and the local date "today", tested without a database.

- Worklist ("arbeidsliste") of a unit's pathway coordinator (forløpskoordinator): open
  pathways, most urgent first.
- Municipal overview: the pathways of a municipality's residents who consented to
  involving the municipality, with their next and last evaluation (evalueringspunkt).
- Indicators: deadlines met per milestone, against the national and the adjusted
  deadline, with the national targets (``profiles/rules/national-targets.json``) beside them.
- Registration quality (registreringskvalitet): the engine's findings and missing
  milestones per unit and month; the findings include the notices of inpatient stays
  (an admission registered late, a discharge-ready notice with no admission before it, a
  discharge with no discharge-ready notice).

Deadline statuses of open milestones are recomputed against today from the stored deadlines
(`deadlines.current_deadline_status`), so a report never shows a stale "pending" for a deadline
that has passed while the scanner has not yet re-derived the pathway.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from forlop.codes import code_list
from forlop.status import (
    DeadlineStatus,
    EpisodeStatus,
    Milestone,
    MilestoneCode,
    MilestoneState,
    PathwayStatus,
)
from services.pathway.domain.deadlines import current_deadline_status
from services.pathway.domain.living import days_left
from services.pathway.domain.targets import Target, TargetSet, national_targets

OPEN_EPISODES = ("waitlist", "active")
EPISODE_STATUSES = ("waitlist", "active", "finished", "entered-in-error")
GROUP_BY = ("pathwayType", "unit", "month")
# Task.code values the indicators count (start and end have no deadline of their own).
INDICATOR_MILESTONES = ("first-attendance", "decision-basic", "decision-extended", "treatment-start", "evaluation")
EXAMPLES_PER_KIND = 5

_OPEN, _DONE, _CANCELLED = MilestoneState.OPEN, MilestoneState.DONE, MilestoneState.CANCELLED
_COUNTED = frozenset(MilestoneCode(c) for c in INDICATOR_MILESTONES)
_ORDER = {code: i for i, code in enumerate(INDICATOR_MILESTONES)}


@dataclass(frozen=True, slots=True)
class ReportRow:
    """A stored pathway as the lists show it: its columns, its status and the patient's latest facts."""

    pathway_key: str
    pathway_id: str
    pathway_type: str
    national_id: str
    municipality: str
    unit_her_id: str
    episode_status: str
    status: PathwayStatus
    patient: Mapping[str, Any]  # `patient_facts` as stored


def _iso(day: date | None) -> str | None:
    return day.isoformat() if day else None


def _value(code: Any) -> str | None:
    return code.value if code is not None else None


def _month(day: date) -> str:
    return f"{day.year:04d}-{day.month:02d}"


# --- one pathway's row ------------------------------------------------------------------------------
def horizon(status: PathwayStatus, override: int | None = None) -> int:
    """The "due soon" horizon: FORLOP_DUE_SOON_DAYS when set, else the pathway's rule set."""
    return override if override is not None else status.due_soon_days


def next_milestone(status: PathwayStatus, today: date, due_soon_days: int | None = None) -> dict[str, Any] | None:
    """The open milestone the coordinator acts on next.

    The open milestone with the earliest adjusted deadline (as ``PathwayStatus.next_open_milestone``);
    when no open milestone has a deadline, the first open one (e.g. a first attendance without a
    legal deadline), shown without one. None when nothing is open.
    """
    timed = [m for m in status.milestones if m.state is _OPEN and m.deadline]
    if timed:
        m = min(timed, key=lambda m: m.due or date.min)
    else:
        found = next((m for m in status.milestones if m.state is _OPEN and m.code is not MilestoneCode.END), None)
        if found is None:
            return None
        m = found
    return {
        "key": m.key,
        "code": m.code.value,
        "deadline": _iso(m.deadline),
        "adjustedDeadline": _iso(m.adjusted_deadline),
        "deadlineStatus": _value(current_deadline_status(m, today, horizon(status, due_soon_days))),
        "daysLeft": days_left(m, today),
        "delayCause": _value(m.delay_cause),
    }


def _pathway_columns(row: ReportRow) -> dict[str, Any]:
    """What every list shows first about a pathway (the patient in full: the API is access-controlled)."""
    return {
        "pathwayId": row.pathway_id,
        "pathwayKey": row.pathway_key,
        "patient": {"nationalId": row.national_id, "municipality": row.municipality},
        "pathwayType": row.pathway_type,
        "phase": row.status.phase,
        "episodeStatus": row.episode_status,
    }


def worklist_row(row: ReportRow, today: date, due_soon_days: int | None = None) -> dict[str, Any]:
    """One line of a unit's worklist."""
    last = row.patient.get("lastEvent") or {}
    return {
        **_pathway_columns(row),
        "startDate": _iso(row.status.start_date),
        "nextMilestone": next_milestone(row.status, today, due_soon_days),
        "lastEvent": {"kind": last.get("kind"), "code": last.get("code"), "date": last.get("on")} if last else None,
    }


def urgency(item: Mapping[str, Any]) -> tuple:
    """Sort key: overdue first (most days overdue first), then fewest days left, then no deadline.

    Among pathways without a deadline the longest waiting comes first.
    """
    nxt = item.get("nextMilestone") or {}
    left = nxt.get("daysLeft")
    return (left is None, left if left is not None else 0, item.get("startDate") or "9999", item["pathwayKey"])


def order_worklist(items: Iterable[dict[str, Any]], limit: int | None = None) -> list[dict[str, Any]]:
    if limit is None:
        return sorted(items, key=urgency)
    return heapq.nsmallest(limit, items, key=urgency)


def municipal_row(row: ReportRow, today: date, due_soon_days: int | None = None) -> dict[str, Any]:
    """One line of the municipal coordinator's overview."""
    status, facts = row.status, row.patient
    evaluations = [m for m in status.milestones if m.code is MilestoneCode.EVALUATION]
    open_eval = min((m for m in evaluations if m.state is _OPEN), key=lambda m: m.due or date.min, default=None)
    done = [m.completed_on for m in evaluations if m.state is _DONE and m.completed_on]
    unit = facts.get("unit") or {}
    return {
        **_pathway_columns(row),
        "unit": {"herId": row.unit_her_id, "name": unit.get("name")},
        "gp": facts.get("gp"),
        "startDate": _iso(status.start_date),
        "endDate": _iso(status.end_date),
        "nextEvaluationDate": _iso(open_eval.due) if open_eval else None,
        "nextEvaluationStatus": (
            _value(current_deadline_status(open_eval, today, horizon(status, due_soon_days))) if open_eval else None
        ),
        "lastEvaluationDate": _iso(max(done, default=None)),
    }


def municipal_order(item: Mapping[str, Any]) -> tuple:
    """Open pathways first, the next evaluation soonest first; then the rest by pathway."""
    closed = item["episodeStatus"] not in OPEN_EPISODES
    return (closed, item["nextEvaluationDate"] is None, item["nextEvaluationDate"] or "", item["pathwayKey"])


# --- indicators -------------------------------------------------------------------------------------
def _in_range(day: date | None, date_from: date | None, date_to: date | None) -> bool:
    if day is None:
        return date_from is None and date_to is None
    return (date_from is None or day >= date_from) and (date_to is None or day <= date_to)


def _median(hist: Counter[int]) -> float | int | None:
    """Median of a histogram of whole days (days -> how many), without expanding it."""
    n = sum(hist.values())
    if n == 0:
        return None
    ordered = sorted(hist.items())

    def nth(k: int) -> int:  # 0-based
        seen = 0
        for value, count in ordered:
            seen += count
            if k < seen:
                return value
        raise IndexError(k)

    if n % 2:
        return nth(n // 2)
    lo, hi = nth(n // 2 - 1), nth(n // 2)
    return (lo + hi) / 2 if (lo + hi) % 2 else (lo + hi) // 2


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


@dataclass
class _Cell:
    """One (group, milestone code) of the indicators."""

    done: int = 0
    met: int = 0
    met_adjusted: int = 0
    late: int = 0
    days: Counter[int] = field(default_factory=Counter)  # anchor -> completion, as a histogram
    overdue: int = 0


@dataclass
class _Waiting:
    pathways: int = 0
    days: int = 0


@dataclass
class _Evaluated:
    eligible: int = 0
    evaluated: int = 0


@dataclass
class IndicatorTally:
    """Accumulates the indicators one pathway at a time (so every stored pathway streams through).

    - per group and milestone code, over milestones completed in [from, to] that had a deadline:
      done, met (on time against the national deadline), met-adjusted, late, the shares on time
      against the national and the adjusted deadline, and the median days from anchor to completion;
    - per group and milestone code, open milestones overdue as of today (a snapshot, not limited
      to [from, to]; with ``groupBy=month`` they count in the month of today);
    - national targets per group and pathway type (`targets`, by default the version in force on the
      report's last day): average waiting days from start to first attendance (first attendances
      completed in [from, to]) and, for outpatient pathways in treatment whose first evaluation fell
      due in [from, to] (before today), the share that had it; a pathway ended before its first
      evaluation fell due is not counted.
    """

    group_by: str
    date_from: date | None
    date_to: date | None
    today: date
    targets: TargetSet | None = None
    cells: dict[tuple[str, str], _Cell] = field(default_factory=lambda: defaultdict(_Cell))
    waiting: dict[tuple[str, str], _Waiting] = field(default_factory=lambda: defaultdict(_Waiting))
    evaluated: dict[tuple[str, str], _Evaluated] = field(default_factory=lambda: defaultdict(_Evaluated))
    pathways: int = 0

    def __post_init__(self) -> None:
        if self.group_by not in GROUP_BY:
            raise ValueError(f"groupBy must be one of {', '.join(GROUP_BY)}")
        if self.targets is None:
            self.targets = national_targets().for_day(min(self.date_to or self.today, self.today))
        self._waiting_types = self.targets.waiting.thresholds
        self._evaluation_types = self.targets.evaluation.thresholds
        self._this_month = _month(self.today)

    def _group(self, ptype: str, unit: str, day: date | None) -> str:
        if self.group_by == "pathwayType":
            return ptype
        if self.group_by == "unit":
            return unit
        return _month(day) if day else self._this_month

    def add(self, status: PathwayStatus, unit: str) -> None:
        if status.episode_status is EpisodeStatus.ENTERED_IN_ERROR:
            return
        self.pathways += 1
        ptype = status.pathway_type or ""
        start_on: date | None = None
        for m in status.milestones:
            code, state = m.code, m.state
            if code is MilestoneCode.START and state is _DONE:
                start_on = m.completed_on
            if code not in _COUNTED:
                continue
            if state is _DONE:
                done_on = m.completed_on
                if done_on is None or not _in_range(done_on, self.date_from, self.date_to):
                    continue
                if code is MilestoneCode.FIRST_ATTENDANCE:
                    begin = start_on or status.start_date
                    if begin and ptype in self._waiting_types:
                        w = self.waiting[(self._group(ptype, unit, done_on), ptype)]
                        w.pathways += 1
                        w.days += (done_on - begin).days
                if not m.deadline:
                    continue
                self._count_done(m, done_on, self.cells[(self._group(ptype, unit, done_on), code.value)])
            elif state is _OPEN:
                due = m.due
                if due is not None and due < self.today:
                    self.cells[(self._group(ptype, unit, self.today), code.value)].overdue += 1
        self._evaluation_target(status, ptype, unit)

    @staticmethod
    def _count_done(m: Milestone, done_on: date, cell: _Cell) -> None:
        cell.done += 1
        if m.deadline_status is DeadlineStatus.MET:
            cell.met += 1
        elif m.deadline_status is DeadlineStatus.MET_ADJUSTED:
            cell.met_adjusted += 1
        else:
            cell.late += 1
        if m.anchor_date:
            cell.days[(done_on - m.anchor_date).days] += 1

    def _evaluation_target(self, status: PathwayStatus, ptype: str, unit: str) -> None:
        if ptype not in self._evaluation_types or status.extra.get("setting") != "outpatient":
            return
        first = next((m for m in status.milestones if m.key == "evaluation-1"), None)
        if first is None or not first.deadline:
            return
        deadline = first.deadline
        if deadline >= self.today or not _in_range(deadline, self.date_from, self.date_to):
            return
        if first.state is _CANCELLED and (status.end_date is None or status.end_date <= deadline):
            return  # the pathway ended before its first evaluation fell due
        e = self.evaluated[(self._group(ptype, unit, deadline), ptype)]
        e.eligible += 1
        e.evaluated += first.state is _DONE

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for (group, code), c in sorted(self.cells.items(), key=lambda kv: (kv[0][0], _ORDER[kv[0][1]])):
            out.append({
                "group": group,
                "milestone": code,
                "done": c.done,
                "met": c.met,
                "metAdjusted": c.met_adjusted,
                "late": c.late,
                "onTimeNational": _share(c.met, c.done),
                "onTimeAdjusted": _share(c.met + c.met_adjusted, c.done),
                "medianDays": _median(c.days),
                "openOverdue": c.overdue,
            })
        return out

    def target_rows(self) -> list[dict[str, Any]]:
        assert self.targets is not None
        waiting, evaluation = self.targets.waiting, self.targets.evaluation
        out = [_target_row(group, ptype, waiting, round(w.days / w.pathways, 1), w.pathways)
               for (group, ptype), w in sorted(self.waiting.items())]
        out += [_target_row(group, ptype, evaluation, _share(e.evaluated, e.eligible), e.eligible, e.evaluated)
                for (group, ptype), e in sorted(self.evaluated.items())]
        return sorted(out, key=lambda t: (t["group"], t["pathwayType"], t["target"]))


def _target_row(group: str, ptype: str, target: Target, value: float | None, count: int,
                evaluated: int | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "group": group,
        "pathwayType": ptype,
        "short": code_list().pathway_types.get(ptype, {}).get("short"),
        "target": target.name,
        "description": target.description,
        "threshold": target.thresholds[ptype],
        "comparison": target.comparison,
        "value": value,
        "count": count,
    }
    if evaluated is not None:
        row["evaluated"] = evaluated
    row["met"] = target.met(ptype, value)
    return row


@dataclass(frozen=True)
class IndicatorReport:
    """The indicators: ``rows`` per group and milestone code, ``targets`` beside them. len() = rows."""

    group_by: str
    date_from: date | None
    date_to: date | None
    as_of: date
    pathways: int
    rows: list[dict[str, Any]]
    targets: list[dict[str, Any]]

    def __len__(self) -> int:
        return len(self.rows)

    def to_dict(self) -> dict[str, Any]:
        return {
            "from": _iso(self.date_from),
            "to": _iso(self.date_to),
            "groupBy": self.group_by,
            "asOf": self.as_of.isoformat(),
            "pathways": self.pathways,
            "indicators": self.rows,
            "targets": self.targets,
        }


def indicators_of(
    rows: Iterable[tuple[PathwayStatus, str]],
    date_from: date | None,
    date_to: date | None,
    group_by: str,
    today: date,
) -> IndicatorReport:
    """The indicators over (status, unit HER-id) pairs."""
    tally = IndicatorTally(group_by, date_from, date_to, today)
    for status, unit in rows:
        tally.add(status, unit)
    return IndicatorReport(group_by, date_from, date_to, today, tally.pathways, tally.rows(), tally.target_rows())


# --- registration quality -----------------------------------------------------------------------------
@dataclass
class QualityTally:
    """Counts quality findings and missing milestones per unit, month and kind, with example pathways.

    A finding counts in the month of its date (``on``), or of the pathway's start when it has
    none (e.g. missing-start). Missing milestones are looked for in finished pathways and count
    in the month the pathway ended: ``missing-first-attendance`` (ended with no first
    attendance) and ``missing-evaluation`` (a treatment decision, but no evaluation).
    """

    date_from: date | None
    date_to: date | None
    counts: Counter[tuple[str, str | None, str]] = field(default_factory=Counter)  # (unit, month, kind)
    categories: dict[str, str] = field(default_factory=dict)
    examples: dict[str, list[dict[str, str]]] = field(default_factory=lambda: defaultdict(list))
    unit_names: dict[str, str | None] = field(default_factory=dict)
    pathways: int = 0

    def add(self, status: PathwayStatus, unit: str, unit_name: str | None = None) -> None:
        self.pathways += 1
        self.unit_names.setdefault(unit, unit_name)
        seen: set[str] = set()
        for f in status.findings:
            on = f.on or status.start_date
            if _in_range(on, self.date_from, self.date_to):
                self._count(status, unit, on, f.kind, "finding", seen)
        if status.episode_status is not EpisodeStatus.FINISHED:
            return
        end_on = status.end_date
        if not _in_range(end_on, self.date_from, self.date_to):
            return
        done = {m.code for m in status.milestones if m.state is _DONE}
        if MilestoneCode.FIRST_ATTENDANCE not in done:
            self._count(status, unit, end_on, "missing-first-attendance", "missing-milestone", seen)
        # a treatment decision opens the evaluations
        treated = any(m.code is MilestoneCode.EVALUATION for m in status.milestones)
        if treated and MilestoneCode.EVALUATION not in done:
            self._count(status, unit, end_on, "missing-evaluation", "missing-milestone", seen)

    def _count(self, status: PathwayStatus, unit: str, on: date | None, kind: str, category: str,
               seen: set[str]) -> None:
        self.counts[(unit, _month(on) if on else None, kind)] += 1
        self.categories.setdefault(kind, category)
        examples = self.examples[kind]
        if kind not in seen and len(examples) < EXAMPLES_PER_KIND:
            examples.append({"pathwayId": status.pathway_id, "pathwayKey": status.pathway_key})
        seen.add(kind)

    def report(self, as_of: date) -> dict[str, Any]:
        totals: Counter[str] = Counter()
        for (_unit, _mon, kind), n in self.counts.items():
            totals[kind] += n
        rows = [
            {
                "unit": unit,
                "unitName": self.unit_names.get(unit),
                "month": month,
                "kind": kind,
                "category": self.categories[kind],
                "count": n,
            }
            for (unit, month, kind), n in sorted(self.counts.items(), key=lambda kv: (kv[0][0], kv[0][1] or "",
                                                                                       kv[0][2]))
        ]
        kinds = [
            {"kind": kind, "category": self.categories[kind], "count": totals[kind], "examples": self.examples[kind]}
            for kind in sorted(totals, key=lambda k: (self.categories[k], -totals[k], k))
        ]
        return {
            "from": _iso(self.date_from),
            "to": _iso(self.date_to),
            "asOf": as_of.isoformat(),
            "pathways": self.pathways,
            "kinds": kinds,
            "byUnitMonth": rows,
        }


# --- pure: what national statistics may see -----------------------------------------------------------
SMALL_CELL = 5  # a count under this (but not 0) is suppressed, and every figure worked out from it


def _small(n: int | None) -> bool:
    return n is not None and 0 < n < SMALL_CELL


def suppressed_indicators(report: Mapping[str, Any]) -> dict[str, Any]:
    """The indicators for national statistics: aggregates only, small cells suppressed.

    In a row, a count of 1 to 4 becomes null; when `done` is that small, the shares, the median and
    the met/late split (figures of the same few pathways) go too. A target's value, count and
    verdict go when its count is that small. Each row or target touched says `"suppressed": true`.
    """
    out = dict(report)
    out["pathways"] = None if _small(report.get("pathways")) else report.get("pathways")
    rows = []
    for row in report.get("indicators", ()):
        row = dict(row)
        touched = False
        if _small(row.get("done")):
            for key in ("done", "met", "metAdjusted", "late", "onTimeNational", "onTimeAdjusted", "medianDays"):
                row[key] = None
            touched = True
        else:
            for key in ("met", "metAdjusted", "late"):
                if _small(row.get(key)):
                    row[key], touched = None, True
        if _small(row.get("openOverdue")):
            row["openOverdue"], touched = None, True
        if touched:
            row["suppressed"] = True
        rows.append(row)
    out["indicators"] = rows
    targets = []
    for target in report.get("targets", ()):
        target = dict(target)
        if _small(target.get("count")) or _small(target.get("evaluated")):
            for key in ("value", "count", "evaluated", "met"):
                if key in target:
                    target[key] = None
            target["suppressed"] = True
        targets.append(target)
    out["targets"] = targets
    return out


def suppressed_quality(report: Mapping[str, Any]) -> dict[str, Any]:
    """The registration quality for national statistics: counts of 1 to 4 null, no example pathways."""
    out = dict(report)
    out["pathways"] = None if _small(report.get("pathways")) else report.get("pathways")
    out["kinds"] = [{**{k: v for k, v in kind.items() if k != "examples"},
                     "count": None if _small(kind.get("count")) else kind.get("count")}
                    | ({"suppressed": True} if _small(kind.get("count")) else {})
                    for kind in report.get("kinds", ())]
    out["byUnitMonth"] = [dict(row, count=None, suppressed=True) if _small(row.get("count")) else dict(row)
                          for row in report.get("byUnitMonth", ())]
    return out
