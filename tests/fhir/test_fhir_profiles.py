"""profiles/fhir: valid R4 conformance resources that say what the code does."""

from __future__ import annotations

import importlib
import json
from importlib import resources
from typing import Any

import pytest

from forlop.codes import code_list
from forlop.fhir import ids
from forlop.fhir.conformance import _registry
from forlop.status import DeadlineStatus, DelayCause, MilestoneCode
from profiles.fhir import load_conformance

FILES = sorted(f.name for f in resources.files("profiles.fhir").iterdir() if f.name.endswith(".json"))


def _codes(url: str) -> list[str]:
    return [c["code"] for c in load_conformance()[url]["concept"]]


@pytest.mark.parametrize("name", FILES)
def test_file_is_a_valid_r4_resource(name: str) -> None:
    data = json.loads(resources.files("profiles.fhir").joinpath(name).read_text("utf-8"))
    rtype = data["resourceType"]
    model = getattr(importlib.import_module(f"fhir.resources.R4B.{rtype.lower()}"), rtype)
    model.model_validate(data)
    assert name == f"{rtype}-{data['id']}.json"
    if data["url"] != ids.SYSTEM_PATHWAY_TYPE:
        assert data["url"] == ids.canonical(rtype, data["id"])


def test_loader_holds_every_file_by_url() -> None:
    loaded = load_conformance()
    assert len(loaded) == len(FILES) == 17
    for url in (
        ids.PROFILE_TASK,
        ids.PROFILE_EPISODE_OF_CARE,
        ids.EXT_ADJUSTED_DEADLINE,
        ids.VS_PATHWAY_TYPE,
    ):
        assert url in loaded
    loaded[ids.PROFILE_TASK]["id"] = "mutated"
    assert load_conformance()[ids.PROFILE_TASK]["id"] == "forlop-task"


def test_code_systems_match_the_domain() -> None:
    assert _codes(ids.CS_MILESTONE) == [c.value for c in MilestoneCode]
    assert _codes(ids.CS_DEADLINE_STATUS) == [c.value for c in DeadlineStatus]
    assert _codes(ids.CS_DELAY_CAUSE) == [c.value for c in DelayCause]
    assert _codes(ids.CS_DECISION_OUTCOME) == list(code_list().events["C"]["outcomes"])
    fragment = load_conformance()[ids.SYSTEM_PATHWAY_TYPE]
    assert fragment["content"] == "fragment"
    assert {c["code"]: c["display"] for c in fragment["concept"]} == {
        code: spec["display"] for code, spec in code_list().pathway_types.items()
    }
    for url in (ids.CS_DEADLINE_STATUS, ids.CS_MILESTONE, ids.CS_DELAY_CAUSE):
        assert all(c.get("definition") for c in load_conformance()[url]["concept"])


@pytest.mark.parametrize(
    ("vs", "size"),
    [
        (ids.VS_MILESTONE, 7),
        (ids.VS_DEADLINE_STATUS, 6),
        (ids.VS_DELAY_CAUSE, 3),
        (ids.VS_DECISION_OUTCOME, 7),
        (ids.VS_PATHWAY_TYPE, 3),
        (ids.VS_MILESTONE_STATE, 3),
        (ids.VS_EPISODE_STATUS, 4),
    ],
)
def test_value_sets_expand(vs: str, size: int) -> None:
    assert len(_registry().expand(vs)) == size


def test_status_value_sets_match_the_domain() -> None:
    from forlop.status import EpisodeStatus, MilestoneState

    assert {c for _, c in _registry().expand(ids.VS_MILESTONE_STATE)} == {s.value for s in MilestoneState}
    assert {c for _, c in _registry().expand(ids.VS_EPISODE_STATUS)} == {s.value for s in EpisodeStatus}


def _elements(url: str) -> dict[str, dict[str, Any]]:
    return {e["id"]: e for e in load_conformance()[url]["differential"]["element"]}


def test_task_profile_contract() -> None:
    el = _elements(ids.PROFILE_TASK)
    assert el["Task.code"]["binding"] == {"strength": "required", "valueSet": ids.VS_MILESTONE}
    assert el["Task.code"]["min"] == 1
    assert el["Task.businessStatus"]["binding"] == {
        "strength": "required",
        "valueSet": ids.VS_DEADLINE_STATUS,
    }
    assert el["Task.businessStatus"].get("min", 0) == 0
    assert el["Task.intent"]["fixedCode"] == "plan"
    for path in ("Task.focus", "Task.for", "Task.owner", "Task.identifier"):
        assert el[path]["min"] == 1
    assert el["Task.focus"]["type"][0]["targetProfile"] == [ids.PROFILE_EPISODE_OF_CARE]
    slices = {e["type"][0]["profile"][0] for e in el.values() if e.get("sliceName")}
    assert slices == {ids.EXT_ADJUSTED_DEADLINE, ids.EXT_DELAY_CAUSE, ids.EXT_DECISION_OUTCOME}


def test_episode_profile_contract() -> None:
    el = _elements(ids.PROFILE_EPISODE_OF_CARE)
    assert el["EpisodeOfCare.identifier"]["min"] == 1
    fixed = {el[f"EpisodeOfCare.identifier:{s}.system"]["fixedUri"] for s in ("dips", "esp")}
    assert fixed == set(ids.PATHWAY_ID_SYSTEMS.values())
    assert el["EpisodeOfCare.type"]["binding"]["valueSet"] == ids.VS_PATHWAY_TYPE
    assert el["EpisodeOfCare.type"]["min"] == el["EpisodeOfCare.managingOrganization"]["min"] == 1


def test_extensions() -> None:
    adjusted = _elements(ids.EXT_ADJUSTED_DEADLINE)
    assert adjusted["Extension.url"]["fixedUri"] == ids.EXT_ADJUSTED_DEADLINE
    assert adjusted["Extension.value[x]"]["type"] == [{"code": "date"}]
    cause = _elements(ids.EXT_DELAY_CAUSE)["Extension.value[x]"]
    assert cause["type"] == [{"code": "Coding"}]
    assert cause["binding"] == {"strength": "required", "valueSet": ids.VS_DELAY_CAUSE}
    assert _elements(ids.EXT_DECISION_OUTCOME)["Extension.value[x]"]["type"] == [{"code": "Coding"}]


def test_element_ids_follow_their_paths() -> None:
    for res in load_conformance().values():
        if res["resourceType"] != "StructureDefinition":
            continue
        ids_seen = [e["id"] for e in res["differential"]["element"]]
        assert len(ids_seen) == len(set(ids_seen))
        for e in res["differential"]["element"]:
            assert ".".join(seg.split(":")[0] for seg in e["id"].split(".")) == e["path"]
