"""Golden files: each vendor input (``golden/<source>/<case>.in.json``) and the canonical
event it must become (``<case>.out.json``, `PathwayEvent.to_dict()`).

After an intended mapping change, rewrite the expected files with
``FORLOP_UPDATE_GOLDEN=1 .venv/bin/pytest tests/ingest/test_golden_mapping.py`` and
review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from forlop.events import PathwayEvent
from services.ingest.domain.normalise import parse_vendor_event
from services.ingest.domain.validation import schema

GOLDEN = Path(__file__).resolve().parent / "golden"
UPDATE = os.environ.get("FORLOP_UPDATE_GOLDEN") == "1"
CASES = sorted(GOLDEN.glob("*/*.in.json"))


def _case_id(path: Path) -> str:
    return f"{path.parent.name}/{path.name.removesuffix('.in.json')}"


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_vendor_record_maps_to_the_golden_canonical_event(case: Path) -> None:
    source = case.parent.name
    event = parse_vendor_event(source, json.loads(case.read_text("utf-8")))
    actual = event.to_dict()
    expected_file = case.with_name(case.name.replace(".in.json", ".out.json"))
    if UPDATE:
        expected_file.write_text(json.dumps(actual, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    assert expected_file.exists(), f"no golden file {expected_file.name}; run with FORLOP_UPDATE_GOLDEN=1"
    expected = json.loads(expected_file.read_text("utf-8"))
    assert actual == expected
    assert PathwayEvent.from_dict(expected) == event  # the golden file is a faithful canonical event


def _inputs(source: str) -> list[dict]:
    return [json.loads(p.read_text("utf-8")) for p in CASES if p.parent.name == source]


def test_every_dips_event_type_and_appointment_status_has_a_golden_case() -> None:
    records = _inputs("dips")
    assert {r["eventType"] for r in records} == set(schema("dips")["properties"]["eventType"]["enum"])
    statuses = {r["appointment"]["status"] for r in records if "appointment" in r}
    assert statuses == set(schema("dips")["$defs"]["appointment"]["properties"]["status"]["enum"])


def test_every_esp_record_type_and_time_status_has_a_golden_case() -> None:
    records = _inputs("esp")
    assert {r["meldingstype"] for r in records} == set(schema("esp")["properties"]["meldingstype"]["enum"])
    assert {r["timestatus"] for r in records if r["meldingstype"] == "TIME"} == {
        "IKKE_MOTT", "AVLYST_PASIENT", "AVLYST_SYKEHUS"
    }


def test_no_golden_output_without_its_input() -> None:
    outputs = {p.name.removesuffix(".out.json") for p in GOLDEN.glob("*/*.out.json")}
    inputs = {p.name.removesuffix(".in.json") for p in CASES}
    assert outputs <= inputs


@pytest.mark.parametrize(("source", "field"), [("dips", ("admission", "dischargeDestination")),
                                               ("esp", ("utskrevetTil",))])
def test_every_discharge_destination_has_a_canonical_value(source: str, field: tuple[str, ...]) -> None:
    """Each vendor's destination values map one to one onto the canonical ones; absent is not stated."""
    from forlop.events import DischargeDestination

    spec = schema(source)
    values = (spec["$defs"]["admission"]["properties"] if source == "dips" else spec["properties"])[field[-1]]["enum"]
    record = json.loads(next(p for p in CASES if p.parent.name == source and
                             ("admission-ended" in p.name or p.name == "utskrevet.in.json")).read_text("utf-8"))
    mapped = set()
    for value in values:
        target = record["admission"] if source == "dips" else record
        target[field[-1]] = value
        mapped.add(parse_vendor_event(source, record).discharge_destination)
    assert mapped == set(DischargeDestination)
    del target[field[-1]]
    assert parse_vendor_event(source, record).discharge_destination is None
