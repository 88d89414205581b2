"""Validation of vendor records: the JSON Schema first, then what a schema cannot check.

Every problem is reported, not just the first, so a vendor can fix a record in one go.
The schemas live in ``profiles/events``; the code list in ``profiles/codes``.

This module also holds the vendor value parsers (eSP dates and local times, DIPS
timestamps) because validation and normalisation must read values the same way.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, time
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator, ValidationError

from forlop.clock import OSLO
from forlop.codes import UnknownCode, code_list
from services.ingest.national_id import check_national_id

SOURCES = ("dips", "esp")


@dataclass(frozen=True)
class Problem:
    """One reason a record is rejected."""

    field: str  # dotted path into the record, e.g. "patient.nationalId"; "$" is the record itself
    rule: str  # the schema keyword (required, pattern, enum, type, ...) or a named check
    message: str


# --- values shared with normalisation ----------------------------------------------------------


def registration_instant(day: date) -> datetime:
    """The canonical moment of a date-only pathway registration: 00:00 Europe/Oslo that day.

    Both vendor mappings use it (see `services.ingest.normalise` for why).
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


@cache
def _validator(source: str) -> Draft202012Validator:
    return Draft202012Validator(schema(source))


_PATTERN_TEXT = {
    r"^[0-9]{11}$": "11 digits",
    r"^[0-9]{9}$": "9 digits",
    r"^[0-9]{4}$": "4 digits",
    r"^[0-9]+$": "digits only",
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
    if not isinstance(value, str) or not re.fullmatch(r"\d{11}", value):
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
    well_formed = isinstance(pathway_type, str) and re.fullmatch(r"[A-Z]\d{2}", pathway_type) is not None
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
    raw: dict, fields: tuple[str, ...], parse: Callable[[str], Any], shape: str, noun: str
) -> Iterator[Problem]:
    for field in fields:
        value = _get(raw, field)
        if not isinstance(value, str) or not re.fullmatch(shape, value):
            continue  # absent or malformed: the schema decides whether that is a problem
        try:
            parse(value)
        except ValueError:
            yield Problem(field, "date-exists", f"{field} {value!r} is not a {noun} that exists")


def _dips_checks(raw: dict) -> Iterator[Problem]:
    yield from _national_id(raw, "patient.nationalId")
    yield from _code(raw, "pathway.type", "document.code" if raw.get("eventType") == "ppr.document.approved" else None)
    yield from _dates(raw, ("document.date", "document.firstAttendanceDeadline"), date.fromisoformat,
                      r"\d{4}-\d{2}-\d{2}", "date")
    for field in ("eventTime", "recordedTime", "appointment.originalTime", "appointment.newTime", "admission.time"):
        value = _get(raw, field)
        if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}T[\d:.]+(Z|[+-]\d{2}:\d{2})?", value):
            continue
        try:
            parsed = parse_dips_time(value)
        except ValueError:
            yield Problem(field, "date-exists", f"{field} {value!r} is not a date and time that exists")
            continue
        if parsed.tzinfo is None:
            yield Problem(field, "date-time-offset",
                          f"{field} {value!r} has no UTC offset (such as +01:00), so the moment is ambiguous")


def _esp_checks(raw: dict) -> Iterator[Problem]:
    yield from _national_id(raw, "fodselsnummer")
    yield from _code(raw, "forlopstype", "kode" if raw.get("meldingstype") == "FORLOPSKODE" else None)
    yield from _dates(raw, ("hendelsesdato", "fristForsteSamtale"), parse_esp_date, r"\d{2}\.\d{2}\.\d{4}", "date")
    yield from _dates(raw, ("registrertTid", "opprinneligTid", "nyTid", "tidspunkt"), parse_esp_time,
                      r"\d{2}\.\d{2}\.\d{4} \d{2}:\d{2}", "date and time")


def validate(source: str, raw: object) -> list[Problem]:
    """Every problem with a vendor record (empty when it is valid).

    First all JSON Schema errors (rule = the schema keyword), then the checks a schema
    cannot express: national id check digits and birth date, known pathway type and
    event code, dates that exist, DIPS timestamps with an offset. A recordedTime long
    after the eventTime is no problem: late keying is normal.
    """
    problems: list[Problem] = []
    for error in _validator(source).iter_errors(raw):
        problems.extend(_schema_problems(error))
    problems.sort(key=lambda p: (p.field, p.rule))
    if isinstance(raw, dict):
        problems.extend((_dips_checks if source == "dips" else _esp_checks)(raw))
    return list(dict.fromkeys(problems))  # drop exact repeats, keep order
