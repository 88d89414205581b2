"""The HTTP entrypoint: event intake for EHR vendors, the FHIR read API, health and metrics.

Thin: each route checks the token and its tenant, builds a call into a service function and
turns the answer (or the error) into FHIR JSON.

Access (the README's Access section, docs/architecture.md): the token's organisation (HelseID's orgnr_child, else orgnr_parent)
must be in the tenant registry (`forlop.tenants`), else 403; each route allows some kinds of
tenant (403 for the others). What a tenant may read is restricted in the query, and a resource
outside its reach is answered 404, as one that does not exist, so that its existence is not revealed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from importlib.metadata import version
from urllib.parse import urlencode

from flask import Blueprint, Flask, Response, g, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError, OperationalError
from werkzeug.exceptions import MethodNotAllowed

from forlop import audit, dead_letters
from forlop.auth import (
    CLAIM_ORGNR_PARENT,
    SCOPE_ADMIN,
    SCOPE_AUDIT_READ,
    SCOPE_READ,
    SCOPE_WRITE_EVENTS,
    AuthError,
    TokenVerifier,
)
from forlop.clock import Clock
from forlop.config import Settings
from forlop.events import PathwayEvent
from forlop.fhir.capability import capability_statement
from forlop.fhir.ids import episode_id
from forlop.fhir.outcome import error, fhir_response, issue, operation_outcome
from forlop.http import BadParameter, one_value
from forlop.logging import correlation_id, ctx, mask_text
from forlop.storage import Store
from forlop.tenants import (
    DEVELOPMENT,
    HOSPITAL,
    KINDS,
    MUNICIPALITY,
    OPERATOR,
    Tenant,
    TenantRegistry,
    load_tenants,
)
from services.api import auditing, security
from services.api.formats import prettified, pretty, unacceptable
from services.api.limits import HttpLimits, refused, too_large
from services.api.links import fhir_base
from services.api.openapi import openapi_document
from services.api.params import (
    FHIR_ID,
    SearchLimits,
    etag,
    history_cursor,
    history_request,
    http_date,
    none_match,
    not_modified_since,
)
from services.api.searching import search_bundle
from services.ingest.public import (
    SOURCES,
    BodyError,
    ConflictingDuplicates,
    InboundRecord,
    Problem,
    RejectedEvent,
    SqlIngestUnitOfWork,
    TooManyRecords,
    accept,
    check_record,
    forward,
    parse_body,
)
from services.pathway.public import (
    SEARCH_PARAMS,
    StoredResource,
    Version,
    deletion,
    instance_history,
    read_version,
    read_within,
    type_history,
)

log = logging.getLogger(__name__)

RETRY_AFTER_S = 10  # a 503's Retry-After: the database was busy or away
# A history Bundle's meta.lastUpdated (the next poll's _since) lies this far before the request: a
# change is stamped when its transaction starts and seen when it commits, and the writers' clocks
# may differ from this one's a little. A poll sees the versions of that window again (same versionId).
HISTORY_SETTLE = timedelta(seconds=10)
# The tenants each scope's routes serve (every kind unless named): the operators' routes (the
# e-messages, the dead letters) hold every patient's data, so no hospital or municipality gets them.
KINDS_BY_SCOPE = {SCOPE_ADMIN: (OPERATOR, DEVELOPMENT), SCOPE_AUDIT_READ: (OPERATOR, DEVELOPMENT)}
WRITERS = (HOSPITAL, DEVELOPMENT)  # who posts events (a hospital for its own units only)
FHIR_READERS = (HOSPITAL, MUNICIPALITY, DEVELOPMENT)  # whose FHIR reads reach patients


@dataclass
class ApiDeps:
    settings: Settings
    store: Store
    clock: Clock
    verifier: TokenVerifier
    readiness: list[Callable[[], str | None]] = field(default_factory=list)  # each returns a problem or None
    blueprints: list[tuple[Blueprint, str]] = field(default_factory=list)  # (blueprint, scope)
    tenants: TenantRegistry | None = None  # None: FORLOP_TENANTS (or the demo registry), read now


def create_app(deps: ApiDeps) -> Flask:
    app = Flask("forlop", static_folder=None)  # every route is in the OpenAPI document: no static files
    limits = HttpLimits.of(deps.settings)
    search_limits = SearchLimits.of(deps.settings)
    app.config["MAX_CONTENT_LENGTH"] = limits.max_body_bytes  # a chunked body too (waitress's own limit aside)
    app.config["FORLOP_STORE"] = deps.store  # blueprints read the same store
    rate_limiter = security.RateLimiter.of(deps.settings)

    tenants = deps.tenants or load_tenants(deps.settings)

    def require(scope: str, kinds: tuple[str, ...] | None = None) -> Response | None:
        """None when the token has `scope` and names a registered organisation of `kinds` (default: those
        of the scope); else the 401 or 403. Sets g.principal and g.tenant
        (what the audit hook records); a refusal is not audited."""
        try:
            principal = deps.verifier.require(request.headers.get("Authorization"), scope)
        except AuthError as exc:
            return error(exc.status, exc.code if exc.code != "expired" else "login", str(exc))
        if rate_limiter is not None and (wait := rate_limiter.wait_s(principal.client_id or principal.subject)):
            return security.too_many(wait)
        if not (principal.org_child or principal.org_parent):
            return error(403, "forbidden", f"the token names no organisation (claim {CLAIM_ORGNR_PARENT})")
        tenant = tenants.find(principal.org_child, principal.org_parent)
        if tenant is None:
            orgs = " or ".join(o for o in (principal.org_child, principal.org_parent) if o)
            return error(403, "forbidden", f"organisation {_shown(orgs)} is not in forlop's tenant registry")
        allowed = kinds or KINDS_BY_SCOPE.get(scope, KINDS)
        if tenant.kind not in allowed:
            return error(403, "forbidden", f"{tenant.describe()} may not use {request.method} "
                         f"{_shown(request.path)}")
        g.principal, g.tenant = principal, tenant
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

    @app.before_request
    def _fhir_format() -> Response | None:
        if not request.path.startswith("/fhir/"):
            return None
        g.pretty = pretty(request.args)
        return unacceptable(request.args, request.accept_mimetypes, "Accept" in request.headers)

    @app.after_request
    def _pretty(resp: Response) -> Response:
        return prettified(resp) if g.get("pretty") else resp

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
        if (denied := require(SCOPE_WRITE_EVENTS, WRITERS)) is not None:
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
        if (foreign := _foreign_units(g.tenant, checked)):
            return fhir_response(operation_outcome(
                issue("error", "forbidden", f"unit {unit} is not one of {g.tenant.describe()}'s units; "
                      "the batch is refused whole") for unit in foreign), 403)
        try:
            with deps.store.transaction() as conn:
                now, topics = deps.clock(), deps.settings.topics
                uow = SqlIngestUnitOfWork(conn)
                result = accept(uow, source, records, checked, now, topics, dead_letter=False)
                forward(uow, result.accepted, now, topics)
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
        return fhir_response(capability_statement(fhir_base(deps.settings, request.environ), _version()))

    def read(rtype: str, rid: str) -> Response:
        if (denied := require(SCOPE_READ, FHIR_READERS)) is not None:
            return denied
        found = gone = None
        if FHIR_ID.fullmatch(rid):  # any other id names nothing (FHIR R4's id: [A-Za-z0-9-.]{1,64})
            with deps.store.read() as conn:
                # outside the tenant's reach reads as absent: 404 either way, so existence is not revealed
                found = read_within(conn, rtype, rid, g.tenant.reach)
                if found is None:  # a deletion is told (410) to whoever reaches the pathway it was of
                    gone = deletion(conn, rtype, rid, g.tenant.reach)
        if gone is not None:
            return _gone(gone)
        if found is None:
            return error(404, "not-found", f"{rtype}/{_shown(rid)} does not exist")
        audit.touched(resources=[f"{rtype}/{rid}"], patients=_patients_of(found.resource))
        return _resource_response(found)

    def vread(rtype: str, rid: str, vid: str) -> Response:
        if (denied := require(SCOPE_READ, FHIR_READERS)) is not None:
            return denied
        found = None
        if FHIR_ID.fullmatch(rid) and vid.isascii() and vid.isdigit() and len(vid) <= 9:
            with deps.store.read() as conn:
                if _within(conn, rtype, rid):
                    found = read_version(conn, rtype, rid, int(vid))
        if found is None:
            return error(404, "not-found", f"{rtype}/{_shown(rid)} has no version {_shown(vid)}")
        audit.touched(resources=[f"{rtype}/{rid}"], patients=_patients_of(found.resource or {}))
        if found.deleted:
            return _gone(found)
        return _resource_response(found.stored())

    def _within(conn: Connection, rtype: str, rid: str) -> bool:
        """Whether a tenant with a reach may see this resource's versions: it reaches the resource now,
        or the pathway a deleted one was of."""
        return (g.tenant.reach is None or read_within(conn, rtype, rid, g.tenant.reach) is not None
                or deletion(conn, rtype, rid, g.tenant.reach) is not None)

    def history(rtype: str, rid: str | None = None) -> Response:
        if (denied := require(SCOPE_READ, FHIR_READERS)) is not None:
            return denied
        asked = history_request(request.args)
        # Complete up to this instant (a change committed later carries an earlier lastUpdated only
        # within the settle window): the next poll's _since.
        complete_to = deps.clock() - HISTORY_SETTLE
        with deps.store.read() as conn:
            if rid is None:
                page = type_history(conn, rtype, asked.count, since=asked.since, after=asked.cursor,
                                    reach=g.tenant.reach)
            elif not _within(conn, rtype, rid):
                page = None
            else:
                page = (instance_history(conn, rtype, rid, asked.count, since=asked.since,
                                         before=asked.cursor[2] if asked.cursor else None)
                        if FHIR_ID.fullmatch(rid) else None)
                if page is not None and not page.versions and asked.since is None and asked.cursor is None:
                    page = None  # no version at all: no such resource
        if page is None:
            return error(404, "not-found", f"{rtype}/{_shown(rid or '')} does not exist")
        host = fhir_base(deps.settings, request.environ)  # never the Host header
        base = f"{host}/{rtype}" + (f"/{rid}/_history" if rid is not None else "/_history")
        links = [{"relation": "self", "url": f"{base}?{urlencode(list(request.args.items(multi=True)))}"}]
        if page.more:
            last = page.versions[-1]
            onward = asked.echoed + [("_cursor", history_cursor(last.updated_at, last.id, last.version_id))]
            links.append({"relation": "next", "url": f"{base}?{urlencode(onward)}"})
        audit.touched(resources=[f"{v.resource_type}/{v.id}" for v in page.versions],
                      patients=[p for v in page.versions for p in _patients_of(v.resource or {})])
        bundle = {"resourceType": "Bundle", "meta": {"lastUpdated": _zulu(complete_to)},
                  "type": "history", "link": links, "entry": [_history_entry(host, v) for v in page.versions]}
        return fhir_response(bundle)

    def search(rtype: str) -> Response:
        if (denied := require(SCOPE_READ, FHIR_READERS)) is not None:
            return denied
        with deps.store.read() as conn:
            # the tenant's reach is a condition of the query: its total and pages count only what it reaches
            bundle = search_bundle(conn, rtype, request.args, request.headers.get("Prefer"), search_limits,
                                   fhir_base(deps.settings, request.environ),  # never the Host header
                                   reach=g.tenant.reach)
        shown = [e["resource"] for e in bundle["entry"] if e.get("search", {}).get("mode") in ("match", "include")]
        audit.touched(resources=[f"{r['resourceType']}/{r['id']}" for r in shown],
                      patients=[p for r in shown for p in _patients_of(r)])
        return fhir_response(bundle)

    # One rule per resource type served (the OpenAPI document lists each with its own parameters);
    # another type has no route: 404.
    for rtype in SEARCH_PARAMS:
        app.add_url_rule(f"/fhir/{rtype}", f"search_{rtype}", partial(search, rtype))
        app.add_url_rule(f"/fhir/{rtype}/<rid>", f"read_{rtype}", partial(read, rtype))
        app.add_url_rule(f"/fhir/{rtype}/_history", f"history_{rtype}", partial(history, rtype))
        app.add_url_rule(f"/fhir/{rtype}/<rid>/_history", f"instance_history_{rtype}", partial(history, rtype))
        app.add_url_rule(f"/fhir/{rtype}/<rid>/_history/<vid>", f"vread_{rtype}", partial(vread, rtype))

    @app.get("/dead-letters")
    def list_dead_letters() -> Response:
        """The operators' view of `forlop dlq list`: the dead letters not replayed yet (`?all=true`: all)."""
        if (denied := require(SCOPE_ADMIN)) is not None:
            return denied
        shown = one_value(request.args, "all")
        if shown not in (None, "true", "false"):
            raise BadParameter("all", f"all={shown[:40]!r}: use true or false")
        everything = shown == "true"
        with deps.store.read() as conn:
            rows = dead_letters.list_dead_letters(conn, None if everything else dead_letters.UNRESOLVED)
        return Response(json.dumps([_dead_letter_view(row) for row in rows], ensure_ascii=False),
                        mimetype="application/json")

    @app.get("/fhir/AuditEvent")
    def search_audit_events() -> Response:
        if (denied := require(SCOPE_AUDIT_READ)) is not None:
            return denied
        return auditing.search_audit_events(deps.store, fhir_base(deps.settings, request.environ))

    @app.get("/fhir/AuditEvent/<rid>")
    def read_audit_event(rid: str) -> Response:
        if (denied := require(SCOPE_AUDIT_READ)) is not None:
            return denied
        return auditing.read_audit_event(deps.store, rid)

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


def _resource_response(found: StoredResource) -> Response:
    """A resource (read or vread) with its version and change time as validators; 304 when the
    request's If-None-Match names this version or If-Modified-Since is not before its change (the
    ETag decides when both are given, as HTTP says)."""
    headers = {"ETag": etag(found.version_id), "Last-Modified": http_date(found.updated_at)}
    given = request.headers.get("If-None-Match")
    if (none_match(given, found.version_id) if given
            else not_modified_since(request.headers.get("If-Modified-Since"), found.updated_at)):
        return Response(status=304, headers=headers)
    return fhir_response(found.with_meta(), headers=headers)


def _gone(deleted: Version) -> Response:
    resp = error(410, "deleted", f"{deleted.resource_type}/{deleted.id} was deleted (version {deleted.version_id}, "
                 f"{deleted.updated_at.isoformat()}); its history is at _history")
    resp.headers["ETag"] = etag(deleted.version_id)
    resp.headers["Last-Modified"] = http_date(deleted.updated_at)
    return resp


def _zulu(at: datetime) -> str:
    """An instant in UTC written with Z: the next poll's _since, with no "+" to encode in a URL."""
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _history_entry(host: str, version: Version) -> dict[str, object]:
    """A history Bundle's entry: the version (none for a deletion), the change as a request, its outcome."""
    at = version.updated_at.isoformat()
    entry: dict[str, object] = {"fullUrl": f"{host}/{version.resource_type}/{version.id}"}
    if version.deleted:
        entry["request"] = {"method": "DELETE", "url": f"{version.resource_type}/{version.id}"}
        entry["response"] = {"status": "204 No Content", "etag": etag(version.version_id), "lastModified": at}
        return entry
    entry["resource"] = version.stored().with_meta()
    created = version.method == "POST"
    entry["request"] = {"method": version.method,
                        "url": version.resource_type if created else f"{version.resource_type}/{version.id}"}
    entry["response"] = {"status": "201 Created" if created else "200 OK", "etag": etag(version.version_id),
                         "lastModified": at}
    return entry


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


def _foreign_units(tenant: Tenant, events: list[PathwayEvent]) -> list[str]:
    """The units of `events` that are not the tenant's (a hospital posts for its own units only)."""
    if tenant.kind != HOSPITAL:
        return []
    return sorted({e.unit.her_id for e in events} - tenant.units)


def _dead_letter_view(row: dict) -> dict:
    """A dead letter as JSON: its text and reasons, without the exact bytes (`forlop dlq list --json` has them)."""
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items() if k != "raw_bytes"}


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
