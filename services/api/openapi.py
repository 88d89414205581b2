"""The OpenAPI 3.1 document served at ``GET /openapi.json``, made from data kept in one place each.

- ``profiles/api/openapi.yaml``: every route but the FHIR resource types', the shared parameters,
  responses and schemas;
- the FHIR read and search paths, one pair per resource type, from `forlop.fhir.capability.SEARCH`
  (what the CapabilityStatement lists, which a test holds to what the store indexes);
- the request bodies of intake: the vendor JSON Schemas of ``profiles/events``;
- the bounds: each schema marked ``x-forlop-setting: {<Settings field>: <keyword>}`` gets that
  keyword from the server's settings, so the document states the limits this server enforces.
"""

from __future__ import annotations

import copy
from functools import cache
from importlib import resources
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import orjson
import yaml

from forlop.config import Settings
from forlop.fhir.capability import DOCUMENTATION, SEARCH
from services.api.params import CHAINED, MAX_VALUE_LENGTH
from services.ingest.public import schema as vendor_schema
from services.messaging.public import MessageStatus

SETTING_MARK = "x-forlop-setting"
_VENDOR_SCHEMAS = {"DipsEvent": "dips", "EspEvent": "esp"}


@cache
def _template() -> dict[str, Any]:
    return yaml.safe_load(resources.files("profiles").joinpath("api/openapi.yaml").read_text("utf-8"))


def openapi_document(settings: Settings) -> bytes:
    """The document as JSON, for this server's settings."""
    return _document(_bounds(settings))


def _bounds(settings: Settings) -> tuple[tuple[str, int], ...]:
    return tuple((name, getattr(settings, name)) for name in sorted(Settings.__dataclass_fields__)
                 if name.startswith(("http_max", "api_max")))


@cache
def _document(bounds: tuple[tuple[str, int], ...]) -> bytes:
    doc = copy.deepcopy(_template())
    doc["info"]["version"] = _version()
    schemas = doc["components"]["schemas"]
    for name, source in _VENDOR_SCHEMAS.items():
        schemas[name] = _embedded(vendor_schema(source), f"#/components/schemas/{name}")
    doc["paths"].update(_fhir_paths(dict(bounds)))
    for parameter in doc["paths"]["/messages"]["get"]["parameters"]:
        if parameter.get("name") == "status":
            parameter["schema"]["enum"] = [s.value for s in MessageStatus] + [""]  # empty: every status
    _apply_settings(doc, dict(bounds))
    return orjson.dumps(doc)


def _embedded(source_schema: dict[str, Any], at: str) -> dict[str, Any]:
    """A vendor schema placed at `at` in the document: its own "#/..." references made to point there,
    its $id and $schema dropped (the document's dialect is 2020-12 too), forlop's bounds kept as a note."""
    out = {k: v for k, v in source_schema.items() if k not in ("$id", "$schema")}
    out = _rewrite_refs(out, at)
    out["description"] = out.get("description", "") + (
        " Besides the schema: every record at most maxRecordBytes bytes, nesting at most maxDepth deep, "
        "arrays at most maxItems long, objects at most maxProperties members, strings at most "
        "maxStringLength characters, no NUL character, dates from earliestDate to latestDate "
        "(x-forlop-bounds).")
    return out


def _rewrite_refs(node: Any, at: str) -> Any:
    if isinstance(node, dict):
        return {k: (at + v[1:] if k == "$ref" and isinstance(v, str) and v.startswith("#/") else _rewrite_refs(v, at))
                for k, v in node.items()}
    if isinstance(node, list):
        return [_rewrite_refs(v, at) for v in node]
    return node


def _fhir_paths(bounds: dict[str, int]) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    common = {code: {"$ref": f"#/components/responses/{name}"} for code, name in
              (("400", "BadRequest"), ("401", "Unauthorized"), ("403", "Forbidden"), ("414", "UriTooLong"),
               ("429", "TooManyRequests"),
               ("431", "HeadersTooLarge"), ("503", "Unavailable"))}
    security = [{"bearerAuth": ["forlop/fhir.read"]}]
    for rtype, params in SEARCH.items():
        names = [(name, doc) for name, _kind, doc in params]
        if rtype == "EpisodeOfCare":
            names += [(chained, "The patient's identifier (chained search), as system|value.") for chained in CHAINED]
        parameters = [_search_parameter(name, doc, bounds) for name, doc in names]
        parameters += [{"$ref": f"#/components/parameters/{p}"} for p in ("_count", "_offset", "_cursor", "_total",
                                                                          "_format")]
        resource = {"allOf": [{"$ref": "#/components/schemas/Resource"},
                              {"type": "object", "properties": {"resourceType": {"const": rtype}}}]}
        paths[f"/fhir/{rtype}"] = {"get": {
            "tags": ["fhir"], "operationId": f"search{rtype}", "summary": f"Search {rtype}",
            "description": DOCUMENTATION[rtype] + " Parameters AND; the comma-separated values of one OR; a "
            "repeated parameter ANDs its repetitions (identical ones count once).",
            "security": security, "parameters": parameters,
            "responses": {"200": {"description": "The matches, ordered by id.",
                                  "content": {"application/fhir+json": {"schema": {"$ref": "#/components/schemas/Bundle"}}}},
                          **common}}}
        paths[f"/fhir/{rtype}/{{rid}}"] = {"get": {
            "tags": ["fhir"], "operationId": f"read{rtype}", "summary": f"Read one {rtype}",
            "security": security, "parameters": [{"$ref": "#/components/parameters/rid"}],
            "responses": {"200": {"description": f"The {rtype}, its version in the ETag.",
                                  "headers": {"ETag": {"schema": {"type": "string"}}},
                                  "content": {"application/fhir+json": {"schema": resource}}},
                          "404": {"$ref": "#/components/responses/NotFound"}, **common}}}
    return paths


def _search_parameter(name: str, doc: str, bounds: dict[str, int]) -> dict[str, Any]:
    """A search parameter as the server bounds it: given at most `api_max_search_repeats` times, each
    time with at most `api_max_search_values` comma-separated values of at most MAX_VALUE_LENGTH
    characters (what `services.api.params.search_request` enforces)."""
    value = f"[^,\\x00]{{0,{MAX_VALUE_LENGTH}}}"
    return {
        "name": name, "in": "query", "style": "form", "explode": True,
        "description": f"{doc} At most {bounds['api_max_search_repeats']} repetitions, each with at most "
                       f"{bounds['api_max_search_values']} comma-separated values.",
        "schema": {"type": "array", "maxItems": bounds["api_max_search_repeats"],
                   "items": {"type": "string",
                             "pattern": f"^{value}(,{value}){{0,{bounds['api_max_search_values'] - 1}}}$"}},
    }


def _apply_settings(node: Any, bounds: dict[str, int]) -> None:
    """Set each keyword an ``x-forlop-setting`` names from the settings, and drop the mark."""
    if isinstance(node, dict):
        for setting, keyword in node.pop(SETTING_MARK, {}).items():
            node[keyword] = bounds[setting]
        for value in node.values():
            _apply_settings(value, bounds)
    elif isinstance(node, list):
        for value in node:
            _apply_settings(value, bounds)


def _version() -> str:
    try:
        return version("forlop")
    except PackageNotFoundError:
        return "0"
