"""Validation of vendor records: the JSON Schema first, then what a schema cannot check.

Every problem is reported, not just the first, so a vendor can fix a record in one go.
The schemas live in ``profiles/events``; the code list in ``profiles/codes``.

The schema step has a compiled fast path (fastjsonschema): a record it accepts is
accepted; any other record goes through jsonschema, which alone words the rejections.
The compiled copy is made only when its verdicts equal jsonschema's (see `_compiled_copy`).

This module also holds the vendor value parsers (eSP dates and local times, DIPS
timestamps) because validation and normalisation must read values the same way.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator
from datetime import date, datetime, time
from functools import cache
from importlib import resources
from typing import Any

import fastjsonschema
from jsonschema import Draft202012Validator, ValidationError, validators

from forlop.clock import OSLO
from forlop.codes import UnknownCode, code_list
from services.ingest.domain.boundary import Problem, RecordBounds, date_problem
from services.ingest.domain.national_id import check_national_id

SOURCES = ("dips", "esp")

log = logging.getLogger(__name__)


# --- values shared with normalisation ----------------------------------------------------------


def registration_instant(day: date) -> datetime:
    """The canonical moment of a date-only pathway registration: 00:00 Europe/Oslo that day.

    Both vendor mappings use it (see `services.ingest.domain.normalise` for why).
    """
    return datetime.combine(day, time(0), OSLO)


def parse_esp_date(value: str) -> date:
    """``dd.mm.yyyy`` -> date; ValueError when the date does not exist."""
    return datetime.strptime(value, "%d.%m.%Y").date()


def parse_esp_time(value: str) -> datetime:
    """``dd.mm.yyyy HH:MM`` (Norwegian local time) -> aware datetime in Europe/Oslo.

    In the autumn hour that occurs twice the earlier one is taken (fold=0); a time in the
    skipped spring hour is read with the winter offset. eSP sends no offset, so nothing
    better is possible.
    """
    return datetime.strptime(value, "%d.%m.%Y %H:%M").replace(tzinfo=OSLO)


def parse_dips_time(value: str) -> datetime:
    """ISO 8601 -> datetime (aware when the value has an offset, which validation demands)."""
    return datetime.fromisoformat(value)


# --- the schemas ----------------------------------------------------------------------------


@cache
def schema(source: str) -> dict[str, Any]:
    """The bundled JSON Schema of a vendor format."""
    if source not in SOURCES:
        raise ValueError(f"unknown event source {source!r}; expected one of {', '.join(SOURCES)}")
    text = resources.files("profiles").joinpath(f"events/{source}-event.schema.json").read_text("utf-8")
    return json.loads(text)


def _end_anchored(pattern: str) -> str:
    """JSON Schema patterns are ECMA-262, where a final ``$`` ends the input. Python's ``$`` also
    matches before a final newline, which let "04900298515\n" through as a national id (and a
    time ending in a newline on to a parser error instead of a rejection)."""
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        return pattern[:-1] + r"\Z"
    return pattern


def _ecma_pattern(validator: Any, pattern: str, instance: Any, subschema: Any) -> Iterator[ValidationError]:
    # re.ASCII: ECMA-262's \d, \w and \b are ASCII; Python's would let "²" or "٣" through as a digit.
    if validator.is_type(instance, "string") and not re.search(_end_anchored(pattern), instance, re.ASCII):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


_EventValidator = validators.extend(Draft202012Validator, {"pattern": _ecma_pattern})


@cache
def bounds(source: str) -> RecordBounds:
    """The structural limits and the date range of a source's records (its schema's ``x-forlop-bounds``)."""
    return RecordBounds.from_schema(schema(source))


@cache
def _validator(source: str) -> Draft202012Validator:
    return _EventValidator(schema(source))


# --- the compiled fast path ----------------------------------------------------------------------
#
# fastjsonschema knows drafts 04-07 (2019-09 only for formats); the schemas are 2020-12. The
# keywords below mean the same in draft-07 and 2020-12 once every $ref is inlined (2020-12 applies
# a $ref's sibling keywords, draft-07 ignores them) and with the value restrictions checked in
# `_compiled_copy`. A schema using anything else gets no fast path: jsonschema alone decides.

_ANNOTATIONS = frozenset({"$comment", "$defs", "title", "description", "format",
                          "x-forlop-bounds"})  # forlop's bounds: checked before and after the schema
_ROOT_ONLY = ("$schema", "$id")  # a nested $id would move the base of "#/..." refs
_SAME_IN_DRAFT_07 = frozenset({"type", "required", "properties", "enum", "const", "pattern", "minLength",
                               "maxLength", "allOf", "if", "then"})
_SAME_TYPES = frozenset({"object", "string", "boolean", "null"})  # number/integer/array differ (bool, 1.0, tuple)


class _Unsupported(Exception):
    """The schema uses something whose draft-07 meaning in fastjsonschema differs from jsonschema's."""


def _pointer(root: dict[str, Any], ref: str) -> Any:
    if not ref.startswith("#/"):
        raise _Unsupported(f"$ref {ref!r} is not local")  # never fetched: no network
    node: Any = root
    try:
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
    except (KeyError, TypeError):
        raise _Unsupported(f"$ref {ref!r} points nowhere") from None
    return node


def _search_pattern(pattern: str) -> str:
    """The pattern as fastjsonschema must see it to search as the jsonschema validator does.

    Both end a final ``$`` at the end of the input (fastjsonschema turns every ``$`` into ``\\Z``;
    the jsonschema validator uses `_end_anchored`), so only a final anchor is allowed.
    """
    if "$" in pattern and (pattern.index("$") != len(pattern) - 1 or pattern.endswith("\\$")):
        raise _Unsupported(f"pattern {pattern!r} has a $ other than a final anchor")
    return "(?a)" + pattern  # ASCII classes, as `_ecma_pattern` searches


def _inline(node: Any, root: dict[str, Any], seen: tuple[str, ...] = ()) -> dict[str, Any]:
    if not isinstance(node, dict):
        raise _Unsupported(f"boolean or non-object subschema {node!r}")
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _ANNOTATIONS or key == "$ref":
            continue
        if key not in _SAME_IN_DRAFT_07:
            raise _Unsupported(f"keyword {key!r}")
        if key == "type" and not set([value] if isinstance(value, str) else value) <= _SAME_TYPES:
            raise _Unsupported(f"type {value!r}")
        if key in ("enum", "const") and not all(isinstance(v, str) for v in (value if key == "enum" else [value])):
            raise _Unsupported(f"{key} with a non-string value")  # bool/int/float equality differs
        if key == "properties":
            value = {name: _inline(sub, root, seen) for name, sub in value.items()}
        elif key == "allOf":
            value = [_inline(sub, root, seen) for sub in value]
        elif key in ("if", "then"):
            value = _inline(value, root, seen)
        elif key == "pattern":
            value = _search_pattern(value)
        elif key == "const":  # the same test; 2.22.3 generates `const` only with costly detailed exceptions
            if "enum" in node:
                raise _Unsupported("const beside enum")
            key, value = "enum", [value]
        out[key] = value
    if "$ref" not in node:
        return out
    ref = node["$ref"]
    if ref in seen:
        raise _Unsupported(f"recursive $ref {ref!r}")
    target = _inline(_pointer(root, ref), root, (*seen, ref))
    return {"allOf": [target, out]} if out else target


def _compiled_copy(source_schema: dict[str, Any]) -> dict[str, Any]:
    """A self-contained draft-07 schema that accepts exactly what the 2020-12 one accepts.

    Raises _Unsupported when that cannot be guaranteed. Formats stay annotations, as they are
    for jsonschema without a FormatChecker.
    """
    top = {key: value for key, value in source_schema.items() if key not in _ROOT_ONLY}
    return {"$schema": "http://json-schema.org/draft-07/schema#", **_inline(top, source_schema)}


def _no_remote_refs(uri: str) -> Any:
    raise _Unsupported(f"remote $ref {uri!r}")  # unreachable: every $ref is inlined first


@cache
def _fast_validator(source: str) -> Callable[[Any], Any] | None:
    """The compiled schema of a source, or None when jsonschema must decide alone."""
    if _validator(source).format_checker is not None:
        return None  # formats would be assertions; the compiled copy ignores them
    try:
        compiled = _compiled_copy(schema(source))
    except _Unsupported as exc:
        log.warning("no compiled validator for %s records (%s): validating with jsonschema only", source, exc)
        return None
    # Its error messages are never shown (jsonschema words rejections), so they are kept cheap.
    return fastjsonschema.compile(compiled, handlers={"http": _no_remote_refs, "https": _no_remote_refs},
                                  use_default=False, use_formats=False, detailed_exceptions=False)


@cache
def _report_disagreement(source: str) -> None:
    # Once per source: the record itself holds personal data and is not logged.
    log.warning("compiled validator rejected a %s record that jsonschema accepts; jsonschema's verdict stands",
                source)


def _schema_errors(source: str, raw: object) -> list[ValidationError]:
    """jsonschema's errors for a record; the compiled validator spares the work for a valid one."""
    fast = _fast_validator(source)
    if fast is not None:
        try:
            fast(raw)
            return []
        except fastjsonschema.JsonSchemaValueException:
            pass
    errors = list(_validator(source).iter_errors(raw))
    if fast is not None and not errors:
        _report_disagreement(source)
    return errors


_PATTERN_TEXT = {
    r"^[0-9]{11}$": "11 digits",
    r"^[0-9]{9}$": "9 digits",
    r"^[0-9]{4}$": "4 digits",
    r"^[0-9]+$": "digits only",
    r"^[!-~]+$": "visible ASCII characters only (no spaces, control characters or letters outside ASCII)",
    r"^[A-Z][0-9]{2}$": "a pathway type such as D11",
    r"^[A-Z][0-9]{2}[A-Z]{1,3}$": "an event code such as D11CU",
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$": "a date yyyy-mm-dd",
    r"^[0-9]{2}\.[0-9]{2}\.[0-9]{4}$": "a date dd.mm.yyyy",
    r"^[0-9]{2}\.[0-9]{2}\.[0-9]{4} [0-9]{2}:[0-9]{2}$": "a time dd.mm.yyyy HH:MM",
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?(Z|[+-][0-9]{2}:[0-9]{2})?$":
        "an ISO 8601 date and time such as 2026-03-02T13:15:00+01:00",
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$": "a UUID",
}
_JSON_TYPES = {"object": "an object", "string": "a string", "boolean": "true or false", "array": "a list"}


def _dotted(path: Any) -> str:
    return ".".join(str(p) for p in path) or "$"


def _join(parent: str, name: str) -> str:
    return name if parent == "$" else f"{parent}.{name}"


def _schema_problems(error: ValidationError) -> Iterator[Problem]:
    field, rule = _dotted(error.absolute_path), str(error.validator)
    name = "the record" if field == "$" else field
    if rule == "required":
        # one error per missing property; the message names it
        for missing in error.validator_value:
            if isinstance(error.instance, dict) and missing not in error.instance and repr(missing) in error.message:
                yield Problem(_join(field, missing), rule, f"{_join(field, missing)} is required")
        return
    if rule == "pattern":
        what = _PATTERN_TEXT.get(error.validator_value)
        message = f"{name} has the wrong format: expected {what or 'to match ' + error.validator_value}"
    elif rule == "enum":
        allowed = ", ".join(map(str, error.validator_value))
        message = f"{name} must be one of {allowed}, not {error.instance!r}"
    elif rule == "type":
        message = f"{name} must be {_JSON_TYPES.get(str(error.validator_value), error.validator_value)}"
    elif rule == "minLength":
        message = f"{name} must not be empty"
    elif rule == "maxLength":
        message = f"{name} is longer than {error.validator_value} characters"
    else:
        message = f"{name}: {error.message}"
    yield Problem(field, rule, message)


# --- checks a schema cannot express -------------------------------------------------------------


def _get(raw: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(raw, dict):
            return None
        raw = raw.get(part)
    return raw


def _national_id(raw: dict, field: str) -> Iterator[Problem]:
    value = _get(raw, field)
    if not isinstance(value, str) or not re.fullmatch(r"[0-9]{11}", value):
        return  # the schema already reports it
    broken = check_national_id(value)
    if broken == "check-digit":
        yield Problem(field, "national-id-check-digit",
                      f"{field} is not a valid fødselsnummer or D-nummer: the mod-11 check digits do not match")
    elif broken == "date-exists":
        yield Problem(field, "national-id-date",
                      f"{field} is not a valid fødselsnummer or D-nummer: it encodes a birth date that does not exist")


def _code(raw: dict, type_field: str, code_field: str | None) -> Iterator[Problem]:
    codes = code_list()
    pathway_type = _get(raw, type_field)
    code = _get(raw, code_field) if code_field else None
    well_formed = isinstance(pathway_type, str) and re.fullmatch(r"[A-Z][0-9]{2}", pathway_type) is not None
    known_type = well_formed and codes.is_known_pathway_type(pathway_type)
    if well_formed and not known_type:
        yield Problem(type_field, "known-pathway-type",
                      f"{type_field} {pathway_type!r} is not a pathway type on the code list")
    if not isinstance(code, str) or not code:
        return
    try:
        parsed = codes.parse(code, pathway_type if known_type else None)
    except UnknownCode as exc:
        yield Problem(code_field, exc.rule, f"{code_field}: {exc}")
        return
    if well_formed and parsed.pathway_type != pathway_type:  # only possible when the type is unknown
        yield Problem(code_field, "code-matches-pathway-type",
                      f"{code_field}: code {code!r} belongs to {parsed.pathway_type}, not to {type_field} {pathway_type!r}")


def _dates(
    raw: dict, fields: tuple[str, ...], parse: Callable[[str], date | datetime], shape: str, noun: str,
    limits: RecordBounds,
) -> Iterator[Problem]:
    """Each date (or time) that is well formed must exist and lie within the bounds' years (its own
    calendar date, before any offset is applied)."""
    for field in fields:
        value = _get(raw, field)
        if not isinstance(value, str) or not re.fullmatch(shape, value):
            continue  # absent or malformed: the schema decides whether that is a problem
        try:
            parsed = parse(value)
        except ValueError:
            yield Problem(field, "date-exists", f"{field} {value!r} is not a {noun} that exists")
            continue
        if (outside := date_problem(field, parsed.date() if isinstance(parsed, datetime) else parsed,
                                    limits, value)) is not None:
            yield outside


_DIPS_TIME = r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+(Z|[+-][0-9]{2}:[0-9]{2})?"


def _dips_checks(raw: dict) -> Iterator[Problem]:
    limits = bounds("dips")
    yield from _national_id(raw, "patient.nationalId")
    yield from _code(raw, "pathway.type", "document.code" if raw.get("eventType") == "ppr.document.approved" else None)
    yield from _dates(raw, ("document.date", "document.firstAttendanceDeadline"), date.fromisoformat,
                      r"[0-9]{4}-[0-9]{2}-[0-9]{2}", "date", limits)
    for field in ("eventTime", "recordedTime", "appointment.originalTime", "appointment.newTime", "admission.time"):
        value = _get(raw, field)
        if not isinstance(value, str) or not re.fullmatch(_DIPS_TIME, value):
            continue
        try:
            parsed = parse_dips_time(value)
        except ValueError:
            yield Problem(field, "date-exists", f"{field} {value!r} is not a date and time that exists")
            continue
        if (outside := date_problem(field, parsed.date(), limits, value)) is not None:
            yield outside
        elif parsed.tzinfo is None:
            yield Problem(field, "date-time-offset",
                          f"{field} {value!r} has no UTC offset (such as +01:00), so the moment is ambiguous")


def _esp_checks(raw: dict) -> Iterator[Problem]:
    limits = bounds("esp")
    yield from _national_id(raw, "fodselsnummer")
    yield from _code(raw, "forlopstype", "kode" if raw.get("meldingstype") == "FORLOPSKODE" else None)
    yield from _dates(raw, ("hendelsesdato", "fristForsteSamtale"), parse_esp_date, r"[0-9]{2}\.[0-9]{2}\.[0-9]{4}",
                      "date", limits)
    yield from _dates(raw, ("registrertTid", "opprinneligTid", "nyTid", "tidspunkt"), parse_esp_time,
                      r"[0-9]{2}\.[0-9]{2}\.[0-9]{4} [0-9]{2}:[0-9]{2}", "date and time", limits)


def validate(source: str, raw: object) -> list[Problem]:
    """Every problem with a vendor record (empty when it is valid).

    First all JSON Schema errors (rule = the schema keyword), then the checks a schema
    cannot express: national id check digits and birth date, known pathway type and
    event code, dates that exist, DIPS timestamps with an offset. A recordedTime long
    after the eventTime is no problem: late keying is normal.
    """
    problems: list[Problem] = []
    for error in _schema_errors(source, raw):
        problems.extend(_schema_problems(error))
    problems.sort(key=lambda p: (p.field, p.rule))
    if isinstance(raw, dict):
        problems.extend((_dips_checks if source == "dips" else _esp_checks)(raw))
    return list(dict.fromkeys(problems))  # drop exact repeats, keep order
