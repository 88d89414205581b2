"""The HTTP entrypoint: event intake for EHR vendors, the FHIR read API, health and metrics.

Thin: each route checks the token, builds a call into a service function and
turns the answer (or the error) into FHIR JSON.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from importlib.metadata import version
from urllib.parse import urlencode

from flask import Blueprint, Flask, Response, g, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import DBAPIError, OperationalError
from werkzeug.exceptions import MethodNotAllowed

from forlop import audit
from forlop.auth import SCOPE_AUDIT_READ, SCOPE_READ, SCOPE_WRITE_EVENTS, AuthError, TokenVerifier
from forlop.clock import Clock
from forlop.config import Settings
from forlop.events import PathwayEvent
from forlop.fhir.capability import capability_statement
from forlop.fhir.ids import episode_id
from forlop.fhir.outcome import error, fhir_response, issue, operation_outcome
from forlop.http import BadParameter
from forlop.logging import correlation_id, ctx, mask_text
from forlop.storage import Store
from services.api import auditing, security
from services.api.limits import HttpLimits, refused, too_large
from services.api.openapi import openapi_document
from services.api.params import FHIR_ID, SearchLimits, search_request
from services.ingest.public import (
    SOURCES,
    BodyError,
    ConflictingDuplicates,
    InboundRecord,
    Problem,
    RejectedEvent,
    TooManyRecords,
    check_record,
    ingest,
    parse_body,
)
from services.pathway.public import SEARCH_PARAMS, read_resource, search_page

log = logging.getLogger(__name__)

RETRY_AFTER_S = 10  # a 503's Retry-After: the database was busy or away


@dataclass
class ApiDeps:
    settings: Settings
    store: Store
    clock: Clock
    verifier: TokenVerifier
    readiness: list[Callable[[], str | None]] = field(default_factory=list)  # each returns a problem or None
    blueprints: list[tuple[Blueprint, str]] = field(default_factory=list)  # (blueprint, scope)


def create_app(deps: ApiDeps) -> Flask:
    app = Flask("forlop", static_folder=None)  # every route is in the OpenAPI document: no static files
    limits = HttpLimits.of(deps.settings)
    search_limits = SearchLimits.of(deps.settings)
    app.config["MAX_CONTENT_LENGTH"] = limits.max_body_bytes  # a chunked body too (waitress's own limit aside)
    app.config["FORLOP_STORE"] = deps.store  # blueprints read the same store
    rate_limiter = security.RateLimiter.of(deps.settings)

    def require(scope: str) -> Response | None:
        """None when the token has `scope` and its client is within its rate; g.principal is then set
        (what the audit hook records). Else the refusal, which is not audited."""
        try:
            principal = deps.verifier.require(request.headers.get("Authorization"), scope)
        except AuthError as exc:
            return error(exc.status, exc.code if exc.code != "expired" else "login", str(exc))
        if rate_limiter is not None and (wait := rate_limiter.wait_s(principal.client_id or principal.subject)):
            return security.too_many(wait)
        g.principal = principal
        return None

    @app.before_request
    def _correlation() -> None:
        correlation_id.set(security.correlation_id_of(request.headers.get("X-Correlation-Id")))

    @app.after_request
    def _secure(resp: Response) -> Response:  # registered first: runs after the audit hook (Flask: reversed)
        if log.isEnabledFor(logging.DEBUG):  # an access log for debugging; the path is masked like any field
            log.debug("request answered", extra=ctx(method=request.method, path=request.path[:300],
                                                    status=resp.status_code))
        resp.headers["X-Correlation-Id"] = correlation_id.get() or ""
        return security.secure(resp, https=deps.settings.public_scheme == "https" or request.scheme == "https")

    auditing.install(app, deps.store, deps.clock, deps.settings.audit_default_purpose,
                     deps.settings.audit_synchronous_commit)

    @app.before_request
    def _within_limits() -> Response | None:
        return refused(request.environ, request.path, request.args, limits)

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

    @app.get("/openapi.json")
    def openapi() -> Response:
        return Response(openapi_document(deps.settings), mimetype="application/json")

    def post_events(source: str) -> Response:
        if (denied := require(SCOPE_WRITE_EVENTS)) is not None:
            return denied
        try:
            items = parse_body(request.content_type or "application/json", request.get_data(),
                               max_records=limits.max_records)
        except TooManyRecords as exc:
            return error(413, "too-costly", str(exc))
        except BodyError as exc:
            return error(400, "structure", str(exc))
        if not items:
            return error(400, "required", "the request body holds no events")
        records = [InboundRecord(item, "http") for item in items]
        checked, problems = _checked(source, records, limits.max_problems)
        audit.touched(national_ids=[e.patient.national_id for e in checked],
                      resources=[f"EpisodeOfCare/{episode_id(e.pathway_key)}" for e in checked])
        if problems:
            # All or nothing: the sender keeps the batch, fixes it and sends it again.
            return fhir_response(operation_outcome(problems), 422)
        try:
            with deps.store.transaction() as conn:
                result = ingest(conn, source, records, deps.clock(), deps.settings.topics, dead_letter=False,
                                checked=checked)
                if result.conflicts:  # all or nothing, as a 422: the transaction rolls back
                    raise ConflictingDuplicates(result.conflicts)
                # The record commits with the events, last so the chain's lock is held only to the commit.
                auditing.append_in(conn, auditing.record_of(202, deps.clock, deps.settings.audit_default_purpose))
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

    for source in SOURCES:
        app.add_url_rule(f"/ingest/{source}", f"post_events_{source}", partial(post_events, source),
                         methods=["POST"])

    @app.get("/fhir/metadata")
    def metadata() -> Response:
        return fhir_response(capability_statement(request.host_url.rstrip("/") + "/fhir", _version()))

    def read(rtype: str, rid: str) -> Response:
        if (denied := require(SCOPE_READ)) is not None:
            return denied
        found = None
        if FHIR_ID.fullmatch(rid):  # any other id names nothing (FHIR R4's id: [A-Za-z0-9-.]{1,64})
            with deps.store.read() as conn:
                found = read_resource(conn, rtype, rid)
        if found is None:
            return error(404, "not-found", f"{rtype}/{_shown(rid)} does not exist")
        audit.touched(resources=[f"{rtype}/{rid}"], patients=_patients_of(found.resource))
        return fhir_response(found.with_meta(), headers={"ETag": f'W/"{found.version_id}"'})

    def search(rtype: str) -> Response:
        if (denied := require(SCOPE_READ)) is not None:
            return denied
        query_ = search_request(rtype, SEARCH_PARAMS[rtype], request.args, search_limits)
        count, offset = query_.count, query_.offset
        with deps.store.read() as conn:
            page = search_page(conn, rtype, query_.criteria, count, offset, after=query_.cursor,
                               count_total=query_.total_mode == "accurate")
        found = page.resources
        audit.touched(resources=[f"{rtype}/{r.resource['id']}" for r in found],
                      patients=[p for r in found for p in _patients_of(r.resource)])
        base = request.base_url
        query = query_.echoed
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

    # One rule per resource type served (the OpenAPI document lists each with its own parameters);
    # another type has no route: 404.
    for rtype in SEARCH_PARAMS:
        app.add_url_rule(f"/fhir/{rtype}", f"search_{rtype}", partial(search, rtype))
        app.add_url_rule(f"/fhir/{rtype}/<rid>", f"read_{rtype}", partial(read, rtype))

    @app.get("/fhir/AuditEvent")
    def search_audit_events() -> Response:
        if (denied := require(SCOPE_AUDIT_READ)) is not None:
            return denied
        return auditing.search_audit_events(deps.store)

    # Scope per blueprint, checked by the app: a blueprint object may be registered on several apps.
    scopes = {blueprint.name: scope for blueprint, scope in deps.blueprints}
    for blueprint, _scope in deps.blueprints:
        app.register_blueprint(blueprint)

    @app.before_request
    def _blueprint_scope() -> Response | None:
        scope = scopes.get(request.blueprint or "")
        return require(scope) if scope else None

    @app.errorhandler(BadParameter)
    def bad_parameter(exc: BadParameter) -> Response:
        return error(400, exc.code, str(exc), exc.name)

    @app.errorhandler(404)
    def not_found(_exc: Exception) -> Response:
        return error(404, "not-found", f"no route for {request.method} {_shown(request.path)}")

    @app.errorhandler(405)
    def not_allowed(exc: MethodNotAllowed) -> Response:
        resp = error(405, "not-supported", f"{request.method} is not allowed on {_shown(request.path)}")
        if exc.valid_methods:
            resp.headers["Allow"] = ", ".join(sorted(exc.valid_methods))
        return resp

    @app.errorhandler(413)
    def body_too_large(_exc: Exception) -> Response:
        return too_large(limits)

    @app.errorhandler(DBAPIError)
    def database_error(exc: DBAPIError) -> Response:
        if getattr(exc.orig, "sqlstate", None) == "57014":  # query_canceled: the statement timeout
            log.warning("a request's statement ran past the API's statement timeout")
            resp = error(503, "timeout", "the query took longer than this server allows "
                         f"({deps.settings.api_statement_timeout_ms} ms); narrow the request or try again later")
        elif isinstance(exc, OperationalError) or exc.connection_invalidated:
            log.warning("database unavailable: %s", type(exc.orig).__name__)
            resp = error(503, "transient", "the database is unavailable; try again later")
        else:
            return crashed(exc)
        resp.headers["Retry-After"] = str(RETRY_AFTER_S)
        return resp

    @app.errorhandler(Exception)
    def crashed(exc: Exception) -> Response:
        log.exception("request failed")
        return error(500, "exception", "internal error; see the service log for the correlation id")

    return app


def _checked(source: str, records: list[InboundRecord], most: int) -> tuple[list[PathwayEvent], list[dict]]:
    """A batch's events, or the issues of its rejected records: the first `most`, then one that
    counts the rest.

    Checking stops once `most` are listed (the batch is refused whole either way): a body of a
    thousand empty objects costs the records it takes to fill the list, not a thousand rejections.
    """
    events: list[PathwayEvent] = []
    listed: list[dict] = []
    unlisted = 0
    for i, record in enumerate(records):
        if len(listed) >= most:
            rest = len(records) - i
            listed.append(issue("information", "informational",
                                f"{unlisted} more problems not listed; the last {rest} records were not checked "
                                f"(the first {most} problems are listed; the batch is refused whole)"))
            return events, listed
        try:
            if not isinstance(record.raw, dict):  # an array element that is text is not a record's text
                raise RejectedEvent([Problem("$", "type", f"the record must be a JSON object, not "
                                                          f"{type(record.raw).__name__}")])
            events.append(check_record(source, record))
        except RejectedEvent as exc:
            for p in exc.problems:
                if len(listed) >= most:
                    unlisted += 1
                    continue
                where = f"[{i}].{p.field}" if len(records) > 1 else p.field
                listed.append(issue("error", "invalid", f"{where}: {p.message} (rule: {p.rule})", where))
    if unlisted:
        listed.append(issue("information", "informational",
                            f"{unlisted} more problems not listed (the first {most} are)"))
    return events, listed


def _shown(text: str) -> str:
    """A path or id from the request as an error message may repeat it: short, without control characters,
    a national id in it masked."""
    short = text if len(text) <= 80 else text[:80] + "…"
    return mask_text("".join(ch if ch.isprintable() else "?" for ch in short))


_PATIENT_FIELDS = ("patient", "subject", "for", "beneficiary")


def _patients_of(resource: dict) -> list[str]:
    """The Patient ids a resource is about (itself, for a Patient)."""
    if resource.get("resourceType") == "Patient":
        return [resource["id"]]
    refs = [resource.get(name) for name in _PATIENT_FIELDS]
    return [ref["reference"][8:] for ref in refs
            if isinstance(ref, dict) and str(ref.get("reference", "")).startswith("Patient/")]


def _db_check(store: Store) -> Callable[[], str | None]:
    return lambda: None if store.ping() else "database unreachable"


def _version() -> str:
    try:
        return version("forlop")
    except Exception:
        return "0"
