"""The coordinators' JSON API: worklist, municipal overview, indicators, registration quality.

Thin: each route checks its parameters (a bad one is a 400 OperationOutcome naming it),
reads in one connection and hands the rows to ``services.pathway.reports``. The
blueprint is registered by ``forlop.serve`` under the read scope.

- ``GET /worklist?unit=<HER-id>[&limit=N]``
- ``GET /municipalities/<kommunenummer>/pathways[?episodeStatus=waitlist,active,finished][&limit=N]``
- ``GET /indicators[?from=YYYY-MM-DD][&to=YYYY-MM-DD][&groupBy=pathwayType|unit|month]``
- ``GET /quality[?from=YYYY-MM-DD][&to=YYYY-MM-DD]``
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

import orjson
from flask import Blueprint, Response, request

from services.api.outcome import error
from services.pathway import reports

MAX_LIMIT = 5000
KOMMUNENUMMER = re.compile(r"^\d{4}$")


class BadParameter(ValueError):
    """A query or path parameter the route cannot use; becomes a 400 OperationOutcome naming it."""

    def __init__(self, name: str, message: str, code: str = "value") -> None:
        super().__init__(message)
        self.name = name
        self.code = code


def pathway_bp(runtime: Any) -> Blueprint:
    """The routes, bound to a runtime (its store, clock and due-soon setting)."""
    bp = Blueprint("pathway_reports", __name__)
    due_soon_days = runtime.settings.due_soon_days

    @bp.errorhandler(BadParameter)
    def bad_parameter(exc: BadParameter) -> Response:
        return error(400, exc.code, str(exc), exc.name)

    @bp.get("/worklist")
    def get_worklist() -> Response:
        unit = request.args.get("unit", "").strip()
        if not unit:
            raise BadParameter("unit", "the query parameter 'unit' (the unit's HER-id) is required", "required")
        limit = _limit()
        with runtime.store.read() as conn:
            body = reports.worklist(conn, unit, runtime.clock(), limit, due_soon_days)
        return _json(body)

    @bp.get("/municipalities/<kommunenummer>/pathways")
    def get_municipal_overview(kommunenummer: str) -> Response:
        if not KOMMUNENUMMER.match(kommunenummer):
            raise BadParameter("kommunenummer", f"{kommunenummer!r} is not a kommunenummer (4 digits)")
        statuses = None
        if raw := request.args.get("episodeStatus"):
            statuses = [s for s in raw.split(",") if s]
            unknown = [s for s in statuses if s not in reports.EPISODE_STATUSES]
            if unknown:
                raise BadParameter(
                    "episodeStatus",
                    f"unknown episode status {', '.join(unknown)}; use {', '.join(reports.EPISODE_STATUSES)}",
                )
        limit = _limit()
        with runtime.store.read() as conn:
            body = reports.municipal_overview(conn, kommunenummer, runtime.clock(), statuses, limit, due_soon_days)
        return _json(body)

    @bp.get("/indicators")
    def get_indicators() -> Response:
        date_from, date_to = _period()
        group_by = request.args.get("groupBy", "pathwayType")
        if group_by not in reports.GROUP_BY:
            raise BadParameter("groupBy", f"groupBy={group_by!r}: use one of {', '.join(reports.GROUP_BY)}")
        with runtime.store.read() as conn:
            report = reports.indicators(conn, date_from, date_to, group_by, runtime.clock())
        return _json(report.to_dict())

    @bp.get("/quality")
    def get_quality() -> Response:
        date_from, date_to = _period()
        with runtime.store.read() as conn:
            body = reports.quality(conn, date_from, date_to, runtime.clock())
        return _json(body)

    return bp


def _period() -> tuple[date | None, date | None]:
    date_from, date_to = _date("from"), _date("to")
    if date_from and date_to and date_from > date_to:
        raise BadParameter("from", f"from={date_from} is after to={date_to}")
    return date_from, date_to


def _date(name: str) -> date | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw):
        raise BadParameter(name, f"{name}={raw!r} is not a date (YYYY-MM-DD)")
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise BadParameter(name, f"{name}={raw!r} is not a date (YYYY-MM-DD)") from None


def _limit() -> int | None:
    raw = request.args.get("limit")
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise BadParameter("limit", f"limit={raw!r} must be a whole number from 1 to {MAX_LIMIT}")
    return int(raw)


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS), status=status, mimetype="application/json")
