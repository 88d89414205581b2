"""FHIR OperationOutcome responses: every error the API gives is one."""

from __future__ import annotations

import json
from collections.abc import Iterable

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
    return Response(json.dumps(body, ensure_ascii=False), status=status, mimetype=FHIR_JSON, headers=headers)


def error(status: int, code: str, diagnostics: str, expression: str | None = None) -> Response:
    resp = fhir_response(operation_outcome([issue("error", code, diagnostics, expression)]), status)
    if status == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="forlop"'
    return resp
