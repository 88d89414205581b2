"""The compiled validator (fastjsonschema) agrees with jsonschema, and rejections read as before.

A record the compiled validator accepts is accepted without jsonschema, so it must never
accept what jsonschema rejects; it should not reject what jsonschema accepts either (that
only costs time and a warning). Both are checked on generated events, the contracts'
examples, the golden inputs and hypothesis-driven mutations of them.
"""

from __future__ import annotations

import copy
import json
import logging
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from unittest import mock
from zoneinfo import ZoneInfo

import fastjsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forlop_devtools.synthetic import iter_generate
from services.ingest.domain import validation
from services.ingest.domain.validation import Problem, schema, validate

SOURCES = ("dips", "esp")
AS_OF = datetime(2026, 3, 1, 12, tzinfo=ZoneInfo("Europe/Oslo"))
GOLDEN = Path(__file__).resolve().parent / "golden"


def fast_accepts(source: str, raw: object) -> bool:
    fast = validation._fast_validator(source)
    assert fast is not None
    try:
        fast(raw)
    except fastjsonschema.JsonSchemaValueException:
        return False
    return True


def jsonschema_accepts(source: str, raw: object) -> bool:
    return validation._validator(source).is_valid(raw)


def jsonschema_only(source: str, raw: object) -> list[Problem]:
    """`validate` as it was before the fast path: every record through jsonschema."""
    with mock.patch.object(validation, "_fast_validator", lambda source: None):
        return validate(source, raw)


def assert_agree(source: str, raw: object) -> None:
    assert fast_accepts(source, raw) == jsonschema_accepts(source, raw), raw
    assert validate(source, raw) == jsonschema_only(source, raw), raw


def golden(source: str) -> list[dict]:
    return [json.loads(p.read_text("utf-8")) for p in sorted((GOLDEN / source).glob("*.in.json"))]


# --- the compiled copy ----------------------------------------------------------------------------


@pytest.mark.parametrize("source", SOURCES)
def test_both_schemas_get_a_self_contained_compiled_validator(source: str) -> None:
    assert validation._fast_validator(source) is not None
    text = json.dumps(validation._compiled_copy(schema(source)))
    assert '"$ref"' not in text and '"$id"' not in text  # nothing to resolve, so nothing fetched
    assert validation._validator(source).format_checker is None  # formats are annotations on both sides


@pytest.mark.parametrize(
    "unsupported",
    [
        {"unevaluatedProperties": False},
        {"prefixItems": [{"type": "string"}]},
        {"dependentRequired": {"a": ["b"]}},
        {"additionalProperties": False},  # not (yet) proven to agree: no schema uses it
        {"type": "integer"},  # 1.0 and True are judged differently
        {"properties": {"a": {"enum": [1, "x"]}}},
        {"properties": {"a": {"const": True}}},
        {"properties": {"a": {"$ref": "https://example.org/other.json"}}},
        {"properties": {"a": {"$ref": "#/$defs/missing"}}},
        {"properties": {"a": {"$ref": "#"}}},  # recursive
        {"properties": {"a": {"$id": "https://example.org/a.json", "type": "string"}}},
        {"properties": {"a": {"pattern": "^a$|^b$"}}},
        {"properties": {"a": True}},
        {"if": {"type": "object"}, "else": {"required": ["x"]}},
    ],
)
def test_anything_not_proven_the_same_in_draft_07_gets_no_compiled_copy(unsupported: dict) -> None:
    with pytest.raises(validation._Unsupported):
        validation._compiled_copy({"$schema": "https://json-schema.org/draft/2020-12/schema", **unsupported})


def test_a_ref_with_sibling_keywords_keeps_them_as_in_2020_12() -> None:
    source = {"$defs": {"s": {"type": "string"}}, "properties": {"x": {"$ref": "#/$defs/s", "minLength": 2}}}
    fast = fastjsonschema.compile(validation._compiled_copy(source), use_default=False, use_formats=False)
    fast({"x": "ab"})
    with pytest.raises(fastjsonschema.JsonSchemaValueException):
        fast({"x": "a"})  # draft-07 would ignore minLength beside $ref


@pytest.mark.parametrize("value", ["12345678901", "12345678901\n", "12345678901\n\n", "12345678901 ", "\n12345678901"])
def test_a_final_dollar_ends_the_input_as_in_ecma_262_on_both_paths(value: str) -> None:
    assert (re.search(validation._end_anchored("^[0-9]{11}$"), value) is not None) == (value == "12345678901")
    raw = {**golden("esp")[0], "fodselsnummer": value}
    assert fast_accepts("esp", raw) == jsonschema_accepts("esp", raw)


@pytest.mark.parametrize(("source", "field", "value"), [
    ("dips", ("patient", "nationalId"), "04900298515\n"),
    ("dips", ("eventTime",), "2026-03-02T13:15:00+01:00\n"),
    ("esp", ("fodselsnummer",), "04900298515\n"),
])
def test_a_value_with_a_trailing_newline_is_rejected_by_its_pattern(source: str, field: tuple, value: str) -> None:
    """Python's "$" matched before a final newline: such a national id was stored, such a time crashed a parser."""
    raw = json.loads(json.dumps(golden(source)[0]))
    node = raw
    for part in field[:-1]:
        node = node[part]
    node[field[-1]] = value
    problems = validation.validate(source, raw)
    assert any(p.rule == "pattern" and p.field.endswith(field[-1]) for p in problems), problems


def test_a_disagreement_defers_to_jsonschema_and_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    def rejects_everything(raw: object) -> None:
        raise fastjsonschema.JsonSchemaValueException("no")

    validation._report_disagreement.cache_clear()
    raw = golden("dips")[0]
    with mock.patch.object(validation, "_fast_validator", lambda source: rejects_everything), \
            caplog.at_level(logging.WARNING, logger=validation.__name__):
        assert validate("dips", raw) == [] and validate("dips", raw) == []
    assert [r.getMessage() for r in caplog.records] == [
        "compiled validator rejected a dips record that jsonschema accepts; jsonschema's verdict stands"
    ]
    validation._report_disagreement.cache_clear()


# --- agreement on real records --------------------------------------------------------------------


@pytest.mark.parametrize("source", SOURCES)
def test_agreement_on_every_generated_event(source: str) -> None:
    n = 0
    for raw in iter_generate(source, 250, 11, as_of=AS_OF):
        assert fast_accepts(source, raw), raw
        assert jsonschema_accepts(source, raw), raw
        n += 1
    assert n > 1000


@pytest.mark.parametrize("source", SOURCES)
def test_agreement_on_the_contract_examples_and_golden_inputs(
    source: str, example_records: dict[str, list[dict]]
) -> None:
    for raw in [*example_records[source], *golden(source)]:
        assert_agree(source, raw)


@pytest.mark.parametrize(
    ("source", "field", "value"),
    [
        ("dips", ("eventTime",), "2026-13-45T25:61:00+01:00"),  # matches the pattern, no such date-time
        ("dips", ("eventTime",), "2026-03-02T13:15"),  # no seconds, no offset: the pattern allows it
        ("dips", ("eventTime",), "2026-03-02 13:15:00+01:00"),
        ("dips", ("eventTime",), "2026-03-02T13:15:00+01:00\n"),
        ("dips", ("eventId",), "not-a-uuid"),
        ("dips", ("eventType",), "ppr.document.signed"),
        ("dips", ("eventType",), "consent.changed"),  # the then-branch now wants a consent object
        ("dips", ("patient", "nationalId"), 13837033318),
        ("dips", ("patient", "receivesMunicipalServices"), "true"),
        ("dips", ("unit", "setting"), None),
        ("dips", ("pathway", "id"), ""),
        ("dips", ("vendorExtra",), {"anything": [1, 2]}),  # undeclared properties are allowed
        ("esp", ("registrertTid",), "31.02.2026 25:99"),  # matches the pattern, no such time
        ("esp", ("registrertTid",), "2026-02-01T10:00"),
        ("esp", ("meldingstype",), "TIME"),
        ("esp", ("omsorgsniva",), "p"),
        ("esp", ("kommunaleTjenester",), True),
        ("esp", ("forlopstype",), "D1"),
        ("esp", ("leverandorFelt",), "x"),
    ],
)
def test_agreement_on_chosen_mutations(source: str, field: tuple[str, ...], value: Any) -> None:
    for raw in golden(source):
        raw = copy.deepcopy(raw)
        parent = raw
        for part in field[:-1]:
            parent = parent[part]
        parent[field[-1]] = value
        assert_agree(source, raw)


@pytest.mark.parametrize("raw", [None, [], "{}", 7, True, {}])
@pytest.mark.parametrize("source", SOURCES)
def test_agreement_on_records_that_are_not_records(source: str, raw: object) -> None:
    assert_agree(source, raw)


def test_a_rejected_record_reads_exactly_as_with_jsonschema_alone() -> None:
    raw = copy.deepcopy(golden("dips")[0])
    del raw["eventId"]
    raw["patient"]["nationalId"] = "1383703331"
    raw["unit"]["setting"] = "day"
    raw["pathway"]["type"] = 11
    problems = validate("dips", raw)
    assert problems == jsonschema_only("dips", raw)
    assert {(p.field, p.rule) for p in problems} >= {
        ("eventId", "required"), ("patient.nationalId", "pattern"), ("unit.setting", "enum"), ("pathway.type", "type")
    }
    assert Problem("eventId", "required", "eventId is required") in problems


# --- hypothesis: mutations of valid records -------------------------------------------------------


def _strings_of(node: Any, key: str) -> Iterator[Any]:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                yield from (v if isinstance(v, list) else [v])
            else:
                yield from _strings_of(v, key)
    elif isinstance(node, list):
        for v in node:
            yield from _strings_of(v, key)


PATTERNS = sorted({p for s in SOURCES for p in _strings_of(schema(s), "pattern")})
KNOWN = sorted({v for s in SOURCES for key in ("enum", "const") for v in _strings_of(schema(s), key)})
BASES = {source: [*golden(source), *list(iter_generate(source, 12, 3, as_of=AS_OF))] for source in SOURCES}

near_patterns = st.sampled_from(PATTERNS).flatmap(lambda p: st.from_regex(p, fullmatch=True))
values = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.text(max_size=20),
    st.sampled_from([*KNOWN, "", " ", "\n", "J\n", "D11\n", "2026-02-30", "30.02.2026", "2026-03-02T13:15:00"]),
    near_patterns,
    near_patterns.map(lambda s: s + "\n"),
    near_patterns.map(lambda s: s[:-1]),
    near_patterns.map(lambda s: " " + s),
    st.from_regex(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?(Z|[+-][0-9]{2}:[0-9]{2})?",
                  fullmatch=True),  # date-time shaped, mostly impossible dates: format is not asserted
)


def _paths(node: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every key path into the record, nested objects included."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*prefix, key)
            yield from _paths(value, (*prefix, key))


def _dicts(node: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    if isinstance(node, dict):
        yield prefix
        for key, value in node.items():
            yield from _dicts(value, (*prefix, key))


def _at(raw: dict, path: tuple[str, ...]) -> Any:
    for part in path:
        raw = raw[part]
    return raw


@st.composite
def mutated(draw: st.DrawFn, source: str) -> dict:
    raw = copy.deepcopy(draw(st.sampled_from(BASES[source])))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["drop", "replace", "replace", "add"]))
        if kind == "add":  # an undeclared property, or a declared one where it was missing
            parent = _at(raw, draw(st.sampled_from(list(_dicts(raw)))))
            name = draw(st.one_of(st.text(max_size=8), st.sampled_from(sorted(set(_strings_of(schema(source), "required"))))))
            parent[name] = draw(values)
            continue
        paths = list(_paths(raw))
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = _at(raw, path[:-1])
        if kind == "drop":
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(values)
    return raw


FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(raw=mutated("dips"))
def test_agreement_on_mutated_dips_records(raw: dict) -> None:
    assert_agree("dips", raw)


@FUZZ
@given(raw=mutated("esp"))
def test_agreement_on_mutated_esp_records(raw: dict) -> None:
    assert_agree("esp", raw)
