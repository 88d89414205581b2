"""Rejections: every problem of a record, as (field, rule), with a message that names the field."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path

import fastjsonschema
import pytest
from jsonschema import Draft202012Validator

from services.ingest.domain.normalise import RejectedEvent, parse_vendor_event
from services.ingest.domain.validation import Problem, _compiled_copy, _EventValidator, schema, validate

GOLDEN = Path(__file__).resolve().parent / "golden"


def record(source: str, case: str) -> dict:
    return json.loads((GOLDEN / source / f"{case}.in.json").read_text("utf-8"))


def broken(source: str, case: str, change: Callable[[dict], None]) -> list[tuple[str, str]]:
    raw = copy.deepcopy(record(source, case))
    change(raw)
    problems = validate(source, raw)
    for p in problems:
        assert p.field.split(".")[-1] in p.message, p  # plain English that names the field
    return [(p.field, p.rule) for p in problems]


@pytest.mark.parametrize("source", ["dips", "esp"])
def test_the_schemas_are_valid_draft_2020_12(source: str) -> None:
    Draft202012Validator.check_schema(schema(source))
    assert schema(source)["$schema"] == "https://json-schema.org/draft/2020-12/schema"


@pytest.mark.parametrize("case", sorted(p.name.removesuffix(".in.json") for p in (GOLDEN / "dips").glob("*.in.json")))
def test_golden_dips_inputs_are_valid(case: str) -> None:
    assert validate("dips", record("dips", case)) == []


@pytest.mark.parametrize("case", sorted(p.name.removesuffix(".in.json") for p in (GOLDEN / "esp").glob("*.in.json")))
def test_golden_esp_inputs_are_valid(case: str) -> None:
    assert validate("esp", record("esp", case)) == []


# --- DIPS -----------------------------------------------------------------------------------------


def test_dips_schema_problems_are_all_reported() -> None:
    def change(r: dict) -> None:
        del r["eventId"]
        r["patient"]["nationalId"] = "1383703331"
        r["patient"]["municipality"] = "501"
        r["patient"]["receivesMunicipalServices"] = "nei"
        r["unit"]["setting"] = "day"
        r["source"]["organisation"]["orgNumber"] = "98397489"
        del r["document"]["code"]
        r["document"]["date"] = "06.10.2025"

    assert broken("dips", "document-approved-start-with-deadline", change) == [
        ("document.code", "required"),
        ("document.date", "pattern"),
        ("eventId", "required"),
        ("patient.municipality", "pattern"),
        ("patient.nationalId", "pattern"),
        ("patient.receivesMunicipalServices", "type"),
        ("source.organisation.orgNumber", "pattern"),
        ("unit.setting", "enum"),
    ]


def test_dips_checks_beyond_the_schema_are_all_reported() -> None:
    def change(r: dict) -> None:
        r["patient"]["nationalId"] = "13837033318"  # last check digit wrong
        r["document"]["code"] = "D12CP"  # a PHBU code on a PHV pathway
        r["document"]["date"] = "2026-02-30"
        r["document"]["firstAttendanceDeadline"] = "2026-13-01"
        r["eventTime"] = "2025-10-06T13:15:00"  # no offset
        r["recordedTime"] = "2025-10-06T24:15:00+02:00"

    assert broken("dips", "document-approved-start-with-deadline", change) == [
        ("patient.nationalId", "national-id-check-digit"),
        ("document.code", "code-matches-pathway-type"),
        ("document.date", "date-exists"),
        ("document.firstAttendanceDeadline", "date-exists"),
        ("eventTime", "date-time-offset"),
        ("recordedTime", "date-exists"),
    ]


@pytest.mark.parametrize(
    ("pathway_type", "code", "expected"),
    [
        ("D99", "D99A", [("pathway.type", "known-pathway-type"), ("document.code", "known-pathway-type")]),
        ("D11", "D11Q", [("document.code", "known-event-code")]),
        ("D11", "D11C", [("document.code", "known-event-code")]),  # a decision needs its outcome
        ("D11", "D11CZ", [("document.code", "known-event-code")]),
        ("D11", "D11V", [("document.code", "code-matches-pathway-type")]),  # detox is TSB only
        ("D01", "D01V", []),
    ],
)
def test_dips_codes_are_checked_against_the_code_list(pathway_type: str, code: str, expected: list) -> None:
    def change(r: dict) -> None:
        r["pathway"]["type"] = pathway_type
        r["document"]["code"] = code

    assert broken("dips", "document-approved-decision-extended-assessment", change) == expected


def test_dips_national_id_with_a_birth_date_that_does_not_exist() -> None:
    def change(r: dict) -> None:
        r["patient"]["nationalId"] = "31829000051"  # 31.02.1990, synthetic, valid check digits

    assert broken("dips", "consent-given", change) == [("patient.nationalId", "national-id-date")]


def test_dips_payload_of_the_event_type_is_required_and_checked() -> None:
    def missing(r: dict) -> None:
        del r["appointment"]

    def wrong(r: dict) -> None:
        r["appointment"]["status"] = "rescheduled"
        r["appointment"]["newTime"] = "2025-11-10 13:15"
        del r["appointment"]["originalTime"]

    assert broken("dips", "appointment-no-show", missing) == [("appointment", "required")]
    assert broken("dips", "appointment-no-show", wrong) == [
        ("appointment.newTime", "pattern"),
        ("appointment.originalTime", "required"),
        ("appointment.status", "enum"),
    ]


def test_dips_unknown_event_type_is_one_enum_problem() -> None:
    def change(r: dict) -> None:
        r["eventType"] = "ppr.document.signed"

    assert broken("dips", "document-approved-end", change) == [("eventType", "enum")]


def test_dips_consent_and_admission_payloads() -> None:
    assert broken("dips", "consent-given", lambda r: r["consent"].update(municipality="J")) == [
        ("consent.municipality", "type")
    ]
    assert broken("dips", "admission-started", lambda r: r["admission"].pop("time")) == [
        ("admission.time", "required")
    ]


def test_dips_late_keying_is_not_a_problem() -> None:
    def change(r: dict) -> None:
        r["recordedTime"] = "2026-03-01T10:00:00+01:00"  # five months after the event

    assert broken("dips", "document-approved-end", change) == []


def test_dips_deletion_needs_id_and_reason() -> None:
    assert broken("dips", "document-deleted", lambda r: r.__setitem__("document", {})) == [
        ("document.id", "required"),
        ("document.reason", "required"),
    ]


# --- eSP ------------------------------------------------------------------------------------------


def test_esp_schema_problems_are_all_reported() -> None:
    def change(r: dict) -> None:
        del r["kode"]
        del r["enhetNavn"]
        r["hendelsesdato"] = "2025-10-06"
        r["registrertTid"] = "06.10.2025"
        r["omsorgsniva"] = "X"
        r["kommunaleTjenester"] = "Ja"
        r["registrertAv"] = "sekretær"
        r["bostedskommune"] = 5001

    assert broken("esp", "forlopskode-start-with-deadline", change) == [
        ("bostedskommune", "type"),
        ("enhetNavn", "required"),
        ("hendelsesdato", "pattern"),
        ("kode", "required"),
        ("kommunaleTjenester", "enum"),
        ("omsorgsniva", "enum"),
        ("registrertAv", "enum"),
        ("registrertTid", "pattern"),
    ]


def test_esp_checks_beyond_the_schema_are_all_reported() -> None:
    def change(r: dict) -> None:
        r["fodselsnummer"] = "15907918573"  # check digits swapped
        r["kode"] = "D11CZ"
        r["hendelsesdato"] = "31.02.2026"
        r["fristForsteSamtale"] = "00.11.2025"
        r["registrertTid"] = "06.10.2025 25:15"

    assert broken("esp", "forlopskode-start-with-deadline", change) == [
        ("fodselsnummer", "national-id-check-digit"),
        ("kode", "known-event-code"),
        ("hendelsesdato", "date-exists"),
        ("fristForsteSamtale", "date-exists"),
        ("registrertTid", "date-exists"),
    ]


def test_esp_unknown_pathway_type() -> None:
    def change(r: dict) -> None:
        r["forlopstype"] = "D20"

    assert broken("esp", "forlopskode-end", change) == [
        ("forlopstype", "known-pathway-type"),
        ("kode", "code-matches-pathway-type"),
    ]


def test_esp_record_type_fields_are_required_and_checked() -> None:
    def time_broken(r: dict) -> None:
        del r["timestatus"]
        r["nyTid"] = "10.11.2025"
        r["opprinneligTid"] = "31.11.2025 13:15"

    assert broken("esp", "time-ikke-mott", time_broken) == [
        ("nyTid", "pattern"),
        ("timestatus", "required"),
        ("opprinneligTid", "date-exists"),
    ]
    assert broken("esp", "samtykke-given", lambda r: r.update(samtykkeKommune=True)) == [
        ("samtykkeKommune", "enum")
    ]
    assert broken("esp", "utskrevet", lambda r: r.pop("oppholdId")) == [("oppholdId", "required")]
    assert broken("esp", "forlopskode-slettet", lambda r: r.pop("arsak")) == [("arsak", "required")]


def test_esp_unknown_record_type_is_one_enum_problem() -> None:
    assert broken("esp", "forlopskode-end", lambda r: r.update(meldingstype="HENVISNING")) == [
        ("meldingstype", "enum")
    ]


# --- whole records --------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["dips", "esp"])
@pytest.mark.parametrize("raw", [[], "text", None, 42])
def test_a_record_that_is_not_an_object(source: str, raw: object) -> None:
    assert [(p.field, p.rule) for p in validate(source, raw)] == [("$", "type")]


def test_an_empty_object_misses_every_envelope_field() -> None:
    assert [p.field for p in validate("dips", {})] == sorted(schema("dips")["required"])
    assert [p.field for p in validate("esp", {})] == sorted(schema("esp")["required"])


def test_parse_vendor_event_raises_with_every_problem() -> None:
    raw = record("esp", "forlopskode-end")
    raw["fodselsnummer"] = "15907918573"
    del raw["registreringsId"]
    with pytest.raises(RejectedEvent) as exc:
        parse_vendor_event("esp", raw)
    assert [(p.field, p.rule) for p in exc.value.problems] == [
        ("registreringsId", "required"),
        ("fodselsnummer", "national-id-check-digit"),
    ]
    assert all(isinstance(p, Problem) and p.message for p in exc.value.problems)


def test_problem_messages_do_not_echo_the_national_id() -> None:
    raw = record("dips", "consent-given")
    raw["patient"]["nationalId"] = "13837033318"
    (problem,) = validate("dips", raw)
    assert "13837033318" not in problem.message
    assert "patient.nationalId" in problem.message and "check digit" in problem.message


def test_unknown_source_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown event source"):
        parse_vendor_event("cosmic", {})


@pytest.mark.parametrize("source", ["dips", "esp"])
def test_every_schema_pattern_has_a_plain_english_message(source: str) -> None:
    from services.ingest.domain.validation import _PATTERN_TEXT

    def patterns(node: object) -> set[str]:
        if isinstance(node, dict):
            return {v for k, v in node.items() if k == "pattern"} | set().union(*map(patterns, node.values()))
        if isinstance(node, list):
            return set().union(*map(patterns, node))
        return set()

    assert patterns(schema(source)) <= set(_PATTERN_TEXT)


@pytest.mark.parametrize("digits", ["٥٠٠١", "５００１", "50²1"])
def test_a_schema_pattern_reads_digits_as_ecma_262_does(digits: str) -> None:
    """JSON Schema patterns are ECMA-262, whose \\d is 0-9 only; Python's \\d also matches other scripts'
    digits. Both the jsonschema validator and the compiled fast path keep to ECMA-262."""
    four = {"type": "string", "pattern": "^\\d{4}$"}
    assert not _EventValidator(four).is_valid(digits) and _EventValidator(four).is_valid("5001")
    compiled = fastjsonschema.compile(_compiled_copy(four))
    compiled("5001")
    with pytest.raises(fastjsonschema.JsonSchemaValueException):
        compiled(digits)
