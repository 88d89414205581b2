"""The shipped official FHIR R4 JSON schema is the 4.0.1 one its README says, and it judges what forlop maps."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from pathlib import Path

import pytest

from forlop.fhir.capability import capability_statement
from tests.fhircheck import SCHEMA, assert_valid_r4, model_problems, schema, schema_problems

GOLDEN = Path(__file__).parent / "golden"


def test_the_shipped_schema_is_the_one_its_readme_names():
    readme = (SCHEMA.parent / "README.md").read_text(encoding="utf-8")
    digests = re.findall(r"`([0-9a-f]{64})`", readme)
    assert digests == [hashlib.sha256(gzip.decompress(SCHEMA.read_bytes())).hexdigest(),
                       hashlib.sha256(SCHEMA.read_bytes()).hexdigest()]
    whole = schema()
    assert whole["id"] == "http://hl7.org/fhir/json-schema/4.0" and len(whole["definitions"]) == 680
    defs = whole["definitions"]
    assert defs["CapabilityStatement"]["properties"]["fhirVersion"]["enum"][-1] == "4.0.1"
    assert "valueMeta" in defs["Extension"]["properties"]  # the 4.0.1 technical correction


@pytest.mark.parametrize("path", sorted(GOLDEN.glob("*.json")), ids=lambda p: p.stem)
def test_golden_resources_are_valid_r4_4_0_1(path: Path):
    for res in json.loads(path.read_text(encoding="utf-8")):
        assert_valid_r4(res)


def test_the_capability_statement_is_valid_r4():
    assert_valid_r4(capability_statement("https://fhir.example.no/fhir", "1.0.0"))


@pytest.mark.parametrize(("change", "found", "models_too"), [
    ({"meta": {"lastUpdated": "2026-12-03T21:48:34.982108"}}, "lastUpdated", True),  # an instant needs an offset
    ({"status": "done"}, "status", False),  # fhirclient's models do not check required codes; the schema does
    ({"colour": "blue"}, "colour", True),
    ({"identifier": {"value": "1"}}, "identifier", True),
])
def test_both_checks_catch_what_is_not_r4(change: dict, found: str, models_too: bool):
    org = {"resourceType": "Organization", "id": "o1", "name": "Unit"}
    task = {"resourceType": "Task", "id": "t1", "status": "requested", "intent": "plan"}
    res = {**(task if "status" in change else org), **change}
    bundle = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": res}]}
    for body in (res, bundle):
        problems = schema_problems(body)
        assert problems and any(found in p for p in problems), problems
        assert bool(model_problems(body)) is models_too
