"""The reports' queries: select and stream ``pathways`` rows, read each into a `ReportRow` (its status
typed: the dict form stops here) and hand them to the pure tallies of `services.pathway.domain.reports`."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from datetime import date, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Select, bindparam, literal, select

from forlop.clock import local_date
from forlop.status import PathwayStatus
from forlop.storage import Store, schema
from forlop.tenants import Reach
from services.pathway.adapters.reach import pathway_filter
from services.pathway.domain.reports import (
    OPEN_EPISODES,
    IndicatorReport,
    QualityTally,
    ReportRow,
    indicators_of,
    municipal_order,
    municipal_row,
    order_worklist,
    worklist_row,
)

STREAM_CHUNK = 2000


def _stream(conn: Connection, stmt: Select, params: dict[str, Any] | None = None) -> Iterator[Any]:
    """Rows in chunks (server-side cursor on PostgreSQL): memory stays flat over the whole table."""
    result = conn.execution_options(stream_results=True, yield_per=STREAM_CHUNK).execute(stmt, params)
    try:
        yield from result
    finally:
        result.close()


_ROW_COLUMNS = (
    "pathway_key", "pathway_id", "pathway_type", "national_id", "municipality", "unit_her_id",
    "episode_status", "status", "patient",
)


def report_row(row: Mapping[str, Any]) -> ReportRow:
    """A ``pathways`` row (its columns by name) as the reports read it."""
    return ReportRow(row["pathway_key"], row["pathway_id"], row["pathway_type"], row["national_id"],
                     row["municipality"], row["unit_her_id"], row["episode_status"],
                     PathwayStatus.from_dict(row["status"]), row["patient"] or {})


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
    # _stream (on PostgreSQL its DECLARE, FETCH and CLOSE made a small worklist slower).
    rows = conn.execute(_worklist_select(), {"unit": unit})
    items = (worklist_row(report_row(row._mapping), today, due_soon_days) for row in rows)
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
    items = sorted((municipal_row(report_row(row._mapping), today, due_soon_days) for row in _stream(conn, stmt)),
                   key=municipal_order)
    return {
        "municipality": municipality,
        "asOf": today.isoformat(),
        "total": len(items),
        "pathways": items if limit is None else items[:limit],
    }


def indicators(
    conn: Connection, date_from: date | None, date_to: date | None, group_by: str, now: datetime,
    reach: Reach | None = None,
) -> IndicatorReport:
    """Over every pathway, or those within `reach` (a hospital's units), restricted in the query."""
    p = schema.pathways
    stmt = select(p.c.unit_her_id, p.c.status).where(p.c.episode_status != "entered-in-error",
                                                     *(pathway_filter(reach) if reach else ()))
    rows = ((PathwayStatus.from_dict(row.status), row.unit_her_id) for row in _stream(conn, stmt))
    return indicators_of(rows, date_from, date_to, group_by, local_date(now))


def compute_indicators(store: Store, now: datetime, date_from: date | str | None, date_to: date | str | None,
                       group_by: str = "pathwayType") -> IndicatorReport:
    """The indicators over every stored pathway, as of `now` (what the bench times)."""
    with store.read() as conn:
        return indicators(conn, _as_date(date_from), _as_date(date_to), group_by, now)


def quality(conn: Connection, date_from: date | None, date_to: date | None, now: datetime,
            reach: Reach | None = None) -> dict[str, Any]:
    p = schema.pathways
    stmt = select(p.c.unit_her_id, p.c.status, p.c.patient).order_by(p.c.pathway_key)
    if reach:
        stmt = stmt.where(*pathway_filter(reach))
    tally = QualityTally(date_from, date_to)
    for row in _stream(conn, stmt):
        facts = row.patient or {}
        tally.add(PathwayStatus.from_dict(row.status), row.unit_her_id, (facts.get("unit") or {}).get("name"))
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
