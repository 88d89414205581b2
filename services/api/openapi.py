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
from services.api.includes import INCLUDES, REVINCLUDES, TARGETS
from services.api.params import (
    CHAINED,
    DATE_PATTERN,
    HISTORY_CURSOR_PATTERN,
    INSTANT_PATTERN,
    MAX_COUNT,
    MAX_DATE_BOUNDS,
    MAX_VALUE_LENGTH,
    SORTS,
)
from services.api.subsetting import element_pattern
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
              (("400", "BadRequest"), ("401", "Unauthorized"), ("403", "Forbidden"), ("406", "NotAcceptable"),
               ("414", "UriTooLong"), ("429", "TooManyRequests"),
               ("431", "HeadersTooLarge"), ("503", "Unavailable"))}
    security = [{"bearerAuth": ["forlop/fhir.read"]}]
    for rtype, params in SEARCH.items():
        names = [(name, doc) for name, _kind, doc in params]
        if rtype == "EpisodeOfCare":
            names += [(chained, "The patient's identifier (chained search), as system|value.") for chained in CHAINED]
        parameters = [_search_parameter(name, doc, bounds) for name, doc in names]
        parameters.append({
            "name": "_id", "in": "query", "style": "form", "explode": True,
            "description": "Resource ids (comma-separated ids are ORed; repetitions AND).",
            "schema": {"type": "array", "maxItems": bounds["api_max_search_repeats"],
                       "items": {"type": "string", "pattern": "^[A-Za-z0-9.-]{1,64}(,[A-Za-z0-9.-]{1,64})"
                                 f"{{0,{bounds['api_max_search_values'] - 1}}}$"}}})
        parameters += [{"name": f"{name}:missing", "in": "query",
                        "description": f"true: only resources without a {name} reference; false: only those with one.",
                        "schema": {"type": "string", "enum": ["true", "false"]}}
                       for name, kind, _doc in params if kind == "reference"]
        parameters += [{"$ref": f"#/components/parameters/{p}"} for p in ("_count", "_offset", "_cursor", "_total",
                                                                          "_format", "_pretty", "_summary", "Prefer")]
        parameters += _SEARCH_CONTROLS + _result_parameters(rtype)
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
        conditional = [{"name": name, "in": "header", "description": doc, "schema": {"type": "string"}}
                       for name, doc in (("If-None-Match", 'W/"<versionId>" (or a list, or *): 304 when it names '
                                          "this version."),
                                         ("If-Modified-Since", "An HTTP date: 304 when the resource has not "
                                          "changed since (If-None-Match decides when both are given)."))]
        formats = [{"$ref": f"#/components/parameters/{p}"} for p in ("_format", "_pretty")]
        validators = {"ETag": {"schema": {"type": "string"}}, "Last-Modified": {"schema": {"type": "string"}}}
        found = {"200": {"description": f"The {rtype}, its version in the ETag and its change in Last-Modified.",
                         "headers": validators, "content": {"application/fhir+json": {"schema": resource}}},
                 "304": {"description": "Not modified (If-None-Match or If-Modified-Since).", "headers": validators},
                 "404": {"$ref": "#/components/responses/NotFound"},
                 "410": {"description": "The resource was deleted (its history keeps the deletion).",
                         "headers": validators, "content": {"application/fhir+json": {
                             "schema": {"$ref": "#/components/schemas/OperationOutcome"}}}},
                 **common}
        paths[f"/fhir/{rtype}/{{rid}}"] = {"get": {
            "tags": ["fhir"], "operationId": f"read{rtype}", "summary": f"Read one {rtype}",
            "security": security, "parameters": [{"$ref": "#/components/parameters/rid"}, *formats, *conditional],
            "responses": found}}
        paths[f"/fhir/{rtype}/{{rid}}/_history/{{vid}}"] = {"get": {
            "tags": ["fhir"], "operationId": f"vread{rtype}", "summary": f"Read one version of a {rtype} (vread)",
            "security": security,
            "parameters": [{"$ref": "#/components/parameters/rid"},
                           {"name": "vid", "in": "path", "required": True, "description": "The versionId.",
                            "schema": {"type": "string", "pattern": "^[1-9][0-9]{0,8}$"}}, *conditional],
            "responses": found}}
        history = {"200": {"description": "The versions, newest first: a deletion is an entry with request.method "
                           "DELETE and no resource. Bundle.meta.lastUpdated is the next poll's _since.",
                           "content": {"application/fhir+json": {"schema": {"$ref": "#/components/schemas/HistoryBundle"}}}},
                   **common}
        paths[f"/fhir/{rtype}/{{rid}}/_history"] = {"get": {
            "tags": ["fhir"], "operationId": f"historyInstance{rtype}", "summary": f"The versions of one {rtype}",
            "security": security, "parameters": [{"$ref": "#/components/parameters/rid"}, *_HISTORY_CONTROLS],
            "responses": {**history, "404": {"$ref": "#/components/responses/NotFound"}}}}
        paths[f"/fhir/{rtype}/_history"] = {"get": {
            "tags": ["fhir"], "operationId": f"historyType{rtype}",
            "summary": f"Every {rtype} version since an instant (the change feed)",
            "description": "Newest first (lastUpdated, then id and version), paged by the next link's _cursor.",
            "security": security, "parameters": _HISTORY_CONTROLS, "responses": history}}
    return paths


_SEARCH_CONTROLS: list[dict[str, Any]] = [
    {"name": "_lastUpdated", "in": "query", "style": "form", "explode": True,
     "description": "When the resource last changed, with a prefix gt, ge, lt, le or eq (none: eq over the value's "
                    "precision); twice for a range. A date without a time is UTC.",
     "schema": {"type": "array", "maxItems": MAX_DATE_BOUNDS, "items": {"type": "string",
                                                                       "pattern": f"^{DATE_PATTERN}$"}}},
    {"name": "_sort", "in": "query", "description": "_lastUpdated (oldest first) or -_lastUpdated (newest first); "
     "a sorted search pages by _offset.",
     "schema": {"type": "string", "enum": [*SORTS, *(f"-{key}" for key in SORTS)]}},
]
_HISTORY_CONTROLS: list[dict[str, Any]] = [
    {"name": "_since", "in": "query", "description": "Only versions at or after this instant (with its offset): the "
     "last poll's Bundle.meta.lastUpdated.", "schema": {"type": "string", "pattern": f"^{INSTANT_PATTERN}$"}},
    {"name": "_count", "in": "query", "description": f"Page size; default 50, at most {MAX_COUNT} are given.",
     "schema": {"type": "integer", "minimum": 1, "maximum": 2147483647}},
    {"name": "_cursor", "in": "query", "description": "The paging position from a history Bundle's next link.",
     "schema": {"type": "string", "pattern": f"^{HISTORY_CURSOR_PATTERN}$"}},
    {"$ref": "#/components/parameters/_format"},
]


def _result_parameters(rtype: str) -> list[dict[str, Any]]:
    """_elements, _include and _revinclude as this type's search takes them (`services.api.includes`)."""
    own = [f"{s}:{p}" for s, p in INCLUDES if s == rtype]
    own += [f"{s}:{p}:{t}" for s, p in INCLUDES if s == rtype for t in TARGETS[(s, p)]]
    rev = [f"{s}:{p}" for s, p in REVINCLUDES if rtype in TARGETS[(s, p)]]
    rev += [f"{s}:{p}:{rtype}" for s, p in REVINCLUDES if rtype in TARGETS[(s, p)]]
    out: list[dict[str, Any]] = [{
        "name": "_elements", "in": "query",
        "description": f"Only these top-level elements of each {rtype} (comma-separated; the mandatory ones, id and "
                       "meta are kept too), tagged SUBSETTED.",
        "schema": {"type": "string", "pattern": element_pattern(rtype)}}]
    for name, values, doc in (("_include", own, "the resources the matches refer to"),
                              ("_revinclude", rev, "the resources that refer to the matches")):
        if values:
            out.append({"name": name, "in": "query", "style": "form", "explode": True,
                        "description": f"Also {doc}, in the same Bundle (search.mode include).",
                        "schema": {"type": "array", "maxItems": len(values), "items": {"type": "string", "enum": values}}})
    return out


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
