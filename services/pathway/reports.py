"""Reports for the people who use forlop: the worklist, the municipal overview, indicators, quality.

Read models over the stored statuses (table ``pathways``: one row per pathway, its
``status`` the ``PathwayStatus.to_dict()`` and ``patient`` the latest facts). The
computations are pure functions of a row (a mapping of the table's columns) and the
local date "today", so they are tested without a database; the query functions
around them only select and stream rows.

- Worklist ("arbeidsliste") of a unit's pathway coordinator (forløpskoordinator): open
  pathways, most urgent first.
- Municipal overview: the pathways of a municipality's residents who consented to
  involving the municipality, with their next and last evaluation (evalueringspunkt).
- Indicators: deadlines met per milestone, against the national and the adjusted
  deadline, with the national targets of DOMAIN.md section 6 beside them.
- Registration quality (registreringskvalitet): the engine's findings and missing
  milestones per unit and month; the findings include the notices of inpatient stays
  (an admission registered late, a discharge-ready notice with no admission before it, a
  discharge with no discharge-ready notice).

Deadline statuses of open milestones are recomputed against today from the stored
deadlines, so a report never shows a stale "pending" for a deadline that has passed
while the scanner has not yet re-derived the pathway.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Select, bindparam, literal, select

from forlop.clock import local_date
from forlop.codes import code_list
from forlop.storage import Store, schema

OPEN_EPISODES = ("waitlist", "active")
EPISODE_STATUSES = ("waitlist", "active", "finished", "entered-in-error")
GROUP_BY = ("pathwayType", "unit", "month")
# Task.code values the indicators count (start and end have no deadline of their own).
INDICATOR_MILESTONES = ("first-attendance", "decision-basic", "decision-extended", "treatment-start", "evaluation")
STREAM_CHUNK = 2000
EXAMPLES_PER_KIND = 5

# National targets (the health authorities' 2022 commissioning letter, DOMAIN.md section 6).
# Average waiting days from start to first attendance must stay below these, per pathway type ...
WAITING_DAYS_TARGET = {"D11": 40, "D12": 35, "D01": 30}
# ... and at least this share of outpatient pathways in PHV and TSB must have an evaluation of treatment.
EVALUATION_SHARE_TARGET = {"D11": 0.8, "D01": 0.8}

_OPEN = "requested"
_DONE = "completed"
_CANCELLED = "cancelled"


# --- pure: one pathway's row ----------------------------------------------------------------------
def due(m: Mapping[str, Any]) -> str | None:
    """The date (ISO) a milestone is measured against: its adjusted deadline, else the national one."""
    return m.get("adjusted_deadline") or m.get("deadline")


def days_left(m: Mapping[str, Any], today: date) -> int | None:
    """Days from today to the milestone's adjusted deadline; negative when overdue."""
    d = due(m)
    return (date.fromisoformat(d) - today).days if d else None


def live_deadline_status(m: Mapping[str, Any], today: date, due_soon_days: int) -> str | None:
    """The deadline status of a milestone as of today (open ones recomputed from their dates)."""
    if m.get("state") != _OPEN:
        return m.get("deadline_status")
    left = days_left(m, today)
    if left is None:
        return None
    if left < 0:
        return "overdue"
    return "due-soon" if left <= due_soon_days else "pending"


def horizon(status: Mapping[str, Any], override: int | None = None) -> int:
    """The "due soon" horizon: FORLOP_DUE_SOON_DAYS when set, else the pathway's rule set."""
    if override is not None:
        return override
    return int((status.get("extra") or {}).get("due_soon_days", 7))


def next_milestone(status: Mapping[str, Any], today: date, due_soon_days: int | None = None) -> dict[str, Any] | None:
    """The open milestone the coordinator acts on next.

    The open milestone with the earliest adjusted deadline (as ``PathwayStatus.next_open_milestone``);
    when no open milestone has a deadline, the first open one (e.g. a first attendance without a
    legal deadline), shown without one. None when nothing is open.
    """
    milestones = status.get("milestones") or []
    timed = [m for m in milestones if m.get("state") == _OPEN and m.get("deadline")]
    if timed:
        m = min(timed, key=lambda m: due(m) or "")
    else:
        m = next((m for m in milestones if m.get("state") == _OPEN and m.get("code") != "end"), None)
        if m is None:
            return None
    return {
        "key": m["key"],
        "code": m["code"],
        "deadline": m.get("deadline"),
        "adjustedDeadline": m.get("adjusted_deadline"),
        "deadlineStatus": live_deadline_status(m, today, horizon(status, due_soon_days)),
        "daysLeft": days_left(m, today),
        "delayCause": m.get("delay_cause"),
    }


def _pathway_columns(row: Mapping[str, Any], status: Mapping[str, Any]) -> dict[str, Any]:
    """What every list shows first about a pathway (the patient in full: the API is access-controlled)."""
    return {
        "pathwayId": row["pathway_id"],
        "pathwayKey": row["pathway_key"],
        "patient": {"nationalId": row["national_id"], "municipality": row["municipality"]},
        "pathwayType": row["pathway_type"],
        "phase": status.get("phase"),
        "episodeStatus": row["episode_status"],
    }


def worklist_row(row: Mapping[str, Any], today: date, due_soon_days: int | None = None) -> dict[str, Any]:
    """One line of a unit's worklist, from a ``pathways`` row."""
    status = row["status"]
    facts = row["patient"] or {}
    last = facts.get("lastEvent") or {}
    return {
        **_pathway_columns(row, status),
        "startDate": status.get("start_date"),
        "nextMilestone": next_milestone(status, today, due_soon_days),
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


def municipal_row(row: Mapping[str, Any], today: date, due_soon_days: int | None = None) -> dict[str, Any]:
    """One line of the municipal coordinator's overview, from a ``pathways`` row."""
    status = row["status"]
    facts = row["patient"] or {}
    evaluations = [m for m in status.get("milestones") or [] if m.get("code") == "evaluation"]
    open_eval = min((m for m in evaluations if m.get("state") == _OPEN), key=lambda m: due(m) or "", default=None)
    done = [m["completed_on"] for m in evaluations if m.get("state") == _DONE and m.get("completed_on")]
    unit = facts.get("unit") or {}
    return {
        **_pathway_columns(row, status),
        "unit": {"herId": row["unit_her_id"], "name": unit.get("name")},
        "gp": facts.get("gp"),
        "startDate": status.get("start_date"),
        "endDate": status.get("end_date"),
        "nextEvaluationDate": due(open_eval) if open_eval else None,
        "nextEvaluationStatus": (
            live_deadline_status(open_eval, today, horizon(status, due_soon_days)) if open_eval else None
        ),
        "lastEvaluationDate": max(done, default=None),
    }


def municipal_order(item: Mapping[str, Any]) -> tuple:
    """Open pathways first, the next evaluation soonest first; then the rest by pathway."""
    closed = item["episodeStatus"] not in OPEN_EPISODES
    return (closed, item["nextEvaluationDate"] is None, item["nextEvaluationDate"] or "", item["pathwayKey"])


# --- pure: indicators -------------------------------------------------------------------------------
def _in_range(day: str | None, date_from: str | None, date_to: str | None) -> bool:
    """ISO dates compare as strings: no parsing in the hot loop."""
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
    """Accumulates the indicators one pathway at a time (so 200,000 pathways stream through).

    - per group and milestone code, over milestones completed in [from, to] that had a deadline:
      done, met (on time against the national deadline), met-adjusted, late, the shares on time
      against the national and the adjusted deadline, and the median days from anchor to completion;
    - per group and milestone code, open milestones overdue as of today (a snapshot, not limited
      to [from, to]; with ``groupBy=month`` they count in the month of today);
    - national targets per group and pathway type: average waiting days from start to first
      attendance (first attendances completed in [from, to]) and, for PHV and TSB outpatient
      pathways in treatment whose first evaluation fell due in [from, to] (before today), the
      share that had it; a pathway ended before its first evaluation fell due is not counted.
    """

    group_by: str
    date_from: date | None
    date_to: date | None
    today: date
    cells: dict[tuple[str, str], _Cell] = field(default_factory=lambda: defaultdict(_Cell))
    waiting: dict[tuple[str, str], _Waiting] = field(default_factory=lambda: defaultdict(_Waiting))
    evaluated: dict[tuple[str, str], _Evaluated] = field(default_factory=lambda: defaultdict(_Evaluated))
    pathways: int = 0

    def __post_init__(self) -> None:
        if self.group_by not in GROUP_BY:
            raise ValueError(f"groupBy must be one of {', '.join(GROUP_BY)}")
        self._from = self.date_from.isoformat() if self.date_from else None
        self._to = self.date_to.isoformat() if self.date_to else None
        self._today = self.today.isoformat()

    def _group(self, ptype: str, unit: str, month: str) -> str:
        if self.group_by == "pathwayType":
            return ptype
        return unit if self.group_by == "unit" else month

    def add(self, status: Mapping[str, Any], unit: str) -> None:
        if status.get("episode_status") == "entered-in-error":
            return
        self.pathways += 1
        ptype = status.get("pathway_type") or ""
        start_on: str | None = None
        for m in status.get("milestones") or ():
            code, state = m.get("code"), m.get("state")
            if code == "start" and state == _DONE:
                start_on = m.get("completed_on")
            if code not in INDICATOR_MILESTONES:
                continue
            if state == _DONE:
                done_on = m.get("completed_on")
                if done_on is None or not _in_range(done_on, self._from, self._to):
                    continue
                if code == "first-attendance":
                    begin = start_on or status.get("start_date")
                    if begin and ptype in WAITING_DAYS_TARGET:
                        w = self.waiting[(self._group(ptype, unit, done_on[:7]), ptype)]
                        w.pathways += 1
                        w.days += (date.fromisoformat(done_on) - date.fromisoformat(begin)).days
                if not m.get("deadline"):
                    continue
                cell = self.cells[(self._group(ptype, unit, done_on[:7]), code)]
                cell.done += 1
                ds = m.get("deadline_status")
                if ds == "met":
                    cell.met += 1
                elif ds == "met-adjusted":
                    cell.met_adjusted += 1
                else:
                    cell.late += 1
                if m.get("anchor_date"):
                    cell.days[(date.fromisoformat(done_on) - date.fromisoformat(m["anchor_date"])).days] += 1
            elif state == _OPEN:
                d = due(m)
                if d is not None and d < self._today:
                    self.cells[(self._group(ptype, unit, self._today[:7]), code)].overdue += 1
        self._evaluation_target(status, ptype, unit)

    def _evaluation_target(self, status: Mapping[str, Any], ptype: str, unit: str) -> None:
        if ptype not in EVALUATION_SHARE_TARGET or (status.get("extra") or {}).get("setting") != "outpatient":
            return
        first = next((m for m in status.get("milestones") or () if m.get("key") == "evaluation-1"), None)
        if first is None or not first.get("deadline"):
            return
        deadline = first["deadline"]
        if deadline >= self._today or not _in_range(deadline, self._from, self._to):
            return
        if first.get("state") == _CANCELLED and (status.get("end_date") or "") <= deadline:
            return  # the pathway ended before its first evaluation fell due
        e = self.evaluated[(self._group(ptype, unit, deadline[:7]), ptype)]
        e.eligible += 1
        e.evaluated += first.get("state") == _DONE

    def rows(self) -> list[dict[str, Any]]:
        order = {code: i for i, code in enumerate(INDICATOR_MILESTONES)}
        out = []
        for (group, code), c in sorted(self.cells.items(), key=lambda kv: (kv[0][0], order[kv[0][1]])):
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

    def targets(self) -> list[dict[str, Any]]:
        types = code_list().pathway_types
        out = []
        for (group, ptype), w in sorted(self.waiting.items()):
            average = round(w.days / w.pathways, 1)
            out.append({
                "group": group,
                "pathwayType": ptype,
                "short": types.get(ptype, {}).get("short"),
                "target": "average-waiting-days",
                "description": "average days from start to first attendance",
                "threshold": WAITING_DAYS_TARGET[ptype],
                "comparison": "below",
                "value": average,
                "count": w.pathways,
                "met": average < WAITING_DAYS_TARGET[ptype],
            })
        for (group, ptype), e in sorted(self.evaluated.items()):
            share = _share(e.evaluated, e.eligible)
            out.append({
                "group": group,
                "pathwayType": ptype,
                "short": types.get(ptype, {}).get("short"),
                "target": "evaluation-share",
                "description": "share of outpatient pathways in treatment evaluated by their first evaluation point",
                "threshold": EVALUATION_SHARE_TARGET[ptype],
                "comparison": "at-least",
                "value": share,
                "count": e.eligible,
                "evaluated": e.evaluated,
                "met": share is not None and share >= EVALUATION_SHARE_TARGET[ptype],
            })
        return sorted(out, key=lambda t: (t["group"], t["pathwayType"], t["target"]))


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
            "from": self.date_from.isoformat() if self.date_from else None,
            "to": self.date_to.isoformat() if self.date_to else None,
            "groupBy": self.group_by,
            "asOf": self.as_of.isoformat(),
            "pathways": self.pathways,
            "indicators": self.rows,
            "targets": self.targets,
        }


def indicators_of(
    rows: Iterable[tuple[Mapping[str, Any], str]],
    date_from: date | None,
    date_to: date | None,
    group_by: str,
    today: date,
) -> IndicatorReport:
    """Pure: the indicators over (status dict, unit HER-id) pairs."""
    tally = IndicatorTally(group_by, date_from, date_to, today)
    for status, unit in rows:
        tally.add(status, unit)
    return IndicatorReport(group_by, date_from, date_to, today, tally.pathways, tally.rows(), tally.targets())


# --- pure: registration quality ----------------------------------------------------------------------
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

    def __post_init__(self) -> None:
        self._from = self.date_from.isoformat() if self.date_from else None
        self._to = self.date_to.isoformat() if self.date_to else None

    def add(self, status: Mapping[str, Any], unit: str, unit_name: str | None = None) -> None:
        self.pathways += 1
        self.unit_names.setdefault(unit, unit_name)
        seen: set[str] = set()
        for f in status.get("findings") or ():
            on = f.get("on") or status.get("start_date")
            if _in_range(on, self._from, self._to):
                self._count(status, unit, on, f["kind"], "finding", seen)
        if status.get("episode_status") != "finished":
            return
        end_on = status.get("end_date")
        if not _in_range(end_on, self._from, self._to):
            return
        milestones = status.get("milestones") or ()
        done = {m.get("code") for m in milestones if m.get("state") == _DONE}
        if "first-attendance" not in done:
            self._count(status, unit, end_on, "missing-first-attendance", "missing-milestone", seen)
        treated = any(m.get("code") == "evaluation" for m in milestones)  # a treatment decision opens them
        if treated and "evaluation" not in done:
            self._count(status, unit, end_on, "missing-evaluation", "missing-milestone", seen)

    def _count(self, status: Mapping[str, Any], unit: str, on: str | None, kind: str, category: str,
               seen: set[str]) -> None:
        self.counts[(unit, on[:7] if on else None, kind)] += 1
        self.categories.setdefault(kind, category)
        examples = self.examples[kind]
        if kind not in seen and len(examples) < EXAMPLES_PER_KIND:
            examples.append({"pathwayId": status.get("pathway_id"), "pathwayKey": status.get("pathway_key")})
        seen.add(kind)

    def report(self, as_of: date) -> dict[str, Any]:
        totals: Counter[str] = Counter()
        for (_unit, _month, kind), n in self.counts.items():
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
            "from": self._from,
            "to": self._to,
            "asOf": as_of.isoformat(),
            "pathways": self.pathways,
            "kinds": kinds,
            "byUnitMonth": rows,
        }


# --- queries: thin, streaming ---------------------------------------------------------------------
def _stream(conn: Connection, stmt: Select, params: dict[str, Any] | None = None) -> Iterator[Any]:
    """Rows in chunks (server-side cursor on PostgreSQL): memory stays flat over 200,000 pathways."""
    result = conn.execution_options(stream_results=True, yield_per=STREAM_CHUNK).execute(stmt, params)
    try:
        yield from result
    finally:
        result.close()


_ROW_COLUMNS = (
    "pathway_key", "pathway_id", "pathway_type", "national_id", "municipality", "unit_her_id",
    "episode_status", "status", "patient",
)


def _row_select() -> Select:
    p = schema.pathways
    return select(*(p.c[name] for name in _ROW_COLUMNS))


@lru_cache(maxsize=1)
def _worklist_select() -> Select:
    """Built once (the unit a bound parameter): building the statement cost as much as an empty worklist."""
    p = schema.pathways
    return _row_select().where(
        p.c.unit_her_id == bindparam("unit", type_=p.c.unit_her_id.type),
        p.c.episode_status.in_([literal(s, p.c.episode_status.type) for s in OPEN_EPISODES]),
    )


def worklist(
    conn: Connection, unit: str, now: datetime, limit: int | None = None, due_soon_days: int | None = None
) -> dict[str, Any]:
    """A unit's open pathways (waitlist, active), most urgent first."""
    today = local_date(now)
    # One unit's open pathways, not a whole table: read at once, without the server-side cursor of
    # _stream (on PostgreSQL its DECLARE, FETCH and CLOSE doubled the time of a small worklist).
    rows = conn.execute(_worklist_select(), {"unit": unit})
    items = (worklist_row(row._mapping, today, due_soon_days) for row in rows)
    counted = _Counting(items)
    ordered = order_worklist(counted, limit)
    return {"unit": unit, "asOf": today.isoformat(), "total": counted.n, "pathways": ordered}


def municipal_overview(
    conn: Connection,
    municipality: str,
    now: datetime,
    episode_statuses: Iterable[str] | None = None,
    limit: int | None = None,
    due_soon_days: int | None = None,
) -> dict[str, Any]:
    """Pathways of the municipality's residents who consented to involving the municipality."""
    p = schema.pathways
    today = local_date(now)
    statuses = tuple(episode_statuses) if episode_statuses else ("waitlist", "active", "finished")
    stmt = _row_select().where(
        p.c.municipality == municipality,
        p.c.consent_municipality.is_(True),
        p.c.episode_status.in_(statuses),
    )
    items = sorted((municipal_row(row._mapping, today, due_soon_days) for row in _stream(conn, stmt)),
                   key=municipal_order)
    return {
        "municipality": municipality,
        "asOf": today.isoformat(),
        "total": len(items),
        "pathways": items if limit is None else items[:limit],
    }


def indicators(
    conn: Connection, date_from: date | None, date_to: date | None, group_by: str, now: datetime
) -> IndicatorReport:
    p = schema.pathways
    stmt = select(p.c.unit_her_id, p.c.status).where(p.c.episode_status != "entered-in-error")
    rows = ((row.status, row.unit_her_id) for row in _stream(conn, stmt))
    return indicators_of(rows, date_from, date_to, group_by, local_date(now))


def compute_indicators(store: Store, now: datetime, date_from: date | str | None, date_to: date | str | None,
                       group_by: str = "pathwayType") -> IndicatorReport:
    """The indicators over every stored pathway, as of `now` (what the bench times)."""
    with store.read() as conn:
        return indicators(conn, _as_date(date_from), _as_date(date_to), group_by, now)


def quality(conn: Connection, date_from: date | None, date_to: date | None, now: datetime) -> dict[str, Any]:
    p = schema.pathways
    stmt = select(p.c.unit_her_id, p.c.status, p.c.patient).order_by(p.c.pathway_key)
    tally = QualityTally(date_from, date_to)
    for row in _stream(conn, stmt):
        facts = row.patient or {}
        tally.add(row.status, row.unit_her_id, (facts.get("unit") or {}).get("name"))
    return tally.report(local_date(now))


def compute_quality(store: Store, now: datetime, date_from: date | str | None = None,
                    date_to: date | str | None = None) -> dict[str, Any]:
    with store.read() as conn:
        return quality(conn, _as_date(date_from), _as_date(date_to), now)


def _as_date(value: date | str | None) -> date | None:
    if value is None or isinstance(value, date):
        return value
    return date.fromisoformat(value)


class _Counting:
    """Counts what passes through an iterator (the worklist's total before the limit)."""

    def __init__(self, items: Iterable[Any]) -> None:
        self._items = iter(items)
        self.n = 0

    def __iter__(self) -> Iterator[Any]:
        for item in self._items:
            self.n += 1
            yield item


def national_ids(conn: Connection, pathway_keys: Iterable[str]) -> list[str]:
    """The patients of these pathways (the audit trail names who a message or a list was about)."""
    keys = sorted(set(pathway_keys))
    p = schema.pathways
    found: list[str] = []
    for at in range(0, len(keys), 500):
        found += conn.execute(select(p.c.national_id).where(p.c.pathway_key.in_(keys[at:at + 500]))).scalars()
    return found
