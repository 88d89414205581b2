"""FHIR mapping: golden files pin the exact output; determinism; every resource valid R4 and conformant."""

from __future__ import annotations

import json
import os
import random
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from forlop.events import PathwayEvent
from forlop.fhir import ids
from forlop.fhir.conformance import check_conformance
from forlop.status import PathwayStatus
from services.pathway.domain.fhir_mapping import map_pathway

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("FORLOP_UPDATE_GOLDEN") == "1"

Scenario = tuple[str, PathwayStatus, list[PathwayEvent]]


def _dump(resources: list[dict[str, Any]]) -> str:
    return json.dumps(resources, ensure_ascii=False, indent=2) + "\n"


def test_golden(scenario: Scenario) -> None:
    name, status, events = scenario
    path = GOLDEN / f"{name}.json"
    actual = _dump(map_pathway(status, events))
    if UPDATE or not path.exists():
        path.write_text(actual, encoding="utf-8")
        if not UPDATE:
            pytest.fail(f"{path.name} did not exist and was written; check it and run again")
    assert actual == path.read_text(encoding="utf-8"), (
        f"{path.name} differs (FORLOP_UPDATE_GOLDEN=1 rewrites)"
    )


def test_deterministic_and_independent_of_event_order(scenario: Scenario) -> None:
    _, status, events = scenario
    first = _dump(map_pathway(status, events))
    assert _dump(map_pathway(status, events)) == first
    shuffled = list(events)
    random.Random(3).shuffle(shuffled)
    assert _dump(map_pathway(status, list(reversed(shuffled)))) == first


def test_every_pathway_resource_conforms(scenario: Scenario) -> None:
    _, status, events = scenario
    for res in map_pathway(status, events):
        if res["resourceType"] in ("EpisodeOfCare", "Task"):
            assert check_conformance(res) == [], res["id"]


def test_one_task_per_milestone_with_stable_ids(scenario: Scenario) -> None:
    _, status, events = scenario
    resources = map_pathway(status, events)
    tasks = [r for r in resources if r["resourceType"] == "Task"]
    assert [t["id"] for t in tasks] == [ids.task_id(status.pathway_key, m.key) for m in status.milestones]
    assert [t["identifier"][0]["value"] for t in tasks] == [
        f"{status.pathway_key}/{m.key}" for m in status.milestones
    ]
    episode = resources[0]
    assert episode["id"] == ids.episode_id(status.pathway_key)
    assert all(t["focus"] == {"reference": f"EpisodeOfCare/{episode['id']}"} for t in tasks)
    assert len({(r["resourceType"], r["id"]) for r in resources}) == len(resources)


def test_task_carries_deadlines_and_extensions(mapped_active: list[dict[str, Any]]) -> None:
    tasks = {
        t["identifier"][0]["value"].rsplit("/", 1)[1]: t for t in mapped_active if t["resourceType"] == "Task"
    }
    first = tasks["first-attendance"]
    assert first["restriction"]["period"] == {"start": "2026-01-12", "end": "2026-02-09"}
    assert first["extension"][0] == {"url": ids.EXT_ADJUSTED_DEADLINE, "valueDate": "2026-02-23"}
    assert ids.EXT_ADJUSTED_DEADLINE.endswith("/StructureDefinition/adjusted-deadline")
    assert first["businessStatus"]["coding"][0]["code"] == "met-adjusted"
    assert first["executionPeriod"] == {"end": "2026-02-16"}
    decision = tasks["decision-basic"]
    assert {
        "url": ids.EXT_DELAY_CAUSE,
        "valueCoding": {"system": ids.CS_DELAY_CAUSE, "code": "service", "display": "Service-caused"},
    } in decision["extension"]
    assert "executionPeriod" not in decision
    assert "businessStatus" not in tasks["end"] and "restriction" not in tasks["end"]


def test_times_come_from_events_not_the_clock(build: dict[str, Any]) -> None:
    status, events = build["active-with-decisions"]()
    tasks = [r for r in map_pathway(status, events) if r["resourceType"] == "Task"]
    by_key = {t["identifier"][0]["value"].rsplit("/", 1)[1]: t for t in tasks}
    first_recorded = min(ev.recorded_at for ev in events)
    assert {datetime.fromisoformat(t["authoredOn"]) for t in tasks} == {first_recorded}
    keyed_late = next(ev for ev in events if ev.code == "D12CU").recorded_at
    assert by_key["decision-basic"]["lastModified"] == "2026-02-23T10:00:00Z"  # keyed three days late, UTC
    assert datetime.fromisoformat(by_key["decision-basic"]["lastModified"]) == keyed_late
    assert datetime.fromisoformat(by_key["end"]["lastModified"]) == first_recorded


def test_patient_unit_and_people(scenario: Scenario) -> None:
    name, status, events = scenario
    resources = map_pathway(status, events)
    latest = max(events, key=lambda ev: (ev.occurred_at, ev.recorded_at, ev.event_id))
    patient = next(r for r in resources if r["resourceType"] == "Patient")
    assert patient["id"] == ids.patient_id(latest.patient.national_id)
    assert patient["identifier"] == [
        {"system": ids.national_id_system(latest.patient.national_id), "value": latest.patient.national_id}
    ]
    assert patient["address"] == [{"use": "home", "district": latest.patient.municipality}]
    org = next(r for r in resources if r["resourceType"] == "Organization")
    assert org["identifier"][0] == {"system": ids.SID_HER_ID, "value": latest.unit.her_id}
    assert resources[0]["managingOrganization"]["reference"] == f"Organization/{org['id']}"
    practitioners = [r for r in resources if r["resourceType"] == "Practitioner"]
    for p in practitioners:
        assert p["identifier"][0]["system"] == ids.SID_HPR
    if name == "active-with-decisions":
        assert patient["identifier"][0]["system"] == ids.SID_DNR
        assert len(practitioners) == 2  # GP and referrer
        referral = resources[0]["contained"][0]
        assert referral["requester"]["reference"].startswith("Practitioner/")
        assert resources[0]["referralRequest"] == [{"reference": "#referral", "display": "Henvisning"}]
    if name == "cancelled-milestone":
        assert len(practitioners) == 1  # the GP referred: one Practitioner
    if name == "finished":
        assert practitioners == [] and "generalPractitioner" not in patient


def test_no_events_is_an_error(build: dict[str, Any]) -> None:
    status, _ = build["finished"]()
    with pytest.raises(ValueError, match="no events"):
        map_pathway(status, [])
