"""GET /openapi.json: an OpenAPI 3.1 document of exactly the app's routes, with this server's bounds."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest
import schemathesis
from jsonschema import Draft202012Validator

from app.bootstrap import Runtime
from forlop.auth import SCOPE_ADMIN, SCOPE_READ, TokenVerifier
from forlop.clock import FixedClock, parse_time
from forlop.config import load_settings
from forlop.storage import Store

NOW = parse_time("2026-01-05T10:00:00+01:00")


@pytest.fixture
def app(sqlite_store: Store, tmp_path):
    """The app as `forlop serve api` builds it: every blueprint."""
    settings = load_settings({"FORLOP_DATA_DIR": str(tmp_path)})
    return Runtime(settings, sqlite_store, FixedClock(NOW)).api_app(closers=[])


def _document(app) -> dict:
    resp = app.test_client().get("/openapi.json")  # no token
    assert resp.status_code == 200 and resp.mimetype == "application/json"
    return json.loads(resp.data)


def test_the_document_lists_exactly_the_routes_of_the_app(app) -> None:
    """It cannot drift: a route added to the app, or to the document alone, fails here."""
    routes = {(re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule), method.lower())
              for rule in app.url_map.iter_rules() for method in rule.methods - {"HEAD", "OPTIONS"}}
    documented = {(path, method) for path, item in _document(app)["paths"].items() for method in item
                  if method in ("get", "post", "put", "patch", "delete")}
    assert documented == routes


def test_the_document_is_valid_openapi_3_1_and_every_schema_valid_json_schema(app) -> None:
    doc = _document(app)
    assert doc["openapi"].startswith("3.1")
    schemathesis.openapi.from_dict(doc).validate()  # the OpenAPI 3.1 meta-schema
    for schema in doc["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    ops = [op for item in doc["paths"].values() for op in item.values()]
    assert len({op["operationId"] for op in ops}) == len(ops)
    for op in ops:  # every error an operation can give is an OperationOutcome (readiness aside)
        for status, response in op["responses"].items():
            if status.startswith(("4", "5")) and "$ref" in response:
                target = doc["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
                assert target["content"]["application/fhir+json"]["schema"]["$ref"].endswith("/OperationOutcome")


def test_security_scheme_and_scopes(app) -> None:
    doc = _document(app)
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {**doc["components"]["securitySchemes"]["bearerAuth"],
                                                                 "type": "http", "scheme": "bearer",
                                                                 "bearerFormat": "JWT"}
    scopes = {path: op.get("security") for path, item in doc["paths"].items() for op in item.values()}
    assert scopes["/ingest/dips"] == [{"bearerAuth": ["forlop/events.write"]}]
    assert scopes["/fhir/Task"] == scopes["/worklist"] == [{"bearerAuth": [SCOPE_READ]}]
    assert scopes["/messages"] == scopes["/dead-letters"] == [{"bearerAuth": [SCOPE_ADMIN]}]
    assert scopes["/fhir/AuditEvent"] == [{"bearerAuth": ["forlop/audit.read"]}]
    assert scopes["/fhir/metadata"] is None and scopes["/healthz"] is None and scopes["/openapi.json"] is None


def test_intake_bodies_are_the_vendor_schemas_and_their_references_resolve(app, contracts_dir) -> None:
    doc = _document(app)
    dips = doc["components"]["schemas"]["DipsEvent"]
    assert dips["properties"]["unit"]["properties"]["name"]["$ref"] == "#/components/schemas/DipsEvent/$defs/text"
    assert dips["$defs"]["text"]["maxLength"] == 200
    for name, vendor in (("DipsEvent", "dips"), ("EspEvent", "esp")):
        validator = Draft202012Validator({"$ref": f"#/components/schemas/{name}", "components": doc["components"]})
        example = json.loads((contracts_dir / f"{vendor}-examples.ndjson").read_text().splitlines()[0])
        assert not list(validator.iter_errors(example))
        assert list(validator.iter_errors({**example, "patient": "x", "fodselsnummer": 1}))


def test_the_bounds_are_this_servers_settings(sqlite_store: Store, tmp_path) -> None:
    settings = replace(load_settings({"FORLOP_DATA_DIR": str(tmp_path)}), api_max_offset=77, api_max_search_repeats=3,
                       api_max_search_values=4, http_max_records=9)
    from services.api.app import ApiDeps, create_app
    from services.pathway.entrypoints.http import pathway_bp

    rt = Runtime(settings, sqlite_store, FixedClock(NOW))
    doc = _document(create_app(ApiDeps(settings, sqlite_store, rt.clock, TokenVerifier(settings),
                                       blueprints=[(pathway_bp(rt.store, rt.clock), SCOPE_READ)])))
    assert doc["components"]["parameters"]["_offset"]["schema"]["maximum"] == 77
    status = next(p for p in doc["paths"]["/fhir/Task"]["get"]["parameters"] if p.get("name") == "status")
    assert status["schema"]["maxItems"] == 3 and status["schema"]["items"]["pattern"].endswith("{0,3}$")
    body = doc["paths"]["/ingest/dips"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["oneOf"][1]["maxItems"] == 9
    assert "x-forlop-setting" not in json.dumps(doc)


def test_every_operation_with_a_token_documents_429(app) -> None:
    """A client past its rate (FORLOP_RATE_LIMIT_PER_S) may get 429 on any route that checks its token."""
    doc = _document(app)
    guarded = [(path, op) for path, item in doc["paths"].items() for op in item.values() if op.get("security")]
    assert guarded and all("429" in op["responses"] for _, op in guarded), \
        [path for path, op in guarded if "429" not in op["responses"]]
