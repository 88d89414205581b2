"""FHIR OperationOutcome responses: every error the API gives is one."""

from __future__ import annotations

from collections.abc import Iterable

import orjson
from flask import Response

FHIR_JSON = "application/fhir+json"


def operation_outcome(issues: Iterable[dict]) -> dict:
    return {"resourceType": "OperationOutcome", "issue": list(issues)}


def issue(severity: str, code: str, diagnostics: str, expression: str | None = None) -> dict:
    out = {"severity": severity, "code": code, "diagnostics": diagnostics}
    if expression:
        out["expression"] = [expression]
    return out


def fhir_response(body: dict, status: int = 200, headers: dict | None = None) -> Response:
    # orjson: UTF-8 as json.dumps(ensure_ascii=False) gives, compact, several times faster on a Bundle
    return Response(orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS), status=status, mimetype=FHIR_JSON,
                    headers=headers)


def error(status: int, code: str, diagnostics: str, expression: str | None = None) -> Response:
    resp = fhir_response(operation_outcome([issue("error", code, diagnostics, expression)]), status)
    if status == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="forlop"'
    return resp
