"""The API's side of the audit trail (forlop.audit): one record per request that touched personal data.

Every request that passed its token check (and the rate limit) is recorded, whatever it answered,
except the routes in `NOT_PERSONAL` (aggregates with no patient in them). Refused requests (401,
403, 429) are not: they read nothing. The record is written after the route ran and before the
answer leaves (an `after_request` hook, its own transaction with one append); a route that writes
(POST /ingest/...) appends it in its own transaction instead, so its change and its record commit
together. When the record cannot be written the answer is replaced by a 503: fail closed.

`GET /fhir/AuditEvent?patient=<identifier>[&date=ge...&date=le...]` (scope forlop/audit.read) answers
a patient's question "who has looked at my data" with one search.
"""

from __future__ import annotations

import logging
import re
from dataclasses import replace
from datetime import UTC, date, datetime, time
from urllib.parse import urlencode

from flask import Flask, Response, g, request
from sqlalchemy import Connection

from forlop import audit
from forlop.audit import AuditRecord, AuditUnavailable
from forlop.clock import Clock
from forlop.config import PURPOSE_CODE
from forlop.fhir.audit_event import audit_event
from forlop.fhir.ids import patient_id
from forlop.fhir.outcome import error, fhir_response
from forlop.http import INT32_MAX, BadParameter, one_value, whole_number
from forlop.logging import correlation_id, mask_text
from forlop.storage import Store
from services.pathway.public import national_ids

log = logging.getLogger(__name__)

NOT_PERSONAL = frozenset({"pathway_reports.get_indicators", "pathway_reports.get_quality"})
RETRY_AFTER_S = 10
_DATE = re.compile(r"(eq|ge|gt|le|lt)?([0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9:.]+(Z|[+-][0-9]{2}:[0-9]{2}))?)")
MAX_COUNT = 500
SEARCH_PARAMS = ("patient", "date", "_count", "_cursor")


def purpose() -> str | None:
    """The X-Purpose-Of-Use header's code (None when absent); BadParameter when it is not a code."""
    raw = request.headers.get(audit.PURPOSE_HEADER)
    if raw is None:
        return None
    if not PURPOSE_CODE.fullmatch(raw.strip()):
        raise BadParameter(audit.PURPOSE_HEADER, f"{audit.PURPOSE_HEADER} must be a purpose-of-use code such as "
                           "TREAT (HL7 v3 ActReason)")
    return raw.strip()


def record_of(status: int, clock: Clock, default_purpose: str) -> AuditRecord:
    """The record of the request now running, as answered with `status`."""
    principal = g.principal
    touched = audit.current() or audit.Touched()
    rule = request.url_rule.rule if request.url_rule is not None else "(no route)"
    return AuditRecord(
        recorded=clock().astimezone(UTC),
        client_id=principal.client_id,
        subject=principal.subject,
        org_parent=principal.org_parent,
        org_child=principal.org_child,
        hpr_number=principal.hpr_number,
        method=request.method,
        route=rule,
        path=mask_text(request.path[:300]),
        purpose=g.get("purpose") or default_purpose,
        status=status,
        patients=tuple(sorted(touched.patients)),
        resources=tuple(sorted(touched.resources)),
        correlation_id=correlation_id.get(),
    )


def append_in(conn: Connection, record: AuditRecord, synchronous: bool = True) -> None:
    """Append the request's record in `conn`'s transaction (a write's: its change and its record commit
    together); AuditUnavailable if it cannot. `synchronous`: see `forlop.audit.append`."""
    touched = audit.current()
    try:
        if touched is not None and touched.pathway_keys:
            record = replace(record, patients=tuple(sorted(
                set(record.patients) | {patient_id(n) for n in national_ids(conn, touched.pathway_keys)})))
        audit.append(conn, record, synchronous=synchronous)
    except Exception as exc:
        raise AuditUnavailable(f"the audit record could not be written ({type(exc).__name__})") from exc
    if touched is not None:
        touched.audited = True


def unavailable() -> Response:
    resp = error(503, "transient", "the access could not be recorded in the audit trail, so it is not given; "
                 "try again later")
    resp.headers["Retry-After"] = str(RETRY_AFTER_S)
    return resp


def install(app: Flask, store: Store, clock: Clock, default_purpose: str, synchronous: bool) -> None:
    @app.before_request
    def _begin() -> None:
        audit.begin_request()
        g.purpose = purpose()

    @app.after_request
    def _record(resp: Response) -> Response:
        touched = audit.current()
        if g.get("principal") is None or request.endpoint in NOT_PERSONAL or (touched and touched.audited):
            return resp
        try:
            with store.transaction() as conn:
                append_in(conn, record_of(resp.status_code, clock, default_purpose), synchronous)
        except AuditUnavailable:
            log.exception("audit record not written: the request is answered 503")
            return unavailable()
        return resp

    @app.errorhandler(AuditUnavailable)
    def _unavailable(_exc: AuditUnavailable) -> Response:
        log.error("audit record not written: the request is answered 503")
        g.principal = None  # nothing was given: no record of it either (the write failed anyway)
        return unavailable()


def search_audit_events(store: Store, fhir_base: str) -> Response:
    """GET /fhir/AuditEvent: a patient's audit records, oldest first, keyset-paged by record id.

    Links and fullUrls start with `fhir_base` (the public base URL), never the request's Host header."""
    for name in request.args:
        if name not in SEARCH_PARAMS:
            raise BadParameter(name, f"unknown search parameter {name[:40]!r} for AuditEvent; use "
                               f"{', '.join(SEARCH_PARAMS)}")
    raw_patient = one_value(request.args, "patient")
    if not raw_patient:
        raise BadParameter("patient", "patient (a national id, system|national id or Patient/<id>) is required",
                           "required")
    patient = audit.patient_key(raw_patient)
    if patient is None:
        raise BadParameter("patient", "patient must be a national id (11 digits, system| before it or not), "
                           "Patient/<id> or a Patient id")
    since, since_strict, until, until_strict = None, False, None, False
    if len(request.args.getlist("date")) > 2:
        raise BadParameter("date", "date takes at most two values (a window: date=ge...&date=le...)")
    for value in request.args.getlist("date"):
        prefix, (first, last) = _date(value)
        if prefix in ("ge", "eq"):
            since, since_strict = first, False
        elif prefix == "gt":
            since, since_strict = last, True
        if prefix in ("le", "eq"):
            until, until_strict = last, False
        elif prefix == "lt":
            until, until_strict = first, True
    raw_count = one_value(request.args, "_count")
    count = 100 if raw_count is None else min(MAX_COUNT, whole_number("_count", raw_count, 1, INT32_MAX))
    raw_cursor = one_value(request.args, "_cursor")
    after = 0 if raw_cursor is None else whole_number("_cursor", raw_cursor, 0, 10**18 - 1)
    with store.read() as conn:
        found = audit.records_for(conn, patient, since, until, after_id=after, limit=count + 1,
                                  since_strict=since_strict, until_strict=until_strict)
    more, found = len(found) > count, found[:count]
    audit.touched(patients=[patient], resources=[f"AuditEvent/{s.id}" for s in found])
    base = f"{fhir_base}/AuditEvent"
    query = [(k, v) for k in request.args if k != "_cursor" for v in request.args.getlist(k)]
    links = [{"relation": "self", "url": f"{base}?{urlencode(list(request.args.items(multi=True)))}"}]
    if more:
        links.append({"relation": "next", "url": f"{base}?{urlencode(query + [('_cursor', found[-1].id)])}"})
    bundle = {"resourceType": "Bundle", "type": "searchset", "link": links, "entry": [
        {"fullUrl": f"{base}/{s.id}", "resource": audit_event(s.id, s.record), "search": {"mode": "match"}}
        for s in found]}
    if not more and after == 0:
        bundle["total"] = len(found)
    return fhir_response(bundle)


def read_audit_event(store: Store, rid: str) -> Response:
    """GET /fhir/AuditEvent/<id>: one record (the fullUrl of a search's entry)."""
    found = None
    if rid.isascii() and rid.isdigit() and len(rid) <= 18:
        with store.read() as conn:
            found = audit.record(conn, int(rid))
    if found is None:
        named = rid if rid.isascii() and rid.isdigit() and len(rid) <= 18 else "<that id>"
        return error(404, "not-found", f"AuditEvent/{named} does not exist")
    audit.touched(patients=found.record.patients, resources=[f"AuditEvent/{found.id}"])
    return fhir_response(audit_event(found.id, found.record))


def _date(value: str) -> tuple[str, tuple[datetime, datetime]]:
    """A date search value: (prefix, the first and last instant it names, UTC)."""
    m = _DATE.fullmatch(value)
    try:
        if m is None:
            raise ValueError(value)
        prefix, text = m.group(1) or "eq", m.group(2)
        if m.group(3):
            at = datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
            return prefix, (at, at)
        day = date.fromisoformat(text)
        return prefix, (datetime.combine(day, time.min, UTC), datetime.combine(day, time.max, UTC))
    except (ValueError, OverflowError):  # OverflowError: an instant near year 1 or 9999 moved to UTC
        raise BadParameter("date", f"date={value[:40]!r} must be [ge|gt|le|lt|eq]YYYY-MM-DD or an instant "
                           "(YYYY-MM-DDThh:mm:ssZ)") from None
