"""check_conformance: produced resources pass, deliberately broken ones fail naming the element."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from forlop.fhir import ids
from forlop.fhir.conformance import check_conformance

Resources = list[dict[str, Any]]


def _first(resources: Resources, rtype: str, key: str | None = None) -> dict[str, Any]:
    for r in resources:
        if r["resourceType"] == rtype and (key is None or r["identifier"][0]["value"].endswith(f"/{key}")):
            return copy.deepcopy(r)
    raise AssertionError(f"no {rtype} {key or ''}")


def _fails(resource: dict[str, Any], element: str) -> list[str]:
    problems = check_conformance(resource)
    assert problems, "expected the broken resource to fail"
    assert any(element in p for p in problems), problems
    return problems


def test_produced_resources_conform(mapped_active: Resources) -> None:
    for r in mapped_active:
        if r["resourceType"] in ("EpisodeOfCare", "Task"):
            assert check_conformance(r) == []


def test_missing_code(mapped_active: Resources) -> None:
    task = _first(mapped_active, "Task", "decision-basic")
    del task["code"]
    assert "Task.code: minimum cardinality 1, found 0" in _fails(task, "Task.code")


def test_wrong_business_status_code(mapped_active: Resources) -> None:
    task = _first(mapped_active, "Task", "decision-basic")
    task["businessStatus"]["coding"][0]["code"] = "nearly-late"
    problems = _fails(task, "Task.businessStatus")
    assert any("nearly-late" in p and ids.VS_DEADLINE_STATUS in p for p in problems)


def test_wrong_milestone_system(mapped_active: Resources) -> None:
    task = _first(mapped_active, "Task", "start")
    task["code"]["coding"][0]["system"] = "http://example.org/milestones"
    _fails(task, "Task.code")


def test_wrong_identifier_system_on_episode(mapped_active: Resources) -> None:
    episode = _first(mapped_active, "EpisodeOfCare")
    episode["identifier"][0]["system"] = "https://forlop.no/fhir/sid/pathway/other"
    problems = _fails(episode, "EpisodeOfCare.identifier[0]")
    assert any("dips, esp" in p for p in problems)


def test_wrong_identifier_system_on_task(mapped_active: Resources) -> None:
    task = _first(mapped_active, "Task", "start")
    task["identifier"][0]["system"] = "urn:example"
    _fails(task, "Task.identifier[0].system")


@pytest.mark.parametrize(
    ("break_it", "element"),
    [
        (lambda t: t.update(intent="order"), "Task.intent"),
        (lambda t: t.pop("owner"), "Task.owner"),
        (lambda t: t.pop("for"), "Task.for"),
        (lambda t: t.update(focus={"reference": "Patient/x"}), "Task.focus"),
        (lambda t: t.pop("identifier"), "Task.identifier"),
        (
            lambda t: (
                t["extension"][0].update(valueDate=None)
                or t["extension"][0].pop("valueDate")
                or t["extension"][0].update(valueString="soon")
            ),
            "Task.extension[0]",
        ),
        (lambda t: t["extension"][1]["valueCoding"].update(code="weather"), "Task.extension[1].valueCoding"),
        (lambda t: t["extension"].append(dict(t["extension"][0])), "Task.extension"),
        (lambda t: t.update(status="on-hold"), "Task.status"),
        (lambda t: t.update(meta={}), "Task.meta.profile"),
    ],
)
def test_broken_tasks(mapped_active: Resources, break_it: Any, element: str) -> None:
    task = _first(mapped_active, "Task", "decision-basic")
    break_it(task)
    _fails(task, element)


@pytest.mark.parametrize(
    ("break_it", "element"),
    [
        (lambda e: e.pop("type"), "EpisodeOfCare.type"),
        (lambda e: e["type"][0]["coding"][0].update(code="D99"), "EpisodeOfCare.type[0]"),
        (lambda e: e.pop("managingOrganization"), "EpisodeOfCare.managingOrganization"),
        (lambda e: e.pop("identifier"), "EpisodeOfCare.identifier"),
        (lambda e: e["identifier"][0].pop("value"), "EpisodeOfCare.identifier[0].value"),
        (
            lambda e: e["identifier"].append({"system": ids.PATHWAY_ID_SYSTEMS["esp"], "value": "x"}),
            "EpisodeOfCare.identifier",
        ),
        (lambda e: e.update(patient={"reference": "Organization/x"}), "EpisodeOfCare.patient"),
        (lambda e: e.update(status="planned"), "EpisodeOfCare.status"),
    ],
)
def test_broken_episodes(mapped_active: Resources, break_it: Any, element: str) -> None:
    episode = _first(mapped_active, "EpisodeOfCare")
    break_it(episode)
    _fails(episode, element)


def test_esp_identifier_matches_its_slice(mapped_active: Resources) -> None:
    episode = _first(mapped_active, "EpisodeOfCare")
    episode["identifier"] = [{"system": ids.PATHWAY_ID_SYSTEMS["esp"], "value": "ESP-1"}]
    assert check_conformance(episode) == []


def test_task_without_deadline_has_no_business_status_and_conforms(mapped_active: Resources) -> None:
    task = _first(mapped_active, "Task", "end")
    assert "businessStatus" not in task
    assert check_conformance(task) == []
