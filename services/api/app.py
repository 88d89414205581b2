"""The HTTP entrypoint: event intake for EHR vendors, the FHIR read API, health and metrics.

Thin: each route checks the token, builds a call into a service function and
turns the answer (or the error) into FHIR JSON.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlencode

from flask import Blueprint, Flask, Response, g, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from forlop.auth import SCOPE_READ, SCOPE_WRITE_EVENTS, AuthError, TokenVerifier
from forlop.clock import Clock
from forlop.config import Settings
from forlop.logging import correlation_id
from forlop.storage import Store
from services.api.outcome import error, fhir_response, issue, operation_outcome
from services.ingest.normalise import BodyError, parse_body
from services.ingest.service import ConflictingDuplicates, InboundRecord, check_record, ingest
from services.pathway import fhir_store

log = logging.getLogger(__name__)

MAX_COUNT = 500
DEFAULT_COUNT = 50
SOURCES = ("dips", "esp")
CHAINED = {"patient:identifier": "patient.identifier", "patient.identifier": "patient.identifier"}
TOTAL_MODES = ("none", "estimate", "accurate")  # FHIR _total; only "accurate" counts every match
FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")  # a _cursor is the id of the last resource of the page before


@dataclass
class ApiDeps:
    settings: Settings
    store: Store
    clock: Clock
    verifier: TokenVerifier
    readiness: list[Callable[[], str | None]] = field(default_factory=list)  # each returns a problem or None
    blueprints: list[tuple[Blueprint, str]] = field(default_factory=list)  # (blueprint, scope)


def create_app(deps: ApiDeps) -> Flask:
    app = Flask("forlop")
    app.config["MAX_CONTENT_LENGTH"] = 32 * 1024 * 1024
    app.config["FORLOP_STORE"] = deps.store  # blueprints read the same store

    def require(scope: str) -> Response | None:
        try:
            g.principal = deps.verifier.require(request.headers.get("Authorization"), scope)
        except AuthError as exc:
            return error(exc.status, exc.code if exc.code != "expired" else "login", str(exc))
        return None

    @app.before_request
    def _correlation() -> None:
        correlation_id.set(request.headers.get("X-Correlation-Id"))

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify(status="alive")

    @app.get("/readyz")
    def readyz() -> Response:
        problems = [p for p in (check() for check in [_db_check(deps.store), *deps.readiness]) if p]
        if problems:
            return Response(
                json.dumps({"status": "not-ready", "problems": problems}),
                status=503,
                mimetype="application/json",
            )
        return jsonify(status="ready")

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(), mimetype=CONTENT_TYPE_LATEST)

    @app.post("/ingest/<source>")
    def post_events(source: str) -> Response:
        if (denied := require(SCOPE_WRITE_EVENTS)) is not None:
            return denied
        if source not in SOURCES:
            return error(404, "not-found", f"unknown event source {source!r}; use one of {', '.join(SOURCES)}")
        try:
            items = parse_body(request.content_type or "application/json", request.get_data())
        except BodyError as exc:
            return error(400, "structure", str(exc))
        if not items:
            return error(400, "required", "the request body holds no events")
        records = [InboundRecord(item, "http") for item in items]
        problems = []
        for i, record in enumerate(records):
            try:
                check_record(source, record)
            except Exception as exc:  # RejectedEvent: every problem of every event is reported
                for p in getattr(exc, "problems", []):
                    where = f"[{i}].{p.field}" if len(records) > 1 else p.field
                    problems.append(issue("error", "invalid", f"{where}: {p.message} (rule: {p.rule})", where))
        if problems:
            # All or nothing: the sender keeps the batch, fixes it and sends it again.
            return fhir_response(operation_outcome(problems), 422)
        try:
            with deps.store.transaction() as conn:
                result = ingest(conn, source, records, deps.clock(), deps.settings.topics, dead_letter=False)
                if result.conflicts:  # all or nothing, as a 422: the transaction rolls back
                    raise ConflictingDuplicates(result.conflicts)
        except ConflictingDuplicates as exc:
            return fhir_response(operation_outcome(
                issue("error", "conflict", f"event id {event_id} was accepted before with other content; "
                      "a change is a new event with an id of its own") for event_id in exc.event_ids), 409)
        return Response(
            json.dumps(
                {
                    "accepted": len(result.accepted),
                    "duplicates": result.duplicates,
                    "eventIds": [e.event_id for e in result.accepted],
                }
            ),
            status=202,
            mimetype="application/json",
        )

    @app.get("/fhir/metadata")
    def metadata() -> Response:
        from forlop.fhir.capability import capability_statement

        return fhir_response(capability_statement(request.host_url.rstrip("/") + "/fhir", _version()))

    @app.get("/fhir/<rtype>/<rid>")
    def read(rtype: str, rid: str) -> Response:
        if (denied := require(SCOPE_READ)) is not None:
            return denied
        if rtype not in fhir_store.SEARCH_PARAMS:
            return error(404, "not-supported", f"resource type {rtype!r} is not served here")
        with deps.store.read() as conn:
            found = fhir_store.read_resource(conn, rtype, rid)
        if found is None:
            return error(404, "not-found", f"{rtype}/{rid} does not exist")
        return fhir_response(found.with_meta(), headers={"ETag": f'W/"{found.version_id}"'})

    @app.get("/fhir/<rtype>")
    def search(rtype: str) -> Response:
        if (denied := require(SCOPE_READ)) is not None:
            return denied
        if rtype not in fhir_store.SEARCH_PARAMS:
            return error(404, "not-supported", f"resource type {rtype!r} is not served here")
        supported = fhir_store.SEARCH_PARAMS[rtype]
        criteria: list[tuple[str, list[str]]] = []
        count, offset, cursor, total_mode = DEFAULT_COUNT, 0, None, "none"
        for name in request.args:
            values = request.args.getlist(name)
            if name == "_count":
                try:
                    count = max(0, min(MAX_COUNT, int(values[-1])))
                except ValueError:
                    return error(400, "value", f"_count={values[-1]!r} is not a whole number", "_count")
                continue
            if name == "_offset":
                try:
                    offset = max(0, int(values[-1]))
                except ValueError:
                    return error(400, "value", f"_offset={values[-1]!r} is not a whole number", "_offset")
                continue
            if name == "_cursor":
                cursor = values[-1]
                if not FHIR_ID.fullmatch(cursor):
                    return error(400, "value", f"_cursor={cursor!r} is not a paging position from a next link",
                                 "_cursor")
                continue
            if name == "_total":
                total_mode = values[-1]
                if total_mode not in TOTAL_MODES:
                    return error(400, "value", f"_total={total_mode!r}: use one of {', '.join(TOTAL_MODES)}", "_total")
                continue
            if name == "_format":
                continue
            param = CHAINED.get(name, name) if rtype == "EpisodeOfCare" else name
            if param not in supported:
                return error(
                    400,
                    "not-supported",
                    f"search parameter {name!r} is not supported on {rtype}; supported: "
                    f"{', '.join(p for p in supported if p != 'patient.identifier')}"
                    + (", patient:identifier" if rtype == "EpisodeOfCare" else "")
                    + ", _count, _offset, _cursor, _total",
                    name,
                )
            for value in values:
                criteria.append((param, [v for v in value.split(",") if v]))
        with deps.store.read() as conn:
            page = fhir_store.search_page(conn, rtype, criteria, count, offset, after=cursor,
                                          count_total=total_mode == "accurate")
        found = page.resources
        base = request.base_url
        query = [(k, v) for k in request.args if k not in ("_offset",) for v in request.args.getlist(k)]
        links = [{"relation": "self", "url": f"{base}?{urlencode(query + [('_offset', offset)])}"}]
        if page.more:
            # Keyset paging: the next page starts after this page's last id, so a resource that
            # enters or leaves the matches meanwhile shifts no other match onto or off the next page.
            onward = [(k, v) for k, v in query if k != "_cursor"] + [("_cursor", found[-1].resource["id"])]
            links.append({"relation": "next", "url": f"{base}?{urlencode(onward)}"})
        if offset > 0:
            links.append(
                {"relation": "previous", "url": f"{base}?{urlencode(query + [('_offset', max(0, offset - count))])}"}
            )
        # The FHIR base is this URL less "/<type>" (what host_url + "/fhir" gives, without working the
        # request's URL out a second time).
        suffix = "/" + rtype
        host = base[: -len(suffix)] if base.endswith("/fhir" + suffix) else request.host_url.rstrip("/") + "/fhir"
        bundle: dict[str, object] = {"resourceType": "Bundle", "type": "searchset"}
        if page.total is not None:  # counted (_total=accurate) or known from the page; else left out (R4 allows)
            bundle["total"] = page.total
        bundle["link"] = links
        bundle["entry"] = [
            {
                "fullUrl": f"{host}/{rtype}/{r.resource['id']}",
                "resource": r.with_meta(),
                "search": {"mode": "match"},
            }
            for r in found
        ]
        return fhir_response(bundle)

    # Scope per blueprint, checked by the app: a blueprint object may be registered on several apps.
    scopes = {blueprint.name: scope for blueprint, scope in deps.blueprints}
    for blueprint, _scope in deps.blueprints:
        app.register_blueprint(blueprint)

    @app.before_request
    def _blueprint_scope() -> Response | None:
        scope = scopes.get(request.blueprint or "")
        return require(scope) if scope else None

    @app.errorhandler(404)
    def not_found(_exc: Exception) -> Response:
        return error(404, "not-found", f"no route for {request.method} {request.path}")

    @app.errorhandler(405)
    def not_allowed(_exc: Exception) -> Response:
        return error(405, "not-supported", f"{request.method} is not allowed on {request.path}")

    @app.errorhandler(413)
    def too_large(_exc: Exception) -> Response:
        return error(413, "too-costly", "request body larger than 32 MiB; split the batch")

    @app.errorhandler(Exception)
    def crashed(exc: Exception) -> Response:
        log.exception("request failed")
        return error(500, "exception", "internal error; see the service log for the correlation id")

    return app


def _db_check(store: Store) -> Callable[[], str | None]:
    return lambda: None if store.ping() else "database unreachable"


def _version() -> str:
    from importlib.metadata import version

    try:
        return version("forlop")
    except Exception:
        return "0"
