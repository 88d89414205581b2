"""The coordinators' JSON API: worklist, municipal overview, indicators, registration quality.

Thin: each route checks its parameters (a bad one is a 400 OperationOutcome naming it),
reads in one connection through the report queries (``services.pathway.adapters.reports``). The
blueprint is registered by the application (``app.bootstrap``) under the read scope.

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
from flask import Blueprint, Response, current_app, g, request

from forlop import audit
from forlop.clock import Clock
from forlop.fhir.ids import episode_id
from forlop.fhir.outcome import error
from forlop.http import BadParameter, one_value, whole_number
from forlop.storage import Store
from forlop.tenants import DEVELOPMENT, HOSPITAL, MUNICIPALITY, NATIONAL, Reach, Tenant
from services.ingest.public import bounds
from services.pathway.adapters import reports
from services.pathway.domain.reports import (
    EPISODE_STATUSES,
    GROUP_BY,
    suppressed_indicators,
    suppressed_quality,
)

MAX_LIMIT = 5000
KOMMUNENUMMER = re.compile(r"[0-9]{4}")  # ASCII: \d would take other scripts' digits
HER_ID = re.compile(r"[0-9]{1,12}")
# No event forlop holds lies outside the dates a vendor record may carry (its schema's x-forlop-bounds).
EARLIEST, LATEST = bounds("dips").earliest_date, bounds("dips").latest_date


def pathway_bp(default_store: Store, clock: Clock, due_soon_days: int | None = None) -> Blueprint:
    """The routes, reading `default_store` unless the app publishes the one its requests use
    (FORLOP_STORE), as of `clock`, with the due-soon setting (FORLOP_DUE_SOON_DAYS)."""
    bp = Blueprint("pathway_reports", __name__)

    def store() -> Store:
        return current_app.config.get("FORLOP_STORE") or default_store

    @bp.errorhandler(BadParameter)
    def bad_parameter(exc: BadParameter) -> Response:
        return error(400, exc.code, str(exc), exc.name)

    @bp.get("/worklist")
    def get_worklist() -> Response:
        if (refused := _refused("/worklist", HOSPITAL, DEVELOPMENT)) is not None:
            return refused
        unit = (one_value(request.args, "unit") or "").strip()
        if not unit:
            raise BadParameter("unit", "the query parameter 'unit' (the unit's HER-id) is required", "required")
        if not HER_ID.fullmatch(unit):
            raise BadParameter("unit", f"unit={unit[:40]!r} is not a HER-id (1 to 12 digits)")
        tenant: Tenant = g.tenant
        if tenant.kind == HOSPITAL and unit not in tenant.units:
            return error(403, "forbidden", f"unit {unit} is not one of {tenant.describe()}'s units")
        limit = _limit()
        with store().read() as conn:
            body = reports.worklist(conn, unit, clock(), limit, due_soon_days)
        _audited(body)
        return _json(body)

    @bp.get("/municipalities/<kommunenummer>/pathways")
    def get_municipal_overview(kommunenummer: str) -> Response:
        if (refused := _refused("/municipalities", MUNICIPALITY, DEVELOPMENT)) is not None:
            return refused
        if not KOMMUNENUMMER.fullmatch(kommunenummer):
            raise BadParameter("kommunenummer", f"{kommunenummer[:40]!r} is not a kommunenummer (4 digits)")
        tenant: Tenant = g.tenant
        if tenant.kind == MUNICIPALITY and kommunenummer != tenant.municipality:
            return error(403, "forbidden", f"{tenant.describe()} reads its own residents only "
                         f"(/municipalities/{tenant.municipality}/pathways), not kommune {kommunenummer}")
        statuses = None
        if raw := one_value(request.args, "episodeStatus"):
            statuses = [s for s in raw.split(",") if s]
            unknown = [s for s in statuses if s not in EPISODE_STATUSES]
            if unknown:
                raise BadParameter(
                    "episodeStatus",
                    f"unknown episode status {', '.join(unknown)}; use {', '.join(EPISODE_STATUSES)}",
                )
        limit = _limit()
        with store().read() as conn:
            body = reports.municipal_overview(conn, kommunenummer, clock(), statuses, limit, due_soon_days)
        _audited(body)
        return _json(body)

    @bp.get("/indicators")
    def get_indicators() -> Response:
        if (refused := _refused("/indicators", NATIONAL, HOSPITAL, DEVELOPMENT)) is not None:
            return refused
        date_from, date_to = _period()
        group_by = one_value(request.args, "groupBy") or "pathwayType"
        if group_by not in GROUP_BY:
            raise BadParameter("groupBy", f"groupBy={group_by[:40]!r}: use one of {', '.join(GROUP_BY)}")
        tenant: Tenant = g.tenant
        with store().read() as conn:
            report = reports.indicators(conn, date_from, date_to, group_by, clock(), _report_reach(tenant))
        body = report.to_dict()
        return _json(suppressed_indicators(body) if tenant.kind == NATIONAL else body)

    @bp.get("/quality")
    def get_quality() -> Response:
        if (refused := _refused("/quality", NATIONAL, HOSPITAL, DEVELOPMENT)) is not None:
            return refused
        date_from, date_to = _period()
        tenant: Tenant = g.tenant
        with store().read() as conn:
            body = reports.quality(conn, date_from, date_to, clock(), _report_reach(tenant))
        return _json(suppressed_quality(body) if tenant.kind == NATIONAL else body)

    return bp


def _refused(route: str, *kinds: str) -> Response | None:
    """403 unless the request's tenant (set by the app after checking the token) is of `kinds`."""
    tenant: Tenant | None = g.get("tenant")
    if tenant is None:
        return error(403, "forbidden", "the token's organisation is not known")
    if tenant.kind not in kinds:
        return error(403, "forbidden", f"{tenant.describe()} may not read {route}")
    return None


def _report_reach(tenant: Tenant) -> Reach | None:
    """National statistics and development: every pathway; a hospital: its own units."""
    return tenant.reach if tenant.kind == HOSPITAL else None


def _audited(body: dict[str, Any]) -> None:
    """Tell the audit trail which patients and pathways the answer shows."""
    shown = body["pathways"]
    audit.touched(national_ids=[p["patient"]["nationalId"] for p in shown],
                  resources=[f"EpisodeOfCare/{episode_id(p['pathwayKey'])}" for p in shown])


def _period() -> tuple[date | None, date | None]:
    date_from, date_to = _date("from"), _date("to")
    if date_from and date_to and date_from > date_to:
        raise BadParameter("from", f"from={date_from} is after to={date_to}")
    return date_from, date_to


def _date(name: str) -> date | None:
    raw = one_value(request.args, name)
    if raw is None or raw == "":
        return None
    try:
        if re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", raw) and EARLIEST <= (day := date.fromisoformat(raw)) <= LATEST:
            return day
    except ValueError:
        pass
    raise BadParameter(name, f"{name}={raw[:40]!r} is not a date (YYYY-MM-DD) from {EARLIEST} to {LATEST}")


def _limit() -> int | None:
    raw = one_value(request.args, "limit")
    if raw is None:
        return None
    return whole_number("limit", raw, 1, MAX_LIMIT)


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS), status=status, mimetype="application/json")
